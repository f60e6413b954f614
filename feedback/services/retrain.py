"""Retraining: request, schedule, run (snapshot, fit, evaluate, decide), promote by CAS."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from feedback import artifacts
from feedback.config import Settings
from feedback.db.clock import utcnow
from feedback.db.engine import Database
from feedback.db.models import (
    Decision,
    Item,
    ModelVersion,
    OutboxMessage,
    Project,
    RetrainRun,
    naive_utcnow,
)
from feedback.domain import pipelines
from feedback.domain.errors import NotFound
from feedback.domain.evaluation import evaluate
from feedback.domain.promotion import PromotionDecision, PromotionPolicy, Scores, decide
from feedback.services.models import library_versions, load_version
from feedback.services.projects import visible_project
from feedback.services.users import Principal

log = logging.getLogger(__name__)
ACTIVE = ("requested", "running")
STALE_RUN_SECONDS = 900


def request_retrain(db: Database, principal: Principal, slug: str, trigger: str = "manual") -> int:
    """Ask for a retrain; coalesce with the run already requested or running. Return its id."""
    with db.transaction() as session:
        project = visible_project(session, principal, slug)
        return _request(session, project.id, trigger)


def _request(session: Session, project_id: int, trigger: str) -> int:
    active = _active_run(session, project_id)
    if active is not None:
        return active
    try:
        with session.begin_nested():
            run = RetrainRun(
                project_id=project_id, status="requested", trigger=trigger, attempts=0, fence=0
            )
            session.add(run)
            session.flush()
            session.add(OutboxMessage(kind="retrain", payload={"run_id": run.id}))
            return run.id
    except IntegrityError:  # another process requested one at the same moment
        active = _active_run(session, project_id)
        if active is None:
            raise
        return active


def _active_run(session: Session, project_id: int) -> int | None:
    return session.scalar(
        select(RetrainRun.id).where(
            RetrainRun.project_id == project_id, RetrainRun.status.in_(ACTIVE)
        )
    )


def schedule_due(db: Database) -> list[int]:
    """Request a run for every project whose retrain policy is due; return the run ids."""
    with db.transaction() as session:
        runs = []
        for project in session.scalars(select(Project)):
            trigger = _due_trigger(session, project)
            if trigger is not None and _active_run(session, project.id) is None:
                runs.append(_request(session, project.id, trigger))
        return runs


def _due_trigger(session: Session, project: Project) -> str | None:
    last_watermark = session.scalar(
        select(func.max(ModelVersion.watermark)).where(ModelVersion.project_id == project.id)
    )
    new = (
        session.scalar(
            select(func.count(Decision.id))
            .join(Item, Item.id == Decision.item_id)
            .where(
                Decision.project_id == project.id,
                Decision.id > (last_watermark or 0),
                Item.is_holdout.is_(False),
            )
        )
        or 0
    )
    if last_watermark is None:
        return "seed" if new > 0 else None
    if new >= project.retrain_min_decisions:
        return "decisions"
    if new and project.retrain_interval_seconds and _interval_passed(session, project):
        return "schedule"
    return None


def _interval_passed(session: Session, project: Project) -> bool:
    last = session.scalar(
        select(func.max(RetrainRun.finished_at)).where(RetrainRun.project_id == project.id)
    )
    interval = timedelta(seconds=project.retrain_interval_seconds or 0)
    return last is None or naive_utcnow() - last >= interval


@dataclass(frozen=True)
class Snapshot:
    """The exact examples of one run: training up to the watermark, and the holdout."""

    train_inputs: list[Any]
    train_labels: list[str]
    holdout_inputs: list[Any]
    holdout_labels: list[str]
    watermark: int
    digest: str


def take_snapshot(session: Session, project: Project) -> Snapshot:
    """Read every decided example; holdout items are kept apart and never trained on."""
    rows = session.execute(
        select(Decision.id, Decision.label, Item.input, Item.is_holdout)
        .join(Item, Item.id == Decision.item_id)
        .where(Decision.project_id == project.id)
        .order_by(Decision.id)
    ).all()
    labels = set(project.labels)
    kept = [row for row in rows if row.label in labels]
    key = "text" if project.input_kind == "text" else "features"
    train = [(row.input[key], row.label, row.id) for row in kept if not row.is_holdout]
    holdout = [(row.input[key], row.label) for row in kept if row.is_holdout]
    lineage = hashlib.sha256(json.dumps([(i, label) for _, label, i in train]).encode()).hexdigest()
    return Snapshot(
        train_inputs=[t[0] for t in train],
        train_labels=[t[1] for t in train],
        holdout_inputs=[h[0] for h in holdout],
        holdout_labels=[h[1] for h in holdout],
        watermark=max((row.id for row in rows), default=0),
        digest=lineage,
    )


@dataclass(frozen=True)
class Started:
    run_id: int
    project_id: int
    fence: int
    champion_id: int | None


def execute_retrain(db: Database, settings: Settings, run_id: int) -> str:
    """Run one requested retrain to its end; safe to call twice. Return the run's status."""
    started = _start(db, run_id, settings.retrain_max_attempts)
    if started is None:
        with db.read() as session:
            return session.get_one(RetrainRun, run_id).status
    try:
        return _train_and_decide(db, settings, started)
    except Exception as error:
        log.exception("retrain run %s failed", run_id)
        _finish_failed(
            db, started, f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=5)}"
        )
        return "failed"


