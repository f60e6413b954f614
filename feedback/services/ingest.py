"""Predict and route: accept a model service's uncertain predictions, all or nothing."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from feedback.db.engine import Database
from feedback.db.models import Item, Project
from feedback.domain import routing, uncertainty
from feedback.domain.errors import FieldError, InvalidInput
from feedback.schemas import FeaturesInput, ItemResult, PredictionIn, TextInput
from feedback.services.projects import visible_project
from feedback.services.users import Principal

SUM_TOLERANCE = 1e-3
AUDIT_PRIORITY = 1.0  # audit items are labelled first: the holdout must not wait behind the queue
_prediction = TypeAdapter(PredictionIn)
_rng = random.SystemRandom()


@dataclass(frozen=True)
class Accepted:
    """A validated prediction, its input normalised to the project's form."""

    external_id: str
    input: dict[str, Any]
    probabilities: list[float]
    model_version: str | None
    display: dict[str, Any] | None


def submit_predictions(
    db: Database, principal: Principal, slug: str, raw: Sequence[Any]
) -> list[ItemResult]:
    """Validate every prediction, then store and route them in one transaction.

    Raises:
        NotFound: no such project, or the caller may not see it.
        InvalidInput: any item is invalid; `details` names each one; nothing is stored.
    """
    for attempt in range(3):
        try:
            with db.transaction() as session:
                project = visible_project(session, principal, slug)
                accepted = validate_predictions(project, raw)
                return store_predictions(session, project, accepted)
        except IntegrityError:  # a concurrent request inserted one of these ids first
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def validate_predictions(project: Project, raw: Sequence[Any]) -> list[Accepted]:
    """Check shape and project rules for every item; raise listing all problems."""
    accepted, problems = [], []
    for index, item in enumerate(raw):
        try:
            parsed = _prediction.validate_python(item)
        except ValidationError as error:
            problems.extend(_pydantic_problems(error, index))
            continue
        item_problems, normalised = _project_problems(project, parsed, index)
        problems.extend(item_problems)
        if normalised is not None and not item_problems:
            accepted.append(normalised)
    if problems:
        raise InvalidInput(
            f"{len({p.index for p in problems})} of {len(raw)} items are not valid", problems
        )
    return accepted


def _pydantic_problems(error: ValidationError, index: int) -> list[FieldError]:
    return [
        FieldError(
            field=".".join(str(part) for part in e["loc"]) or "item", message=e["msg"], index=index
        )
        for e in error.errors()
    ]


def _project_problems(
    project: Project, item: PredictionIn, index: int
) -> tuple[list[FieldError], Accepted | None]:
    problems = [
        FieldError(f, m, index) for f, m in probability_problems(project.labels, item.probabilities)
    ]
    normalised_input, input_problem = normalise_input(project, item.input)
    if input_problem:
        problems.append(FieldError("input", input_problem, index))
    if problems or normalised_input is None:
        return problems, None
    probabilities = [float(item.probabilities[label]) for label in project.labels]
    return [], Accepted(
        item.external_id, normalised_input, probabilities, item.model_version, item.display
    )


def probability_problems(
    labels: Sequence[str], probabilities: dict[str, float]
) -> list[tuple[str, str]]:
    """Check probabilities name exactly the labels, are finite, in [0, 1] and sum to 1."""
    if set(probabilities) != set(labels):
        missing, extra = (
            sorted(set(labels) - set(probabilities)),
            sorted(set(probabilities) - set(labels)),
        )
        return [
            (
                "probabilities",
                f"must name exactly the project's labels (missing {missing}, unknown {extra})",
            )
        ]
    values = list(probabilities.values())
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
        return [("probabilities", "every probability must be a finite number in [0, 1]")]
    if abs(sum(values) - 1.0) > SUM_TOLERANCE:
        return [("probabilities", f"must sum to 1 (within {SUM_TOLERANCE}), not {sum(values):.6f}")]
    return []


def normalise_input(
    project: Project, given: TextInput | FeaturesInput
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
            return None, f"features must be exactly {names[:10]}{'...' if len(names) > 10 else ''}"
        values = [values[name] for name in names]
    if len(values) != len(names):
        return None, f"expected {len(names)} features, got {len(values)}"
    if not all(math.isfinite(v) for v in values):
        return None, "features must be finite numbers"
    return {"features": [float(v) for v in values]}, ""


def store_predictions(
    session: Session, project: Project, accepted: Sequence[Accepted]
) -> list[ItemResult]:
    """Insert new items with their route; report existing external ids as duplicates."""
    existing = _existing(session, project.id, [a.external_id for a in accepted])
    fresh: dict[str, Accepted] = {}
    for item in accepted:
        if item.external_id not in existing:
            fresh.setdefault(item.external_id, item)
    rows = _routed_rows(project, list(fresh.values()))
    if rows:
        returned = (
            session.execute(insert(Item).returning(Item.id, sort_by_parameter_order=True), rows)
            .scalars()
            .all()
        )
        for row, item_id in zip(rows, returned, strict=True):
            row["id"] = item_id
    known = {**existing, **{row["external_id"]: row for row in rows}}
    seen: set[str] = set(existing)
    results = []
    for item in accepted:  # request order; a repeat within one request is a duplicate too
        row = known[item.external_id]
        results.append(
            ItemResult(
                external_id=item.external_id,
                id=row["id"],
                route=row["route"],
                uncertainty=row["uncertainty"],
                status=row["status"],
                duplicate=item.external_id in seen,
            )
        )
        seen.add(item.external_id)
    return results


def _existing(
    session: Session, project_id: int, external_ids: list[str]
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(external_ids), 500):
        chunk = external_ids[start : start + 500]
        rows = session.execute(
            select(Item.id, Item.external_id, Item.route, Item.uncertainty, Item.status).where(
                Item.project_id == project_id, Item.external_id.in_(chunk)
            )
        )
        found.update({r.external_id: r._asdict() for r in rows})
    return found


def _routed_rows(project: Project, items: list[Accepted]) -> list[dict[str, Any]]:
    if not items:
        return []
    scores = uncertainty.score(project.strategy, np.array([i.probabilities for i in items]))
    rows = []
    for item, score in zip(items, scores, strict=True):
        route = routing.route(float(score), project.threshold, project.audit_rate, _rng.random())
        rows.append(
            {
                "project_id": project.id,
                "external_id": item.external_id,
                "input": item.input,
                "display": item.display,
                "model_version": item.model_version,
                "probabilities": dict(zip(project.labels, item.probabilities, strict=True)),
                "uncertainty": float(score),
                "route": route.value,
                "priority": AUDIT_PRIORITY if route is routing.Route.AUDIT else float(score),
                "status": "auto" if route is routing.Route.AUTO else "queued",
                "is_holdout": route is routing.Route.AUDIT,
                "fence": 0,
            }
        )
    return rows
