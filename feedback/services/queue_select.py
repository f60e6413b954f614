"""Choosing and leasing the next item: each claim is one walk down an ordered index.

Every candidate query orders by `(priority DESC, id DESC)` within `(project_id, status)`,
which the `ix_items_queue` index serves as one backward scan, so the cost of a claim does
not grow with the queue: the walk stops at the first free item. A random pick walks
`ix_items_random` forward from a uniform draw instead: every item carries a random key drawn
by the database when it was inserted, so the first free item at or after the draw (wrapping
around) is a random queued item, chosen independently of its content (each item's chance is
the gap before its key: equal on average, not exactly), found the same way. On PostgreSQL
the row is taken with `FOR UPDATE SKIP LOCKED` and re-checked under its lock (a statement
whose snapshot predates a concurrent claim could otherwise lease the same item); SQLite
takes the write lock when the transaction begins, so the whole claim is atomic there.
"""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, insert, select, update
from sqlalchemy.orm import Session

from feedback.db.clock import utcnow
from feedback.db.models import Item, Lease, Project, User, Vote
from feedback.domain.selection import Pick, choose_pick

MAX_RECHECKS = 8
LIVE_STATES = ("queued", "escalated")


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def lock_labeler(session: Session, user_id: int) -> None:
    """Serialise one labeler's claims (two open tabs must not take two items)."""
    if is_postgres(session):
        session.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))


def held_lease(session: Session, project_id: int, user_id: int) -> Lease | None:
    """The live lease this labeler holds in the project, if any."""
    return session.scalar(
        select(Lease)
        .join(Item, Item.id == Lease.item_id)
        .where(
            Lease.user_id == user_id,
            Lease.state == "active",
            Lease.expires_at > utcnow(),
            Item.project_id == project_id,
            Item.status.in_(LIVE_STATES) | Item.gold_label.is_not(None),
        )
        .order_by(Lease.id.desc())
        .limit(1)
    )


def choose_and_lease(
    session: Session, project: Project, user_id: int, seconds: int, rng: random.Random
) -> tuple[Lease, Item] | None:
    """Pick the next item by the project's policy and lease it; None when nothing is free."""
    pick = choose_pick(project.gold_rate, project.random_share, rng.random())
    item_id = None
    if pick is Pick.GOLD:
        item_id = _gold_candidate(session, project.id, user_id)
    elif pick is Pick.RANDOM:
        item_id = _random_candidate(session, project, user_id, rng.random())
    if item_id is None:
        item_id = _queue_candidate(session, project, user_id)
    return None if item_id is None else lease_item(session, item_id, user_id, seconds)


def _untouched(user_id: int) -> ColumnElement[bool]:
    """Not voted on by this user, and not held or recently skipped by them."""
    voted = exists().where(Vote.item_id == Item.id, Vote.user_id == user_id)
    held = exists().where(
        Lease.item_id == Item.id,
        Lease.user_id == user_id,
        Lease.state.in_(("active", "released")),
        Lease.expires_at > utcnow(),
    )
    return ~voted & ~held


def _free_slots(item_id: Any, overlap: int) -> ColumnElement[bool]:
    """Fewer live leases plus votes than the overlap asks for."""
    live = exists().where(
        Lease.item_id == item_id, Lease.state == "active", Lease.expires_at > utcnow()
    )
    voted = exists().where(Vote.item_id == item_id)
    if overlap <= 1:
        return ~live & ~voted
    leases = select(func.count(Lease.id)).where(
        Lease.item_id == item_id, Lease.state == "active", Lease.expires_at > utcnow()
    )
    votes = select(func.count(Vote.id)).where(Vote.item_id == item_id)
    return leases.scalar_subquery() + votes.scalar_subquery() < overlap


def _claimable(project: Project, user_id: int) -> Select[int]:
    """Queued items of the project that this labeler may take now (unordered)."""
    return (
        select(Item.id)
        .where(Item.project_id == project.id, Item.status == "queued")
        .where(_untouched(user_id), _free_slots(Item.id, project.overlap))
        .limit(1)
    )


def _queue_candidate(session: Session, project: Project, user_id: int) -> int | None:
    """The most useful free item: the top of the priority order."""
    query = _claimable(project, user_id).order_by(Item.priority.desc(), Item.id.desc())
    return _take(session, query, project.overlap)


def _random_candidate(session: Session, project: Project, user_id: int, draw: float) -> int | None:
    """A random free item: the first at or after `draw` by random key, wrapping."""
    query = _claimable(project, user_id).order_by(Item.random_key, Item.id)
    after = _take(session, query.where(Item.random_key >= draw), project.overlap)
    if after is not None:
        return after
    return _take(session, query.where(Item.random_key < draw), project.overlap)


def _take(session: Session, query: Select[int], overlap: int) -> int | None:
    """Run the candidate query; on PostgreSQL lock the row and re-check it under the lock."""
    if not is_postgres(session):
        return session.scalar(query)
    query = query.with_for_update(skip_locked=True, of=Item)
    for _ in range(MAX_RECHECKS):
        item_id = session.scalar(query)
        if item_id is None or session.scalar(select(_free_slots(item_id, overlap))):
            return item_id
        query = query.where(Item.id != item_id)
    return None


def _gold_candidate(session: Session, project_id: int, user_id: int) -> int | None:
    """A gold item this labeler has not answered yet (each labeler sees each gold item once)."""
    return session.scalar(
        select(Item.id)
        .where(Item.project_id == project_id, Item.gold_label.is_not(None), _untouched(user_id))
        .order_by(func.random())
        .limit(1)
    )


def lease_item(session: Session, item_id: int, user_id: int, seconds: int) -> tuple[Lease, Item]:
    """Bump the item's fence and record a lease that expires by the database clock.

    Both statements return their rows as ORM objects (the caller keeps the item: the
    identity map holds only weak references), so describing the claim needs no more queries.
    """
    item = session.scalars(
        update(Item).where(Item.id == item_id).values(fence=Item.fence + 1).returning(Item),
        execution_options={"populate_existing": True, "synchronize_session": False},
    ).one()
    lease = session.scalars(
        insert(Lease)
        .values(
            item_id=item_id,
            user_id=user_id,
            fence=item.fence,
            state="active",
            expires_at=utcnow(seconds),
        )
        .returning(Lease)
    ).one()
    return lease, item