def _start(db: Database, run_id: int, max_attempts: int) -> Started | None:
    """Take the run (requested, or running with a stale heartbeat) and bump its fence."""
    with db.transaction() as session:
        stale = naive_utcnow() - timedelta(seconds=STALE_RUN_SECONDS)
        taken = session.execute(
            update(RetrainRun)
            .where(
                RetrainRun.id == run_id,
                or_(
                    RetrainRun.status == "requested",
                    (RetrainRun.status == "running") & (RetrainRun.heartbeat_at < stale),
                ),
            )
            .values(
                status="running",
                attempts=RetrainRun.attempts + 1,
                fence=RetrainRun.fence + 1,
                stage="snapshot",
                started_at=utcnow(),
                heartbeat_at=utcnow(),
            )
            .returning(RetrainRun.project_id, RetrainRun.fence, RetrainRun.attempts)
        ).first()
        if taken is None:
            return None
        if taken.attempts > max_attempts:
            _mark(session, run_id, "failed", error=f"gave up after {max_attempts} attempts")
            return None
        champion = session.scalar(select(Project.champion_id).where(Project.id == taken.project_id))
        return Started(run_id, taken.project_id, taken.fence, champion)


def _stage(db: Database, started: Started, stage: str) -> None:
    with db.transaction() as session:
        session.execute(
            update(RetrainRun)
            .where(RetrainRun.id == started.run_id, RetrainRun.fence == started.fence)
            .values(stage=stage, heartbeat_at=utcnow())
        )


def _train_and_decide(db: Database, settings: Settings, started: Started) -> str:
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    with db.read() as session:
        project = session.get_one(Project, started.project_id)
        snapshot = take_snapshot(session, project)
        champion = session.get(ModelVersion, started.champion_id) if started.champion_id else None
    timings["snapshot"] = time.perf_counter() - clock
    _stage(db, started, "fit")
    clock = time.perf_counter()
    candidate = pipelines.build_pipeline(project.model_spec, project.input_kind)
    kind = project.input_kind
    train_x = pipelines.as_model_input(snapshot.train_inputs, kind)
    candidate.fit(train_x, snapshot.train_labels)
    baseline = pipelines.baseline().fit(train_x, snapshot.train_labels)
    timings["fit"] = time.perf_counter() - clock
    _stage(db, started, "evaluate")
    clock = time.perf_counter()
    scores = _evaluate_all(project, snapshot, candidate, baseline, champion)
    timings["evaluate"] = time.perf_counter() - clock
    _stage(db, started, "decide")
    missing = tuple(label for label in project.labels if label not in set(snapshot.train_labels))
    verdict = decide(
        scores["candidate"],
        scores["baseline"],
        scores.get("champion"),
        len(snapshot.holdout_labels),
        missing,
        _policy(project),
    )
    stored = artifacts.save(candidate, settings.model_dir / project.slug)
    return _finish(db, started, project, snapshot, scores, verdict, stored, timings)


def _evaluate_all(
    project: Project,
    snapshot: Snapshot,
    candidate: Any,
    baseline: Any,
    champion: ModelVersion | None,
) -> dict[str, Scores]:
    holdout_x = pipelines.as_model_input(snapshot.holdout_inputs, project.input_kind)
    labels, truth = project.labels, snapshot.holdout_labels
    if not truth:
        empty = Scores(
            metrics={"accuracy": float("nan"), "macro_f1": float("nan"), "log_loss": float("nan")},
            per_class={},
        )
        return {"candidate": empty, "baseline": empty}
    scores = {
        "candidate": evaluate(candidate, holdout_x, truth, labels),
        "baseline": evaluate(baseline, holdout_x, truth, labels),
    }
    if champion is not None:
        scores["champion"] = evaluate(load_version(champion), holdout_x, truth, labels)
    return scores


