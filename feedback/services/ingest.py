"""Predict and route: accept a model service's uncertain predictions, all or nothing."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from feedback.db.engine import Database
from feedback.db.models import Item, Project
from feedback.domain import routing, uncertainty
from feedback.domain.errors import DomainError
from feedback.schemas import ItemResult, PredictionsOut
from feedback.services import idempotency
from feedback.services.item_rows import existing_items, insert_items
from feedback.services.prediction_checks import Accepted, validate_predictions
from feedback.services.projects import visible_project
from feedback.services.users import Principal

AUDIT_PRIORITY = 1.0  # audit items are labelled first: the holdout must not wait behind the queue
QUEUE_FULL_RETRY_SECONDS = 60
_RESULT_KEYS = ("external_id", "id", "route", "uncertainty", "status", "deferred")
Answer = TypeVar("Answer", bound=BaseModel)


class QueueFull(DomainError):
    """The review queue is at `max_queue` and the project's policy is to reject."""

    code = "queue_full"
    retry_after = QUEUE_FULL_RETRY_SECONDS


def submit_predictions(
    db: Database, principal: Principal, slug: str, raw: Sequence[Any]
) -> list[ItemResult]:
    """Validate every prediction, then store and route them in one transaction."""
    return submit_batch(db, principal, slug, raw).items


def submit_batch(
    db: Database,
    principal: Principal,
    slug: str,
    raw: Sequence[Any],
    claim: idempotency.Claim | None = None,
) -> PredictionsOut:
    """Validate every prediction, then store and route them in one transaction.

    Args:
        claim: an idempotency claim; the answer is recorded in the same transaction.

    Raises:
        NotFound: no such project, or the caller may not see it.
        InvalidInput: any item is invalid; `details` names each one; nothing is stored.
        QueueFull: new review items do not fit and the project rejects; nothing is stored.
    """
    with db.read() as session:  # validate before taking the write lock
        project = visible_project(session, principal, slug)
    checked = {_shape(project): validate_predictions(project, raw)}

    def store(session: Session, project: Project) -> PredictionsOut:
        if _shape(project) not in checked:  # its labels or inputs changed meanwhile
            checked[_shape(project)] = validate_predictions(project, raw)
        return store_predictions(session, project, checked[_shape(project)])

    return write_once(db, principal, slug, claim, store)


def write_once(
    db: Database,
    principal: Principal,
    slug: str,
    claim: idempotency.Claim | None,
    store: Callable[[Session, Project], Answer],
) -> Answer:
    """Run `store` in one write transaction with the answer recorded for `claim`.

    A concurrent request may insert one of the same external ids first; the unique index
    then refuses ours, and running again reports those items as duplicates.
    """
    for attempt in range(3):
        try:
            with db.transaction() as session:
                result = store(session, visible_project(session, principal, slug))
                idempotency.complete(session, claim, result.model_dump(mode="json"))
                return result
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _shape(project: Project) -> str:
    return json.dumps([project.id, project.labels, project.input_kind, project.features])


def store_predictions(
    session: Session, project: Project, accepted: Sequence[Accepted]
) -> PredictionsOut:
    """Insert new items with their route; report existing external ids as duplicates."""
    existing = existing_items(session, project.id, [a.external_id for a in accepted])
    fresh: dict[str, Accepted] = {}
    for item in accepted:
        if item.external_id not in existing:
            fresh.setdefault(item.external_id, item)
    rows = _routed_rows(project, list(fresh.values()))
    deferred = _cap_queue(session, project, rows)
    if rows:
        insert_items(session, rows)
    known = {**existing, **{row["external_id"]: row for row in rows}}
    seen: set[str] = set(existing)
    results = []
    for item in accepted:  # request order; a repeat within one request is a duplicate too
        row = known[item.external_id]
        results.append({key: row[key] for key in _RESULT_KEYS})
        results[-1]["duplicate"] = item.external_id in seen
        seen.add(item.external_id)
    policy = "defer" if project.queue_full == "defer" else "reject"
    return PredictionsOut.model_validate(  # validating in pydantic-core beats constructing
        {"items": results, "deferred": deferred, "queue_full": policy}
    )


def _routed_rows(project: Project, items: list[Accepted]) -> list[dict[str, Any]]:
    if not items:
        return []
    scores = uncertainty.score(project.strategy, np.array([i.probabilities for i in items]))
    threshold, audit_rate, labels = project.threshold, project.audit_rate, project.labels
    draws = np.random.default_rng().random(len(items)).tolist()  # fresh OS entropy: fork-safe
    rows = []
    for item, score, draw in zip(items, scores.tolist(), draws, strict=True):
        route = routing.route(score, threshold, audit_rate, draw)
        rows.append(
            {
                "project_id": project.id,
                "external_id": item.external_id,
                "input": item.input,
                "display": item.display,
                "model_version": item.model_version,
                "probabilities": dict(zip(labels, item.probabilities, strict=True)),
                "uncertainty": score,
                "route": route.value,
                "priority": AUDIT_PRIORITY if route is routing.Route.AUDIT else score,
                "status": "auto" if route is routing.Route.AUTO else "queued",
                "is_holdout": route is routing.Route.AUDIT,
                "deferred": False,
            }
        )
    return rows


def _cap_queue(session: Session, project: Project, rows: list[dict[str, Any]]) -> int:
    """Keep the review queue within `max_queue`: reject the batch, or defer what overflows.

    Audit items are never capped: the holdout must not starve. Deferral keeps the most
    uncertain new items in the queue and records the rest as auto with `deferred` set.
    """
    review = [row for row in rows if row["route"] == "review"]
    if project.max_queue is None or not review:
        return 0
    if session.get_bind().dialect.name == "postgresql":  # one capped ingest at a time
        session.execute(select(Project.id).where(Project.id == project.id).with_for_update())
    queued = session.scalar(
        select(func.count(Item.id)).where(Item.project_id == project.id, Item.status == "queued")
    )
    room = max(0, project.max_queue - (queued or 0))
    if len(review) <= room:
        return 0
    if project.queue_full != "defer":
        raise QueueFull(
            f"the review queue holds {queued} of at most {project.max_queue} items and "
            f"{len(review)} new review items do not fit; the project rejects (queue_full="
            f"'reject'), retry later"
        )
    review.sort(key=lambda row: row["uncertainty"], reverse=True)
    for row in review[room:]:
        row.update(route="auto", status="auto", deferred=True)
    return len(review) - room
