"""Retraining: request a run, execute it stage by stage, promote by compare-and-swap.

Stages: snapshot -> fit -> evaluate -> decide (-> rescore, by its own task). Each stage is
recorded on the run with the time the earlier ones took, so the run page shows progress.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from feedback import artifacts
from feedback.config import Settings
from feedback.db.engine import Database
from feedback.db.models import AuditEvent, ModelVersion, OutboxMessage, Project, RetrainRun
from feedback.domain.errors import NotFound
from feedback.domain.promotion import PromotionDecision, PromotionPolicy, Scores, decide
from feedback.domain.promotion import missing_classes as missing
from feedback.services import runs, training
from feedback.services.models import library_versions
from feedback.services.projects import visible_project
from feedback.services.schedule import schedule_due
from feedback.services.users import Principal

log = logging.getLogger(__name__)
ACTIVE = runs.ACTIVE
STAGES = runs.STAGES
__all__ = ["ACTIVE", "STAGES", "execute_retrain", "request_retrain", "run_status", "schedule_due"]


def request_retrain(db: Database, principal: Principal, slug: str, trigger: str = "manual") -> int:
    """Ask for a retrain; coalesce with the run already requested or running. Return its id."""
    with db.transaction() as session:
        project = visible_project(session, principal, slug)
        return runs.request_run(session, project.id, trigger)


def run_status(db: Database, principal: Principal, slug: str, run_id: int) -> RetrainRun:
    """Return one run of a project the caller may see."""
    with db.read() as session:
        project = visible_project(session, principal, slug)
        run = session.get(RetrainRun, run_id)
        if run is None or run.project_id != project.id:
            raise NotFound(f"no run {run_id}")
        return run


def execute_retrain(db: Database, settings: Settings, run_id: int) -> str:
    """Run one requested retrain to its end; safe to call twice. Return the run's status."""
    started = runs.start(db, run_id)
    if started is None:
        return _status(db, run_id)
    try:
        with runs.heartbeat(db, started, runs.liveness(settings).heartbeat):
            return _execute(db, settings, started)
    except runs.TakenOver:
        log.warning("run %s attempt %s was taken over; it stops", run_id, started.attempt)
        return _status(db, run_id)
    except Exception as error:
        log.exception("retrain run %s failed", run_id)
        runs.fail(db, started, f"{type(error).__name__}: {error}")
        return "failed"


def _status(db: Database, run_id: int) -> str:
    with db.read() as session:
        run = session.get(RetrainRun, run_id)
        return run.status if run is not None else "missing"  # its project was deleted


def _execute(db: Database, settings: Settings, started: runs.Started) -> str:
    timer = training.Timer()
    with timer.time("snapshot"), db.read() as session:
        project = session.get_one(Project, started.project_id)
        champion = session.get(ModelVersion, started.champion_id) if started.champion_id else None
        work = training.prepare(session, project, champion)
    runs.record_stage(db, started, "fit", **_plan_report(work, started), timings=timer.seconds)
    scoring = training.holdout(work)
    with timer.time("fit"):  # scores the champion on the holdout meanwhile, where it can
        candidate = training.fit(work, scoring)
    with timer.time("baseline"):
        baseline = training.fit_baseline(work.snapshot.labels)
    runs.record_stage(db, started, "evaluate", timings=timer.seconds)
    with timer.time("evaluate"):
        scores = training.judge(work, candidate, baseline, scoring)
    work, candidate, scores = _refit_if_behind(db, started, work, candidate, scores, timer)
    runs.record_stage(db, started, "decide", timings=timer.seconds)
    with timer.time("save"):
        folder = settings.model_dir / project.slug
        stored = artifacts.save(candidate, folder, project.trusted_types or ())  # verified
    return _finish(db, started, work, scores, _verdict(work, scores), stored, timer.seconds)


def _plan_report(work: training.Work, started: runs.Started) -> dict[str, Any]:
    mode = "incremental" if work.plan.incremental else "full"
    plan = {"mode": mode, "mode_reason": work.plan.reason, "attempt": started.attempt}
    return {**work.snapshot.report(), **plan}


def _refit_if_behind(
    db: Database,
    started: runs.Started,
    work: training.Work,
    candidate: Any,
    scores: dict[str, Scores],
    timer: training.Timer,
) -> tuple[training.Work, Any, dict[str, Scores]]:
    """Replace an incremental candidate that trails the champion by a full refit."""
    reason = training.needs_full_refit(work, scores)
    if not reason:
        return work, candidate, scores
    log.info("run %s: %s", started.run_id, reason)
    with db.read() as session:
        work = training.as_full_refit(session, work, reason)
    runs.record_stage(db, started, "fit", mode="full", mode_reason=reason, timings=timer.seconds)
    scoring = training.holdout(work)
    with timer.time("refit"):
        candidate = training.fit(work, scoring)
    runs.record_stage(db, started, "evaluate", fitted_on=len(work.snapshot.train_labels))
    with timer.time("evaluate"):
        baseline = training.fit_baseline(work.snapshot.labels)
        scores = training.judge(work, candidate, baseline, scoring)
    return work, candidate, scores


