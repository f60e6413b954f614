"""The review queue: claim the most useful item under a lease, vote with its fence."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import Session

from feedback.db.clock import utcnow
from feedback.db.engine import Database
from feedback.db.models import Decision, Item, Lease, OutboxMessage, Project, Vote
from feedback.domain.consensus import UNSURE, Outcome, majority
from feedback.domain.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from feedback.services.projects import visible_project
from feedback.services.users import Principal

SKIP_HIDE_SECONDS = 600
STALE_LEASE = "your lease on this item has expired or been taken over; the item was not changed"


@dataclass(frozen=True)
class Claim:
    """An item leased to one labeler, with what the page needs to show it."""

    item_id: int
    project_slug: str
    input: dict[str, Any]
    display: dict[str, Any] | None
    prediction: dict[str, Any] | None
    fence: int
    expires_at: datetime


def claim_next(db: Database, principal: Principal, slug: str, lease_seconds: int) -> Claim | None:
    """Lease the most useful item this labeler may take, or return the one they already hold."""
    _require_labeler(principal)
    with db.transaction() as session:
        project = visible_project(session, principal, slug)
        held = _held_lease(session, project.id, principal.user_id)
        if held is not None:
            return _claim(session, project, held)
        item_id = session.scalar(_candidate(session, project, principal.user_id))
        if item_id is None:
            return None
        return _claim(session, project, _lease(session, item_id, principal.user_id, lease_seconds))


def current_claim(db: Database, principal: Principal, slug: str) -> Claim | None:
    """Return the live lease this labeler holds in the project, if any (reload-safe)."""
    _require_labeler(principal)
    with db.read() as session:
        project = visible_project(session, principal, slug)
        held = _held_lease(session, project.id, principal.user_id)
        return None if held is None else _claim(session, project, held)


def _require_labeler(principal: Principal) -> None:
    if principal.user_id is None:
        raise Forbidden("labelling needs a user (session or personal token), not a service token")


def _held_lease(session: Session, project_id: int, user_id: int | None) -> Lease | None:
    return session.scalar(
        select(Lease)
        .join(Item, Item.id == Lease.item_id)
        .where(
            Item.project_id == project_id,
            Item.status == "queued",
            Lease.user_id == user_id,
            Lease.state == "active",
            Lease.expires_at > utcnow(),
        )
        .order_by(Lease.id)
        .limit(1)
    )


def _candidate(session: Session, project: Project, user_id: int | None) -> Any:
    """The highest-priority queued item with a free slot that this user has not touched."""
    live_leases = (
        select(func.count(Lease.id))
        .where(Lease.item_id == Item.id, Lease.state == "active", Lease.expires_at > utcnow())
        .scalar_subquery()
    )
    votes = select(func.count(Vote.id)).where(Vote.item_id == Item.id).scalar_subquery()
    # A released (skipped) lease hides the item from this user until it expires.
    touched = exists().where(Vote.item_id == Item.id, Vote.user_id == user_id) | exists().where(
        Lease.item_id == Item.id,
        Lease.user_id == user_id,
        Lease.state.in_(("active", "released")),
        Lease.expires_at > utcnow(),
    )
    query = (
        select(Item.id)
        .where(Item.project_id == project.id, Item.status == "queued", ~touched)
        .where(live_leases + votes < project.overlap)
        .order_by(Item.priority.desc(), Item.id)
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Item)
    return query


def _lease(session: Session, item_id: int, user_id: int | None, seconds: int) -> Lease:
    fence = session.execute(
        update(Item).where(Item.id == item_id).values(fence=Item.fence + 1).returning(Item.fence)
    ).scalar_one()
    lease = Lease(
        item_id=item_id, user_id=user_id, fence=fence, state="active", expires_at=utcnow(seconds)
    )
    session.add(lease)
    session.flush()
    session.refresh(lease)
    return lease


def _claim(session: Session, project: Project, lease: Lease) -> Claim:
    item = session.get_one(Item, lease.item_id)
    prediction = None
    if project.show_prediction and item.probabilities:
        label = max(item.probabilities, key=item.probabilities.__getitem__)
        prediction = {"label": label, "confidence": item.probabilities[label]}
    return Claim(
        item.id, project.slug, item.input, item.display, prediction, lease.fence, lease.expires_at
    )


@dataclass(frozen=True)
class VoteResult:
    item_id: int
    outcome: str
    label: str | None


def cast_vote(
    db: Database, principal: Principal, item_id: int, answer: str, fence: int, seconds: float
) -> VoteResult:
    """Record one labeler's answer under their current lease; decide once enough votes agree.

    Raises:
        NotFound: no such item, or the caller may not see its project.
        InvalidInput: the answer is not one of the project's labels or "unsure".
        Conflict: the lease is lost, expired or stale (a newer claim has a higher fence).
    """
    _require_labeler(principal)
    with db.transaction() as session:
        item, project = _item_for(session, principal, item_id)
        if answer != UNSURE and answer not in project.labels:
            raise InvalidInput(
                "not a label of this project",
                [FieldError("label", f"must be one of {project.labels} or 'unsure'")],
            )
        lease = _live_lease(session, item_id, principal.user_id, fence)
        lease.state = "voted"
        session.add(
            Vote(
                item_id=item_id,
                user_id=principal.user_id,
                answer=answer,
                fence=fence,
                seconds=seconds,
            )
        )
        session.flush()
        answers = list(session.scalars(select(Vote.answer).where(Vote.item_id == item_id)))
        verdict = majority(answers, project.overlap)
        if verdict.outcome is Outcome.DECIDED and verdict.label is not None:
            _decide(session, item, verdict.label, "consensus")
        elif verdict.outcome is Outcome.ESCALATED:
            item.status = "escalated"
        return VoteResult(item_id, verdict.outcome.value, verdict.label)


def _item_for(session: Session, principal: Principal, item_id: int) -> tuple[Item, Project]:
    query = select(Item).where(Item.id == item_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()  # serialise votes on one item (overlap > 1)
    item = session.scalar(query)
    if item is None:
        raise NotFound(f"no item {item_id}")
    project = session.get_one(Project, item.project_id)
    visible_project(session, principal, project.slug)
    return item, project


def _live_lease(session: Session, item_id: int, user_id: int | None, fence: int) -> Lease:
    lease = session.scalar(
        select(Lease).where(
            and_(
                Lease.item_id == item_id,
                Lease.user_id == user_id,
                Lease.fence == fence,
                Lease.state == "active",
                Lease.expires_at > utcnow(),
            )
        )
    )
    if lease is None:
        raise Conflict(STALE_LEASE)
    return lease


def _decide(session: Session, item: Item, label: str, source: str) -> None:
    item.status = "decided"
    session.add(Decision(item_id=item.id, project_id=item.project_id, label=label, source=source))
    session.add(OutboxMessage(kind="label_decided", payload={"item_id": item.id, "label": label}))


def release(db: Database, principal: Principal, item_id: int, fence: int) -> None:
    """Give the item back to the pool (skip)."""
    _require_labeler(principal)
    with db.transaction() as session:
        _item_for(session, principal, item_id)
        lease = _live_lease(session, item_id, principal.user_id, fence)
        lease.state = "released"
        lease.expires_at = utcnow(SKIP_HIDE_SECONDS)


def extend(
    db: Database, principal: Principal, item_id: int, fence: int, lease_seconds: int
) -> datetime:
    """Push the lease's expiry forward (heartbeat from an open page)."""
    _require_labeler(principal)
    with db.transaction() as session:
        _item_for(session, principal, item_id)
        lease = _live_lease(session, item_id, principal.user_id, fence)
        lease.expires_at = utcnow(lease_seconds)
        session.flush()
        session.refresh(lease)
        return lease.expires_at
