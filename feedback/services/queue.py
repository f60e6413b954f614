"""The review queue: claim the most useful item under a lease, vote with its fence."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from feedback.db.clock import utcnow
from feedback.db.engine import Database
from feedback.db.models import Decision, Item, Lease, OutboxMessage, Project, Vote
from feedback.domain.consensus import UNSURE, Outcome, majority
from feedback.domain.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from feedback.services.projects import visible_project
from feedback.services.queue_select import choose_and_lease, held_lease, is_postgres, lock_labeler
from feedback.services.users import Principal

SKIP_HIDE_SECONDS = 600
STALE_LEASE = "your lease on this item has expired or been taken over; the item was not changed"
_rng = random.SystemRandom()


class AlreadyVoted(Conflict):
    """The same labeler already answered this item under this fence (a retried request)."""

    code = "already_voted"

    def __init__(self) -> None:
        super().__init__("your answer to this item was already saved")


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


@dataclass(frozen=True)
class VoteResult:
    item_id: int
    outcome: str
    label: str | None


def claim_next(
    db: Database,
    principal: Principal,
    slug: str,
    lease_seconds: int,
    rng: random.Random | None = None,
) -> Claim | None:
    """Lease the most useful item this labeler may take, or return the one they already hold."""
    user_id = require_labeler(principal)
    with db.transaction() as session:
        project = visible_project(session, principal, slug)
        return claim_in(session, project, user_id, lease_seconds, rng or _rng)


def claim_in(
    session: Session, project: Project, user_id: int, seconds: int, rng: random.Random
) -> Claim | None:
    """Inside an open transaction: return the held lease or lease the next item."""
    lock_labeler(session, user_id)
    held = held_lease(session, project.id, user_id)
    if held is not None:
        return to_claim(session, project, held)
    taken = choose_and_lease(session, project, user_id, seconds, rng)
    return None if taken is None else to_claim(session, project, *taken)


def current_claim(db: Database, principal: Principal, slug: str) -> Claim | None:
    """Return the live lease this labeler holds in the project, if any (reload-safe)."""
    user_id = require_labeler(principal)
    with db.read() as session:
        project = visible_project(session, principal, slug)
        held = held_lease(session, project.id, user_id)
        return None if held is None else to_claim(session, project, held)


def require_labeler(principal: Principal) -> int:
    """Return the caller's user id; service tokens may not label."""
    if principal.user_id is None:
        raise Forbidden("labelling needs a user (session or personal token), not a service token")
    return principal.user_id


def to_claim(session: Session, project: Project, lease: Lease, item: Item | None = None) -> Claim:
    """Describe a lease for the page or the API (the model's guess only if the project shows it)."""
    item = item or session.get_one(Item, lease.item_id)
    prediction = None
    if project.show_prediction and item.probabilities:
        label = max(item.probabilities, key=item.probabilities.__getitem__)
        prediction = {"label": label, "confidence": item.probabilities[label]}
    return Claim(
        item.id, project.slug, item.input, item.display, prediction, lease.fence, lease.expires_at
    )


def cast_vote(
    db: Database, principal: Principal, item_id: int, answer: str, fence: int, seconds: float
) -> VoteResult:
    """Record one labeler's answer under their current lease; decide once enough votes agree.

    Raises:
        NotFound: no such item, or the caller may not see its project.
        InvalidInput: the answer is not one of the project's labels or "unsure".
        AlreadyVoted: this exact answer was saved before (a retry); nothing changes.
        Conflict: the lease is lost, expired or stale (a newer claim has a higher fence).
    """
    require_labeler(principal)
    with db.transaction() as session:
        return record_vote(session, principal, item_id, answer, fence, seconds)


def vote_and_claim(
    db: Database,
    principal: Principal,
    item_id: int,
    vote: tuple[str, int, float],
    lease_seconds: int,
) -> tuple[VoteResult, Claim | None]:
    """Record an answer `(label, fence, seconds)` and lease the next item in one transaction."""
    user_id = require_labeler(principal)
    answer, fence, seconds = vote
    with db.transaction() as session:
        result = record_vote(session, principal, item_id, answer, fence, seconds)
        project = session.get_one(Project, session.get_one(Item, item_id).project_id)
        return result, claim_in(session, project, user_id, lease_seconds, _rng)


