"""Predict with the champion and route the results like any posted prediction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Connection

from feedback.db.engine import Database
from feedback.db.models import ModelVersion, Project
from feedback.domain.errors import FieldError, InvalidInput, Unavailable
from feedback.schemas import PredictedItem, PredictInputIn, PredictOut
from feedback.services import idempotency
from feedback.services.ingest import store_predictions, write_once
from feedback.services.models import predict_probabilities
from feedback.services.prediction_checks import Accepted, normalise_input, pydantic_problems
from feedback.services.project_rules import ProjectRules
from feedback.services.projects import visible_project
from feedback.services.users import Principal

_inputs = TypeAdapter(PredictInputIn)


def predict_and_route(
    db: Database,
    principal: Principal,
    slug: str,
    raw: Sequence[Any],
    claim: idempotency.Claim | None = None,
) -> PredictOut:
    """Predict every input with the champion, store and route them; all or nothing.

    The model runs before the write transaction opens, so predicting never holds the
    database's write lock.

    Raises:
        Unavailable: the project has no champion yet.
        InvalidInput: any input is invalid (each one named).
    """
    with db.read() as session:
        project = visible_project(session, principal, slug)
        version = session.get(ModelVersion, project.champion_id) if project.champion_id else None
    if version is None:
        raise Unavailable(f"project '{slug}' has no champion model yet; add seed data and retrain")
    parsed = _validate(project, raw)
    probabilities = predict_probabilities(version, project, [p[1] for p in parsed])
    accepted = [
        Accepted(
            p[0].external_id, p[1], [float(x) for x in row], str(version.version), p[0].display
        )
        for p, row in zip(parsed, probabilities, strict=True)
    ]

    def store(connection: Connection, project: ProjectRules) -> PredictOut:
        stored = store_predictions(connection, project, accepted).model_dump()
        return _answer(project, version, stored, probabilities.tolist())

    return write_once(db, principal, slug, claim, store)


def _answer(
    project: ProjectRules, version: ModelVersion, stored: dict[str, Any], rows: list[list[float]]
) -> PredictOut:
    items = [
        PredictedItem(
            **result,
            label=project.labels[max(range(len(row)), key=row.__getitem__)],
            probabilities=dict(zip(project.labels, row, strict=True)),
        )
        for result, row in zip(stored["items"], rows, strict=True)
    ]
    return PredictOut(
        model_version=version.version,
        items=items,
        deferred=stored["deferred"],
        queue_full=stored["queue_full"],
    )


def _validate(project: Project, raw: Sequence[Any]) -> list[tuple[PredictInputIn, dict[str, Any]]]:
    parsed: list[tuple[PredictInputIn, dict[str, Any]]] = []
    problems: list[FieldError] = []
    for index, item in enumerate(raw):
        try:
            value = _inputs.validate_python(item)
        except ValidationError as error:
            problems.extend(pydantic_problems(error, index))
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
