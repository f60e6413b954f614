"""What the API and the run page show about a retrain run: status, stages, timings, decision."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from feedback.db.engine import Database
from feedback.db.models import ModelVersion, RetrainRun
from feedback.domain.errors import NotFound
from feedback.services.projects import visible_project
from feedback.services.runs import ACTIVE, STAGES
from feedback.services.users import Principal

# Which timings make up each stage's time on the page.
STAGE_TIMINGS = {
    "snapshot": ("snapshot",),
    "fit": ("fit", "refit", "baseline"),
    "evaluate": ("evaluate",),
    "decide": ("save", "decide"),
}


def describe_run(db: Database, principal: Principal, slug: str, run_id: int) -> dict[str, Any]:
    """One run of a project the caller may see, with progress by stage.

    Raises:
        NotFound: no such project or run, or the caller may not see the project.
    """
    with db.read() as session:
        project = visible_project(session, principal, slug)
        run = session.get(RetrainRun, run_id)
        if run is None or run.project_id != project.id:
            raise NotFound(f"no run {run_id}")
        version = None
        if run.model_version_id is not None:
            version = session.scalar(
                select(ModelVersion.version).where(ModelVersion.id == run.model_version_id)
            )
        return _view(run, version)


def _view(run: RetrainRun, version: int | None) -> dict[str, Any]:
    report = run.report or {}
    return {
        "id": run.id,
        "status": run.status,
        "stage": run.stage,
        "trigger": run.trigger,
        "attempts": run.attempts,
        "error": run.error,
        "model_version_id": run.model_version_id,
        "model_version": version,
        "requested_at": _iso(run.requested_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "active": run.status in ACTIVE or report.get("rescore", {}).get("status") in _RESCORING,
        "stages": progress(run),
        "report": report,
    }


_RESCORING = ("pending", "running")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


def progress(run: RetrainRun) -> list[dict[str, Any]]:
    """Each stage with its state (pending, running, done, failed, skipped) and its seconds."""
    report = run.report or {}
    timings: dict[str, float] = report.get("timings", {})
    states = _states(run, report)
    out = []
    for stage in STAGES:
        seconds: float | None = None
        if stage == "rescore":
            seconds = report.get("rescore", {}).get("seconds")
        elif any(name in timings for name in STAGE_TIMINGS[stage]):
            seconds = round(sum(timings.get(name, 0.0) for name in STAGE_TIMINGS[stage]), 4)
        out.append({"name": stage, "state": states[stage], "seconds": seconds})
    return out


def _states(run: RetrainRun, report: dict[str, Any]) -> dict[str, str]:
    if run.status == "requested":
        return dict.fromkeys(STAGES, "pending")
    if run.status in ("running", "failed"):
        reached = STAGES.index(run.stage) if run.stage in STAGES else 0
        here = "running" if run.status == "running" else "failed"
        return {
            stage: "done" if i < reached else here if i == reached else "pending"
            for i, stage in enumerate(STAGES)
        }
    rescore = report.get("rescore", {}).get("status", "skipped")
    shown = {"pending": "pending", "running": "running", "done": "done", "failed": "failed"}
    return {**dict.fromkeys(STAGES[:-1], "done"), "rescore": shown.get(rescore, "skipped")}
