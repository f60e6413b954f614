"""The beat tick's work: recover runs whose worker went quiet, request the runs that are due."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from feedback.config import Settings
from feedback.db.clock import utcnow
from feedback.db.engine import Database
from feedback.db.models import Decision, Item, ModelVersion, Project, RetrainRun
from feedback.services import runs


def schedule_due(db: Database, settings: Settings | None = None) -> list[int]:
    """Recover quiet runs, then request a run for every project whose policy is due.

    Safe to call from many processes at once: at most one run per project is ever active
    (a unique index), and a request while one is active is coalesced into it.

    Returns:
        The ids of the runs this call requested.
    """
    with db.transaction() as session:
        runs.recover(session, runs.liveness(settings))
        requested = []
        for project in session.scalars(select(Project).order_by(Project.id)):
            if runs.active_run(session, project.id) is not None:
                continue
            trigger = due_trigger(session, project)
            created = runs.request_new(session, project.id, trigger) if trigger else None
            if created is not None:
                requested.append(created)
        return requested


def due_trigger(session: Session, project: Project) -> str | None:
    """Why the project should retrain now ("seed", "decisions", "schedule"), or None."""
    last = session.scalar(
        select(RetrainRun)
        .where(RetrainRun.project_id == project.id, RetrainRun.status.not_in(runs.ACTIVE))
        .order_by(RetrainRun.id.desc())
        .limit(1)
    )
    watermark = _considered_watermark(session, project.id, last)
    new = _new_labels(session, project.id, watermark or 0) + _corrections(session, project, last)
    if watermark is None:
        return "seed" if new > 0 else None
    if new >= project.retrain_min_decisions:
        return "decisions"
    if new and project.retrain_interval_seconds and _interval_passed(session, project, last):
        return "schedule"
    return None


def _considered_watermark(session: Session, project_id: int, last: RetrainRun | None) -> int | None:
    """The newest decision the last run looked at (a failed run counts: it must not loop)."""
    report = (last.report or {}) if last is not None else {}
    for key in ("watermark", "requested_watermark"):
        if isinstance(report.get(key), int):
            return int(report[key])
    return session.scalar(
        select(func.max(ModelVersion.watermark)).where(ModelVersion.project_id == project_id)
    )


def _new_labels(session: Session, project_id: int, watermark: int) -> int:
    count = session.scalar(
        select(func.count(Decision.id))
        .join(Item, Item.id == Decision.item_id)
        .where(
            Decision.project_id == project_id,
            Decision.id > watermark,
            Item.is_holdout.is_(False),
        )
    )
    return int(count or 0)


def _corrections(session: Session, project: Project, last: RetrainRun | None) -> int:
    """Decisions corrected since the last run read its snapshot: they change the training set."""
    taken = snapshot_time(last)
    if taken is None:
        return 0
    count = session.scalar(
        select(func.count(Decision.id)).where(
            Decision.project_id == project.id, Decision.corrected_at > taken
        )
    )
    return int(count or 0)


def snapshot_time(run: RetrainRun | None) -> datetime | None:
    """When a run read its snapshot (database clock, UTC, naive), if it got that far."""
    value = (run.report or {}).get("snapshot_at") if run is not None else None
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _interval_passed(session: Session, project: Project, last: RetrainRun | None) -> bool:
    if last is None or last.finished_at is None:
        return True
    interval = timedelta(seconds=project.retrain_interval_seconds or 0)
    now = session.scalar(select(utcnow()))
    return now is None or now - last.finished_at >= interval
