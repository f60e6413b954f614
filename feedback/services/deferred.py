"""Deferred review items go back into the queue, most uncertain first, once it has room."""

from __future__ import annotations

from sqlalchemy import exists, func, select, text, update

from feedback.db.engine import Database
from feedback.db.models import DEFERRED_WAITING, Item, Project

BATCH = 1000  # at most this many items move per project and tick; the next tick takes more


def requeue_deferred(db: Database) -> int:
    """Move deferred items of every capped project into its review queue while room lasts.

    Each project is one short write transaction that counts its queue under the same lock a
    capped ingest takes (the project row on PostgreSQL, the write lock on SQLite), so the two
    never overfill the queue together. Returns how many items moved.
    """
    with db.read() as session:
        waiting = exists().where(Item.project_id == Project.id, text(DEFERRED_WAITING))
        capped = session.scalars(
            select(Project.id).where(Project.max_queue.is_not(None), waiting)
        ).all()
    return sum(_requeue_project(db, project_id) for project_id in capped)


def _requeue_project(db: Database, project_id: int) -> int:
    with db.transaction() as session:
        query = select(Project.max_queue).where(Project.id == project_id)
        if db.dialect == "postgresql":
            query = query.with_for_update()
        max_queue = session.scalar(query)
        if max_queue is None:  # the cap was lifted: the deferred items stay auto
            return 0
        queued = session.scalar(
            select(func.count(Item.id)).where(
                Item.project_id == project_id, Item.status == "queued"
            )
        )
        room = min(max_queue - (queued or 0), BATCH)
        if room <= 0:
            return 0
        chosen = (
            select(Item.id)
            .where(Item.project_id == project_id, text(DEFERRED_WAITING))
            .order_by(Item.uncertainty.desc(), Item.id)
            .limit(room)
            .scalar_subquery()
        )
        moved = session.execute(
            update(Item)
            .where(Item.id.in_(chosen))
            .values(status="queued", route="review")
            .execution_options(synchronize_session=False)
        )
        return int(moved.rowcount or 0)  # type: ignore[attr-defined]