def _verdict(work: training.Work, scores: dict[str, Scores]) -> PromotionDecision:
    project, labels = work.project, work.snapshot.labels
    policy = PromotionPolicy(
        metric=project.promotion_metric,
        min_gain=project.promotion_min_gain,
        min_holdout=project.promotion_min_holdout,
        class_tolerance=project.promotion_class_tolerance,
    )
    trained_on = {e.label for e in labels.train}
    verdict = decide(
        scores["candidate"],
        scores["baseline"],
        scores.get("champion"),
        len(labels.holdout),
        missing(project.labels, trained_on),
        policy,
    )
    if work.champion is not None and work.champion.error:
        return verdict.refused(f"the champion's model file was refused: {work.champion.error}")
    return verdict


def _finish(
    db: Database,
    started: runs.Started,
    work: training.Work,
    scores: dict[str, Scores],
    verdict: PromotionDecision,
    stored: artifacts.StoredArtifact,
    timings: dict[str, float],
) -> str:
    """Record the version; promote by compare-and-swap on the champion the run started from."""
    with db.transaction() as session:
        run = runs.owned(session, started)
        version = _new_version(session, work, scores, verdict, stored, timings)
        promoted = verdict.promote and _swap_champion(
            session, work.project.id, started.champion_id, version.id
        )
        if verdict.promote and not promoted:
            version.decision = "rejected"
            version.reason = "the champion changed while this run was training"
        if promoted:
            _announce(session, version, run.id)
        decision = {"promoted": promoted, "reason": version.reason, "version": version.version}
        report = {**(run.report or {}), "timings": timings, "decision": decision}
        report["rescore"] = {"status": "pending" if promoted else "skipped"}
        runs.finish(
            run,
            "succeeded" if promoted else "rejected",
            stage="rescore" if promoted else "done",
            model_version_id=version.id,
            report=report,
        )
        return run.status


def _new_version(
    session: Session,
    work: training.Work,
    scores: dict[str, Scores],
    verdict: PromotionDecision,
    stored: artifacts.StoredArtifact,
    timings: dict[str, float],
) -> ModelVersion:
    project, labels = work.project, work.snapshot.labels
    last = session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.project_id == project.id)
    )
    champion = scores.get("champion")
    version = ModelVersion(
        project_id=project.id,
        version=(last or 0) + 1,
        spec=work.spec,
        artifact_path=stored.path,
        sha256=stored.sha256,
        metrics=_clean(scores["candidate"].metrics),
        per_class=_clean(scores["candidate"].per_class),
        baseline_metrics=_clean(scores["baseline"].metrics),
        champion_metrics=None if champion is None else _clean(champion.metrics),
        decision="promoted" if verdict.promote else "rejected",
        reason=verdict.summary,
        watermark=labels.watermark,
        train_size=len(labels.train),
        holdout_size=len(labels.holdout),
        snapshot_digest=labels.digest,
        library_versions=library_versions(),
        timings=dict(timings),
        routing=routing_of(project),
        incremental=work.plan.incremental,
        parent_id=work.champion.version.id if work.champion is not None else None,
    )
    session.add(version)
    session.flush()
    return version


def routing_of(project: Project) -> dict[str, Any]:
    """The routing settings a version is saved with (a rollback restores them)."""
    return {
        "threshold": project.threshold,
        "strategy": project.strategy,
        "audit_rate": project.audit_rate,
    }


def _clean(values: Any) -> dict[str, float | None]:
    """JSON has no NaN: store a missing metric as null."""
    return {k: (None if v != v else float(v)) for k, v in dict(values).items()}


def _swap_champion(session: Session, project_id: int, expected: int | None, new: int) -> bool:
    current = Project.champion_id.is_(None) if expected is None else Project.champion_id == expected
    result = session.execute(
        update(Project).where(Project.id == project_id, current).values(champion_id=new)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _announce(session: Session, version: ModelVersion, run_id: int) -> None:
    """Audit the promotion and queue the re-score and the notification."""
    project_id = version.project_id
    session.add(
        AuditEvent(
            actor_id=None,
            project_id=project_id,
            action="promote",
            detail={"version": version.version, "run_id": run_id},
        )
    )
    session.add(OutboxMessage(kind="rescore", payload={"project_id": project_id, "run_id": run_id}))
    session.add(
        OutboxMessage(
            kind="promoted", payload={"project_id": project_id, "version": version.version}
        )
    )
