"""Retrain runs as a state machine in the database, fenced so a lost worker can be replaced.

requested -> running -> succeeded | rejected | failed. Taking a run bumps its fence; every
later write of that attempt names the fence, so an attempt that was given up on (its worker
stopped heartbeating) can never write over the attempt that replaced it. Attempts are
bounded: a run whose worker keeps dying ends `failed` with the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from feedback.config import Settings
from feedback.db.clock import utcnow
from feedback.db.engine import Database
from feedback.db.models import Decision, OutboxMessage, Project, RetrainRun

log = logging.getLogger(__name__)
ACTIVE = ("requested", "running")
STAGES = ("snapshot", "fit", "evaluate", "decide", "rescore")


class TakenOver(Exception):
    """Another attempt owns this run now; the old attempt stops without writing."""


@dataclass(frozen=True)
class Liveness:
    """How often a running attempt proves it is alive, and when the tick gives up on it."""

    heartbeat: float = 10.0
    stale: float = 120.0
    redispatch: float = 2400.0
    max_attempts: int = 3


def liveness(settings: Settings | None) -> Liveness:
    """Read the liveness timings (`Settings.extra` may override the defaults)."""
    if settings is None:
        return Liveness()
    extra = settings.extra
    return Liveness(
        heartbeat=float(extra.get("retrain_heartbeat_seconds", Liveness.heartbeat)),
        stale=float(extra.get("retrain_stale_seconds", Liveness.stale)),
        redispatch=float(
            extra.get("retrain_redispatch_seconds", settings.retrain_soft_time_limit + 600)
        ),
        max_attempts=settings.retrain_max_attempts,
    )


def request_run(session: Session, project_id: int, trigger: str) -> int:
    """Add a requested run and its outbox message, or return the run already active."""
    created = request_new(session, project_id, trigger)
    if created is not None:
        return created
    active = active_run(session, project_id)
    assert active is not None  # request_new returns None only when one is active
    return active


def request_new(session: Session, project_id: int, trigger: str) -> int | None:
    """Add a requested run and its outbox message; None if one is active (coalesced)."""
    if active_run(session, project_id) is not None:
        return None
    watermark = session.scalar(
        select(func.max(Decision.id)).where(Decision.project_id == project_id)
    )
    try:
        with session.begin_nested():
            run = RetrainRun(
                project_id=project_id,
                status="requested",
                trigger=trigger,
                attempts=0,
                fence=0,
                heartbeat_at=utcnow(),
                report={"requested_watermark": watermark or 0},
            )
            session.add(run)
            session.flush()
            session.add(OutboxMessage(kind="retrain", payload={"run_id": run.id}))
            return run.id
    except IntegrityError:  # another process requested one at the same moment
        if active_run(session, project_id) is None:
            raise
        return None


def active_run(session: Session, project_id: int) -> int | None:
    """The id of the project's requested or running run, if any."""
    return session.scalar(
        select(RetrainRun.id).where(
            RetrainRun.project_id == project_id, RetrainRun.status.in_(ACTIVE)
        )
    )


@dataclass(frozen=True)
class Started:
    """One attempt at a run: the fence it holds and the champion it started from."""

    run_id: int
    project_id: int
    fence: int
    attempt: int
    champion_id: int | None


def start(db: Database, run_id: int) -> Started | None:
    """Take a requested run (one taker wins) and bump its fence; None if not requested."""
    with db.transaction() as session:
        taken = session.execute(
            update(RetrainRun)
            .where(RetrainRun.id == run_id, RetrainRun.status == "requested")
            .values(
                status="running",
                attempts=RetrainRun.attempts + 1,
                fence=RetrainRun.fence + 1,
                stage=STAGES[0],
                started_at=utcnow(),
                heartbeat_at=utcnow(),
            )
            .returning(RetrainRun.project_id, RetrainRun.fence, RetrainRun.attempts)
        ).first()
        if taken is None:
            return None
        champion = session.scalar(select(Project.champion_id).where(Project.id == taken.project_id))
        return Started(run_id, taken.project_id, taken.fence, taken.attempts, champion)


