"""Lineage: every version's snapshot, and what changed between two versions (or since one)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from feedback.db.engine import Database
from feedback.db.models import Decision, Item, ModelVersion, Project, RetrainRun
from feedback.domain.errors import FieldError, InvalidInput
from feedback.services.models import describe
from feedback.services.projects import visible_project
from feedback.services.schedule import snapshot_time
from feedback.services.users import Principal

VERSIONS_SHOWN = 200


def list_versions(db: Database, principal: Principal, slug: str) -> list[dict[str, Any]]:
    """Every version of a project, newest first, the champion marked."""
    with db.read() as session:
        project = visible_project(session, principal, slug)
        versions = session.scalars(
            select(ModelVersion)
            .where(ModelVersion.project_id == project.id)
            .order_by(ModelVersion.version.desc())
            .limit(VERSIONS_SHOWN)
        )
        return [{**describe(v), "champion": v.id == project.champion_id} for v in versions]


def version_detail(db: Database, principal: Principal, slug: str, number: int) -> dict[str, Any]:
    """One version with its lineage: parent, the run that made it and that run's report."""
    with db.read() as session:
        project = visible_project(session, principal, slug)
        return _detail(session, project, number)


def _detail(session: Session, project: Project, number: int) -> dict[str, Any]:
    version = find_version(session, project, number, "version")
    parent = session.get(ModelVersion, version.parent_id) if version.parent_id else None
    run = _run_of(session, version)
    return {
        **describe(version),
        "champion": version.id == project.champion_id,
        "parent_version": parent.version if parent is not None else None,
        "run": None
        if run is None
        else {"id": run.id, "trigger": run.trigger, "report": run.report},
    }


def find_version(session: Session, project: Project, number: int, field: str) -> ModelVersion:
    """The project's version `number`, or InvalidInput naming `field`."""
    version = session.scalar(
        select(ModelVersion).where(
            ModelVersion.project_id == project.id, ModelVersion.version == number
        )
    )
    if version is None:
        message = f"project '{project.slug}' has no version {number}"
        raise InvalidInput(message, [FieldError(field, message)])
    return version


def _run_of(session: Session, version: ModelVersion) -> RetrainRun | None:
    return session.scalar(
        select(RetrainRun).where(RetrainRun.model_version_id == version.id).limit(1)
    )


def changes_since(
    db: Database, principal: Principal, slug: str, since: int, until: int | None = None
) -> dict[str, Any]:
    """What changed in the training data and the models from version `since` to `until`.

    Without `until`, compare with the data as it is now (what the next run would see).

    Raises:
        NotFound: no such project, or the caller may not see it.
        InvalidInput: no such version (field `since` or `until`), or `until` precedes `since`.
    """
    with db.read() as session:
        project = visible_project(session, principal, slug)
        return _changes(session, project, since, until)


def _changes(session: Session, project: Project, since: int, until: int | None) -> dict[str, Any]:
    base = find_version(session, project, since, "since")
    end = find_version(session, project, until, "until") if until is not None else None
    if end is not None and end.version < base.version:
        message = "'until' must be a version after 'since'"
        raise InvalidInput(message, [FieldError("until", message)])
    upper = end.watermark if end is not None else _current_watermark(session, project)
    began = snapshot_time(_run_of(session, base)) or base.created_at
    ended = (snapshot_time(_run_of(session, end)) or end.created_at) if end else None
    return {
        "since": _brief(base),
        "until": _brief(end) if end is not None else {"version": None, "watermark": upper},
        "new_labels": _new_labels(session, project, base.watermark, upper),
        "corrections": _corrections(session, project, base.watermark, began, ended),
        "versions": _between(session, project, base, end),
        "train_size_change": (end.train_size - base.train_size) if end else None,
        "metrics_change": _metrics_change(base, end),
        "same_training_data": (end.snapshot_digest == base.snapshot_digest) if end else None,
    }


def _brief(version: ModelVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "watermark": version.watermark,
        "snapshot_digest": version.snapshot_digest,
        "train_size": version.train_size,
        "decision": version.decision,
    }


def _current_watermark(session: Session, project: Project) -> int:
    found = session.scalar(select(func.max(Decision.id)).where(Decision.project_id == project.id))
    return int(found or 0)


def _new_labels(session: Session, project: Project, low: int, high: int) -> dict[str, Any]:
    rows = session.execute(
        select(Decision.label, Item.is_holdout, func.count(Decision.id))
        .join(Item, Item.id == Decision.item_id)
        .where(Decision.project_id == project.id, Decision.id > low, Decision.id <= high)
        .group_by(Decision.label, Item.is_holdout)
    ).all()
    training = {label: n for label, holdout, n in rows if not holdout and label in project.labels}
    return {
        "training": sum(training.values()),
        "holdout": sum(n for _, holdout, n in rows if holdout),
        "excluded": sum(n for label, _, n in rows if label not in project.labels),
        "by_label": dict(sorted(training.items())),
    }


def _corrections(
    session: Session, project: Project, watermark: int, began: datetime, ended: datetime | None
) -> dict[str, Any]:
    """Labels of already-trained examples that were corrected after the base snapshot."""
    query = (
        select(Decision.previous_label, Decision.label, func.count(Decision.id))
        .where(
            Decision.project_id == project.id,
            Decision.id <= watermark,
            Decision.corrected_at > began,
        )
        .group_by(Decision.previous_label, Decision.label)
    )
    if ended is not None:
        query = query.where(Decision.corrected_at <= ended)
    changes = [{"from": old, "to": new, "count": n} for old, new, n in session.execute(query)]
    return {"total": sum(c["count"] for c in changes), "changes": changes}


def _between(
    session: Session, project: Project, base: ModelVersion, end: ModelVersion | None
) -> list[dict[str, Any]]:
    query = select(ModelVersion).where(
        ModelVersion.project_id == project.id, ModelVersion.version > base.version
    )
    if end is not None:
        query = query.where(ModelVersion.version <= end.version)
    versions = session.scalars(query.order_by(ModelVersion.version).limit(VERSIONS_SHOWN))
    return [
        {**_brief(v), "reason": v.reason, "metrics": v.metrics, "incremental": v.incremental}
        for v in versions
    ]


def _metrics_change(base: ModelVersion, end: ModelVersion | None) -> dict[str, float] | None:
    if end is None:
        return None
    return {
        name: round(end.metrics[name] - value, 6)
        for name, value in base.metrics.items()
        if value is not None and end.metrics.get(name) is not None
    }
