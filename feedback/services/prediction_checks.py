"""Check posted predictions against the API shape and the project's rules, all at once."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
from pydantic import TypeAdapter, ValidationError

from feedback.domain.errors import FieldError, InvalidInput
from feedback.schemas import FeaturesInput, PredictionIn, TextInput

SUM_TOLERANCE = 1e-3
_prediction = TypeAdapter(PredictionIn)
_predictions = TypeAdapter(list[PredictionIn])


class InputRules(Protocol):
    """What a prediction is checked against: a project, or its `ProjectRules`."""

    @property
    def labels(self) -> Sequence[Any]: ...
    @property
    def input_kind(self) -> str: ...
    @property
    def features(self) -> Sequence[Any] | None: ...


class Accepted(NamedTuple):  # a tuple: thousands are built per batch, on the hot path
    """A validated prediction, its input normalised to the project's form."""

    external_id: str
    input: dict[str, Any]
    probabilities: list[float]
    model_version: str | None
    display: dict[str, Any] | None


def validate_predictions(project: InputRules, raw: Sequence[Any]) -> list[Accepted]:
    """Check shape and project rules for every item; raise listing all problems."""
    try:
        parsed: list[PredictionIn | None] = list(_predictions.validate_python(raw))
        problems: list[FieldError] = []
    except ValidationError:  # the slow path, only for bad batches: name every problem
        parsed, problems = _parse_each(raw)
    probabilities = _checked_probabilities(project.labels, parsed, problems)
    accepted = []
    for index, item in enumerate(parsed):
        if item is None or index not in probabilities:
            continue
        normalised, input_problem = normalise_input(project, item.input)
        if normalised is None:
            problems.append(FieldError("input", input_problem, index))
        else:
            accepted.append(
                Accepted(
                    item.external_id,
                    normalised,
                    probabilities[index],
                    item.model_version,
                    item.display,
                )
            )
    if problems:
        bad = len({p.index for p in problems})
        raise InvalidInput(f"{bad} of {len(raw)} items are not valid", problems)
    return accepted


def _checked_probabilities(
    labels: Sequence[str], parsed: Sequence[PredictionIn | None], problems: list[FieldError]
) -> dict[int, list[float]]:
    """Probabilities in label order by item index, checked for the batch at once."""
    wanted = set(labels)
    rows: dict[int, list[float]] = {}
    for index, item in enumerate(parsed):
        if item is None:
            continue
        if item.probabilities.keys() != wanted:
            problems.extend(_probability_errors(labels, item, index))
            continue
        rows[index] = [item.probabilities[label] for label in labels]
    if not rows:
        return rows
    indexes = list(rows)
    matrix = np.array(list(rows.values()), dtype=np.float64)
    in_range = ((matrix >= 0.0) & (matrix <= 1.0)).all(axis=1)  # NaN fails both
    summing = np.abs(matrix.sum(axis=1) - 1.0) <= SUM_TOLERANCE
    for position in np.flatnonzero(~(in_range & summing)).tolist():
        index = indexes[position]
        problems.extend(_probability_errors(labels, parsed[index], index))
        del rows[index]
    return rows


def _probability_errors(
    labels: Sequence[str], item: PredictionIn | None, index: int
) -> list[FieldError]:
    assert item is not None
    return [FieldError(f, m, index) for f, m in probability_problems(labels, item.probabilities)]


def _parse_each(raw: Sequence[Any]) -> tuple[list[PredictionIn | None], list[FieldError]]:
    parsed: list[PredictionIn | None] = []
    problems: list[FieldError] = []
    for index, item in enumerate(raw):
        try:
            parsed.append(_prediction.validate_python(item))
        except ValidationError as error:
            parsed.append(None)
            problems.extend(pydantic_problems(error, index))
    return parsed, problems


def pydantic_problems(error: ValidationError, index: int | None) -> list[FieldError]:
    """Turn pydantic's errors into field errors, `a.b.c` paths, for one item."""
    return [
        FieldError(".".join(str(part) for part in e["loc"]) or "item", e["msg"], index)
        for e in error.errors()
    ]


def probability_problems(
    labels: Sequence[str], probabilities: dict[str, float]
) -> list[tuple[str, str]]:
    """Check probabilities name exactly the labels, are finite, in [0, 1] and sum to 1."""
    if len(probabilities) != len(labels) or not all(label in probabilities for label in labels):
        missing = sorted(set(labels) - set(probabilities))
        extra = sorted(set(probabilities) - set(labels))
        return [
            (
                "probabilities",
                f"must name exactly the project's labels (missing {missing}, unknown {extra})",
            )
        ]
    values = probabilities.values()
    if not all(0.0 <= v <= 1.0 for v in values):  # NaN fails both comparisons
        return [("probabilities", "every probability must be a finite number in [0, 1]")]
    total = math.fsum(values)
    if abs(total - 1.0) > SUM_TOLERANCE:
        return [("probabilities", f"must sum to 1 (within {SUM_TOLERANCE}), not {total:.6f}")]
    return []


def normalise_input(
    project: InputRules, given: TextInput | FeaturesInput
) -> tuple[dict[str, Any] | None, str]:
    """Return the input in stored form (text, or features in declared order), or a problem."""
    if project.input_kind == "text":
        if not isinstance(given, TextInput):
            return None, "this project takes {'text': ...}"
        return {"text": given.text}, ""
    if not isinstance(given, FeaturesInput):
        return None, "this project takes {'features': ...}"
    names = project.features or []
    values = given.features
    if isinstance(values, dict):
        if set(values) != set(names):
            return (
                None,
                f"features must be exactly {list(names[:10])}{'...' if len(names) > 10 else ''}",
            )
        values = [values[name] for name in names]
    if len(values) != len(names):
        return None, f"expected {len(names)} features, got {len(values)}"
    if not all(math.isfinite(v) for v in values):
        return None, "features must be finite numbers"
    return {"features": [float(v) for v in values]}, ""
