"""The outbox: work recorded in the database, handed to the workers after commit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select, update

from feedback.db.clock import utcnow
from feedback.db.engine import Database
from feedback.db.models import OutboxMessage

BATCH = 200


@dataclass(frozen=True)
class Message:
    id: int
    kind: str
    payload: dict[str, Any]


def pending(db: Database, limit: int = BATCH) -> list[Message]:
    """Messages due and not yet handed to the broker, oldest first."""
    due = or_(OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= utcnow())
    with db.read() as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.dispatched_at.is_(None), due)
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
        return [Message(row.id, row.kind, dict(row.payload)) for row in rows]


def mark_dispatched(db: Database, ids: list[int]) -> None:
    """Record that these messages reached the broker.

    A message a worker already put back for a later attempt (a webhook that failed between
    its sending and this mark) keeps waiting for that attempt: only messages still due are
    marked.
    """
    if not ids:
        return
    still_due = or_(
        OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= utcnow()
    )
    with db.transaction() as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids), OutboxMessage.dispatched_at.is_(None), still_due)
            .values(dispatched_at=utcnow())
        )


def purge(db: Database, older_than_seconds: int) -> int:
    """Delete messages handed over longer ago than the given age; return how many.

    Each one's work is done or recorded elsewhere by then (a run, a version, a delivered
    event). A webhook event whose delivery failed keeps its row with the last error; a
    message waiting for its first or next attempt has no `dispatched_at` and stays.
    """
    with db.transaction() as session:
        result = session.execute(
            delete(OutboxMessage).where(
                OutboxMessage.dispatched_at < utcnow(-older_than_seconds),
                OutboxMessage.last_error.is_(None),
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
