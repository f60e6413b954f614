"""Predict and route: accept a model service's uncertain predictions, all or nothing."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel
from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.exc import IntegrityError

from feedback.db.engine import Database
from feedback.db.models import Item, Project
from feedback.domain import routing, uncertainty
from feedback.domain.errors import DomainError
from feedback.schemas import ItemResult, PredictionsOut
from feedback.services import idempotency
from feedback.services.item_rows import existing_items, insert_items
from feedback.services.prediction_checks import Accepted, validate_predictions
from feedback.services.project_rules import ProjectRules, visible_rules
from feedback.services.users import Principal

AUDIT_PRIORITY = 1.0  # audit items are labelled first: the holdout must not wait behind the queue
QUEUE_FULL_RETRY_SECONDS = 60
_RESULT_KEYS = ("external_id", "id", "route", "uncertainty", "status", "deferred")
Answer = TypeVar("Answer", bound=BaseModel)
Row = dict[str, Any]
_QUEUED = select(func.count(Item.id)).where(
    Item.project_id == bindparam("project_id"), Item.status == "queued"
)
_LOCK_PROJECT = select(Project.id).where(Project.id == bindparam("project_id")).with_for_update()


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
    prepared: dict[ProjectRules, tuple[list[Accepted], list[Row]]] = {}
    if db.dialect == "sqlite":  # validate and route before taking the database's write lock
        with db.read_statements() as connection:
            project = visible_rules(connection, principal, slug)
        prepared[project] = _prepare(project, raw)
    # PostgreSQL locks rows, not the database: its write transaction validates (below), which
    # saves a connection checkout and its round trips.

    def store(connection: Connection, project: ProjectRules) -> PredictionsOut:
        if project not in prepared:  # its rules changed meanwhile
            prepared[project] = _prepare(project, raw)
        accepted, rows = prepared[project]
        return store_routed(connection, project, accepted, [dict(row) for row in rows])

    return write_once(db, principal, slug, claim, store)


def _prepare(project: ProjectRules, raw: Sequence[Any]) -> tuple[list[Accepted], list[Row]]:
    accepted = validate_predictions(project, raw)
    return accepted, _routed_rows(project, _first_of_each(accepted))


def write_once(
    db: Database,
    principal: Principal,
    slug: str,
    claim: idempotency.Claim | None,
    store: Callable[[Connection, ProjectRules], Answer],
) -> Answer:
    """Run `store` in one write transaction with the answer recorded for `claim`.

    A concurrent request may insert one of the same external ids first; the unique index
    then skips ours and the answer reports them as duplicates. Should such an item be gone
    again before we read it, the whole transaction runs again.
    """
    for attempt in range(3):
        try:
            with db.begin() as connection:
                result = store(connection, visible_rules(connection, principal, slug))
                if claim is not None:
                    idempotency.complete(connection, claim, result.model_dump(mode="json"))
                return result
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def store_predictions(
    connection: Connection, project: ProjectRules, accepted: Sequence[Accepted]
) -> PredictionsOut:
    """Route and insert new items; report existing external ids as duplicates."""
    rows = _routed_rows(project, _first_of_each(accepted))
    return store_routed(connection, project, accepted, rows)


def store_routed(
    connection: Connection, project: ProjectRules, accepted: Sequence[Accepted], rows: list[Row]
) -> PredictionsOut:
    """Insert the routed rows new to the project; report existing external ids as duplicates.

    Without a queue cap the rows go straight to the unique index, which skips the known ones
    (one statement for a batch of new items); a cap counts new review items, so it looks the
    known ones up first.
    """
    existing: dict[str, Row] = {}
    if project.max_queue is not None:
        existing = existing_items(connection, project.id, [row["external_id"] for row in rows])
        rows = [row for row in rows if row["external_id"] not in existing]
    deferred = _cap_queue(connection, project, rows)
    taken = insert_items(connection, rows)
    if taken:  # stored before us: report what is stored
        existing.update(_stored(connection, project.id, taken))
        rows = [row for row in rows if row["external_id"] not in existing]
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


def _stored(connection: Connection, project_id: int, external_ids: list[str]) -> dict[str, Row]:
    found = existing_items(connection, project_id, external_ids)
    if len(found) < len(external_ids):  # inserted by another request, and gone again
        raise IntegrityError("items of these external ids", None, LookupError(external_ids))
    return found


def _first_of_each(accepted: Sequence[Accepted]) -> list[Accepted]:
    """The first item of each external id, in request order."""
    first: dict[str, Accepted] = {}
    for item in accepted:
        first.setdefault(item.external_id, item)
    return list(first.values())


def _routed_rows(project: ProjectRules, items: list[Accepted]) -> list[Row]:
    if not items:
        return []
    scores = uncertainty.score(project.strategy, np.array([i.probabilities for i in items]))
    threshold, audit_rate, labels = project.threshold, project.audit_rate, project.labels
    draws = [random.random() for _ in items]  # `random` reseeds itself in a forked child
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


def _cap_queue(connection: Connection, project: ProjectRules, rows: list[Row]) -> int:
    """Keep the review queue within `max_queue`: reject the batch, or defer what overflows.

    Audit items are never capped: the holdout must not starve. Deferral keeps the most
    uncertain new items in the queue and records the rest as auto with `deferred` set.
    """
    review = [row for row in rows if row["route"] == "review"]
    if project.max_queue is None or not review:
        return 0
    if connection.dialect.name == "postgresql":  # one capped ingest at a time
        connection.execute(_LOCK_PROJECT, {"project_id": project.id})
    queued = connection.scalar(_QUEUED, {"project_id": project.id})
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