def owned(session: Session, started: Started) -> RetrainRun:
    """Lock and return the run if this attempt still owns it; else raise TakenOver."""
    run = session.get(RetrainRun, started.run_id, with_for_update=True, populate_existing=True)
    if run is None or run.fence != started.fence or run.status != "running":
        raise TakenOver(f"run {started.run_id} attempt {started.attempt} was taken over")
    return run


def record_stage(db: Database, started: Started, stage: str, **report: Any) -> None:
    """Record the stage the attempt enters and merge `report` into the run report."""
    with db.transaction() as session:
        run = owned(session, started)
        run.stage = stage
        run.heartbeat_at = utcnow()
        run.report = {**(run.report or {}), **report}


def finish(run: RetrainRun, status: str, stage: str = "done", **values: Any) -> None:
    """End a run with a status (the caller's transaction commits it)."""
    run.status, run.stage = status, stage
    run.finished_at = run.heartbeat_at = utcnow()
    for name, value in values.items():
        setattr(run, name, value)


def fail(db: Database, started: Started, error: str) -> None:
    """End the run `failed` with the reason, if this attempt still owns it."""
    with db.transaction() as session:
        try:
            run = owned(session, started)
        except TakenOver:
            return
        report = {**(run.report or {}), "error": error}
        finish(run, "failed", stage=run.stage or STAGES[0], error=error[:4000], report=report)


@contextmanager
def heartbeat(db: Database, started: Started, every: float) -> Iterator[None]:
    """Prove the attempt is alive every `every` seconds while the block runs."""
    stop = threading.Event()
    beating = threading.Thread(
        target=_beat, args=(db, started, every, stop), name=f"run-{started.run_id}", daemon=True
    )
    beating.start()
    try:
        yield
    finally:
        stop.set()
        beating.join(timeout=max(every, 1.0) * 2)


def _beat(db: Database, started: Started, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        try:
            with db.transaction() as session:
                result = session.execute(
                    update(RetrainRun)
                    .where(
                        RetrainRun.id == started.run_id,
                        RetrainRun.fence == started.fence,
                        RetrainRun.status == "running",
                    )
                    .values(heartbeat_at=utcnow())
                )
            if not result.rowcount:  # type: ignore[attr-defined]
                return  # taken over or ended: the stage records will notice
        except Exception:  # the next beat retries; a dead database ends in a stale run
            log.warning("heartbeat of run %s failed", started.run_id, exc_info=True)


def recover(session: Session, live: Liveness) -> list[int]:
    """Give runs whose worker went quiet another attempt (or fail them); re-send lost ones."""
    quiet = _locked(
        session,
        select(RetrainRun).where(
            RetrainRun.status == "running", RetrainRun.heartbeat_at < utcnow(-live.stale)
        ),
    )
    retried = [run.id for run in quiet if _take_back(session, run, live.max_attempts)]
    lost = _locked(
        session,
        select(RetrainRun).where(
            RetrainRun.status == "requested",
            or_(
                RetrainRun.heartbeat_at.is_(None),
                RetrainRun.heartbeat_at < utcnow(-live.redispatch),
            ),
        ),
    )
    for run in lost:
        run.heartbeat_at = utcnow()
        session.add(OutboxMessage(kind="retrain", payload={"run_id": run.id}))
    return retried + [run.id for run in lost]


def _locked(session: Session, query: Any) -> list[RetrainRun]:
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)  # a concurrent tick skips these rows
    return list(session.scalars(query))


def _take_back(session: Session, run: RetrainRun, max_attempts: int) -> bool:
    """Requeue a run whose worker stopped heartbeating; fail it once attempts run out."""
    note = f"attempt {run.attempts}: the worker stopped responding at stage {run.stage}"
    report = {**(run.report or {}), "lost": [*(run.report or {}).get("lost", []), note]}
    log.warning("run %s: %s", run.id, note)
    if run.attempts >= max_attempts:
        error = f"gave up after {run.attempts} attempts; {note}"
        finish(run, "failed", stage=run.stage or STAGES[0], error=error, report=report)
        return False
    run.status, run.stage, run.fence = "requested", None, run.fence + 1
    run.heartbeat_at, run.report = utcnow(), report
    session.add(OutboxMessage(kind="retrain", payload={"run_id": run.id}))
    return True