def record_vote(
    session: Session, principal: Principal, item_id: int, answer: str, fence: int, seconds: float
) -> VoteResult:
    """Inside an open transaction: check the lease, store the vote, apply consensus."""
    item, project = item_for(session, principal, item_id)
    if answer != UNSURE and answer not in project.labels:
        raise InvalidInput(
            "not a label of this project",
            [FieldError("label", f"must be one of {project.labels} or 'unsure'")],
        )
    user_id = require_labeler(principal)
    live_lease(session, item_id, user_id, fence).state = "voted"
    session.add(Vote(item_id=item_id, user_id=user_id, answer=answer, fence=fence, seconds=seconds))
    session.flush()
    if item.gold_label is not None:  # answers on gold items measure the labeler only
        return _as_if_ordinary(item_id, answer, project.overlap)
    if item.status != "queued":  # a late vote on an escalated item informs the reviewer
        return VoteResult(item_id, Outcome.ESCALATED.value, None)
    answers = list(session.scalars(select(Vote.answer).where(Vote.item_id == item_id)))
    verdict = majority(answers, project.overlap)
    if verdict.outcome is Outcome.DECIDED and verdict.label is not None:
        decide(session, item, verdict.label, "consensus")
    elif verdict.outcome is Outcome.ESCALATED:
        item.status = "escalated"
    return VoteResult(item_id, verdict.outcome.value, verdict.label)


def _as_if_ordinary(item_id: int, answer: str, overlap: int) -> VoteResult:
    """Answer a gold vote like any other, so a labeler cannot tell gold items apart."""
    if answer == UNSURE:
        return VoteResult(item_id, Outcome.ESCALATED.value, None)
    if overlap <= 1:
        return VoteResult(item_id, Outcome.DECIDED.value, answer)
    return VoteResult(item_id, Outcome.PENDING.value, None)


def item_for(session: Session, principal: Principal, item_id: int) -> tuple[Item, Project]:
    """Load an item (locked on PostgreSQL, so votes on it are serialised) and its project."""
    query = select(Item).where(Item.id == item_id)
    if is_postgres(session):
        query = query.with_for_update()
    item = session.scalar(query)
    if item is None:
        raise NotFound(f"no item {item_id}")
    project = session.get_one(Project, item.project_id)
    visible_project(session, principal, project.slug)
    return item, project


def live_lease(session: Session, item_id: int, user_id: int, fence: int) -> Lease:
    """The caller's live lease with this fence; AlreadyVoted or Conflict otherwise."""
    lease = session.scalar(
        select(Lease).where(
            Lease.item_id == item_id,
            Lease.user_id == user_id,
            Lease.fence == fence,
            Lease.state == "active",
            Lease.expires_at > utcnow(),
        )
    )
    if lease is not None:
        return lease
    voted = select(Vote.id).where(
        Vote.item_id == item_id, Vote.user_id == user_id, Vote.fence == fence
    )
    if session.scalar(voted) is not None:
        raise AlreadyVoted()
    raise Conflict(STALE_LEASE)


def decide(session: Session, item: Item, label: str, source: str) -> None:
    """Mark the item decided with this label and tell the model service (via the outbox)."""
    item.status = "decided"
    session.add(Decision(item_id=item.id, project_id=item.project_id, label=label, source=source))
    announce_label(session, item, label)


def announce_label(session: Session, item: Item, label: str) -> None:
    """Queue a `label_decided` event for the project's webhook, if it has one.

    Without a webhook there is nobody to tell: no event row, no task. Decisions made before a
    webhook was set are read from the labels export, not replayed.
    """
    project = session.get_one(Project, item.project_id)  # already loaded by every caller
    if project.webhook_url:
        payload = {"item_id": item.id, "label": label}
        session.add(OutboxMessage(kind="label_decided", payload=payload))


def release(db: Database, principal: Principal, item_id: int, fence: int) -> None:
    """Give the item back to the pool (skip); it stays hidden from this labeler for a while."""
    user_id = require_labeler(principal)
    with db.transaction() as session:
        item_for(session, principal, item_id)
        lease = live_lease(session, item_id, user_id, fence)
        lease.state = "released"
        lease.expires_at = utcnow(SKIP_HIDE_SECONDS)


def extend(
    db: Database, principal: Principal, item_id: int, fence: int, lease_seconds: int
) -> datetime:
    """Push the lease's expiry forward (heartbeat from an open page)."""
    user_id = require_labeler(principal)
    with db.transaction() as session:
        item_for(session, principal, item_id)
        lease = live_lease(session, item_id, user_id, fence)
        lease.expires_at = utcnow(lease_seconds)
        session.flush()
        session.refresh(lease)
        return lease.expires_at
