"""Predict with the champion and route the results like any posted prediction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from feedback.db.engine import Database
from feedback.db.models import ModelVersion
from feedback.domain.errors import FieldError, InvalidInput, Unavailable
from feedback.schemas import PredictInputIn
from feedback.services.ingest import Accepted, normalise_input, store_predictions
from feedback.services.models import predict_probabilities
from feedback.services.projects import visible_project
from feedback.services.users import Principal

_inputs = TypeAdapter(PredictInputIn)


def predict_and_route(
    db: Database, principal: Principal, slug: str, raw: Sequence[Any]
) -> dict[str, Any]:
    """Predict every input with the champion, store and route them; all or nothing.

    Raises:
        Unavailable: the project has no champion yet.
        InvalidInput: any input is invalid (each one named).
    """
    with db.transaction() as session:
        project = visible_project(session, principal, slug)
        version = session.get(ModelVersion, project.champion_id) if project.champion_id else None
        if version is None:
            raise Unavailable(
                f"project '{slug}' has no champion model yet; add seed data and retrain"
            )
        parsed = _validate(project, raw)
        probabilities = predict_probabilities(version, project, [p[1] for p in parsed])
        accepted = [
            Accepted(
                p[0].external_id, p[1], [float(x) for x in row], str(version.version), p[0].display
            )
            for p, row in zip(parsed, probabilities, strict=True)
        ]
        results = store_predictions(session, project, accepted)
    items = [
        {
            **r.model_dump(),
            "label": project.labels[int(row.argmax())],
            "probabilities": dict(zip(project.labels, map(float, row), strict=True)),
        }
        for r, row in zip(results, probabilities, strict=True)
    ]
    return {"model_version": version.version, "items": items}


def _validate(project: Any, raw: Sequence[Any]) -> list[tuple[PredictInputIn, dict[str, Any]]]:
    parsed: list[tuple[PredictInputIn, dict[str, Any]]] = []
    problems: list[FieldError] = []
    for index, item in enumerate(raw):
        try:
            value = _inputs.validate_python(item)
        except ValidationError as error:
            problems.extend(
                FieldError(".".join(map(str, e["loc"])) or "item", e["msg"], index)
                for e in error.errors()
            )
            continue
        normalised, problem = normalise_input(project, value.input)
        if normalised is None:
            problems.append(FieldError("input", problem, index))
        else:
            parsed.append((value, normalised))
    if problems:
        raise InvalidInput(
            f"{len({p.index for p in problems})} of {len(raw)} items are not valid", problems
        )
    return parsed