def _policy(project: Project) -> PromotionPolicy:
    return PromotionPolicy(
        metric=project.promotion_metric,
        min_gain=project.promotion_min_gain,
        min_holdout=project.promotion_min_holdout,
        class_tolerance=project.promotion_class_tolerance,
    )


def _finish(
    db: Database,
    started: Started,
    project: Project,
    snapshot: Snapshot,
    scores: dict[str, Scores],
    verdict: PromotionDecision,
    stored: artifacts.StoredArtifact,
    timings: dict[str, float],
) -> str:
    """Record the version; promote by compare-and-swap on the champion the run started from."""
    with db.transaction() as session:
        run = session.get_one(RetrainRun, started.run_id)
        if run.fence != started.fence or run.status != "running":
            log.warning("run %s was taken over; dropping its result", started.run_id)
            return run.status
        version = _new_version(session, project, snapshot, scores, verdict, stored, timings)
        promoted = verdict.promote and _swap_champion(
            session, project.id, started.champion_id, version.id
        )
        if verdict.promote and not promoted:
            version.decision, version.reason = (
                "rejected",
                "the champion changed while this run was training",
            )
        if promoted:
            session.add(OutboxMessage(kind="rescore", payload={"project_id": project.id}))
            session.add(
                OutboxMessage(
                    kind="promoted", payload={"project_id": project.id, "version": version.version}
                )
            )
        status = "succeeded" if promoted else "rejected"
        _mark(session, run.id, status, model_version_id=version.id)
        return status


def _new_version(
    session: Session,
    project: Project,
    snapshot: Snapshot,
    scores: dict[str, Scores],
    verdict: PromotionDecision,
    stored: artifacts.StoredArtifact,
    timings: dict[str, float],
) -> ModelVersion:
    number = (
        session.scalar(
            select(func.max(ModelVersion.version)).where(ModelVersion.project_id == project.id)
        )
        or 0
    ) + 1
    champion = scores.get("champion")
    version = ModelVersion(
        project_id=project.id,
        version=number,
        spec=project.model_spec,
        artifact_path=stored.path,
        sha256=stored.sha256,
        metrics=_clean(scores["candidate"].metrics),
        per_class=_clean(scores["candidate"].per_class),
        baseline_metrics=_clean(scores["baseline"].metrics),
        champion_metrics=None if champion is None else _clean(champion.metrics),
        decision="promoted" if verdict.promote else "rejected",
        reason=verdict.summary,
        watermark=snapshot.watermark,
        train_size=len(snapshot.train_labels),
        holdout_size=len(snapshot.holdout_labels),
        snapshot_digest=snapshot.digest,
        library_versions=library_versions(),
        timings={k: round(v, 4) for k, v in timings.items()},
    )
    session.add(version)
    session.flush()
    return version


def _clean(values: Any) -> dict[str, float | None]:
    """JSON has no NaN: store a missing metric as null."""
    return {k: (None if v != v else float(v)) for k, v in dict(values).items()}


def _swap_champion(session: Session, project_id: int, expected: int | None, new: int) -> bool:
    current = Project.champion_id.is_(None) if expected is None else Project.champion_id == expected
    result = session.execute(
        update(Project).where(Project.id == project_id, current).values(champion_id=new)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _mark(session: Session, run_id: int, status: str, **values: Any) -> None:
    session.execute(
        update(RetrainRun)
        .where(RetrainRun.id == run_id)
        .values(status=status, stage="done", finished_at=utcnow(), heartbeat_at=utcnow(), **values)
    )


def _finish_failed(db: Database, started: Started, error: str) -> None:
    with db.transaction() as session:
        run = session.get_one(RetrainRun, started.run_id)
        if run.fence == started.fence and run.status == "running":
            _mark(session, run.id, "failed", error=error[:4000])


def run_status(db: Database, principal: Principal, slug: str, run_id: int) -> RetrainRun:
    """Return one run of a project the caller may see."""
    with db.read() as session:
        project = visible_project(session, principal, slug)
        run = session.get(RetrainRun, run_id)
        if run is None or run.project_id != project.id:
            raise NotFound(f"no run {run_id}")
        return run
