"""Model versions: load the champion (verified, cached), describe it, re-score the queue."""

from __future__ import annotations

import platform
import threading
from collections import OrderedDict
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import numpy as np
from sqlalchemy import bindparam, select, update

from feedback import artifacts
from feedback.db.engine import Database
from feedback.db.models import Item, ModelVersion, Project
from feedback.domain import pipelines, uncertainty
from feedback.domain.errors import Unavailable
from feedback.domain.evaluation import aligned_probabilities
from feedback.services.ingest import AUDIT_PRIORITY
from feedback.services.projects import visible_project
from feedback.services.users import Principal

CACHE_SIZE = 8
RESCORE_BATCH = 1000
_cache: OrderedDict[str, Any] = OrderedDict()
_cache_lock = threading.Lock()


def library_versions() -> dict[str, str]:
    """Versions that decide whether a saved pipeline behaves the same when loaded."""
    names = ("scikit-learn", "numpy", "scipy", "skops")
    return {"python": platform.python_version(), **{n: metadata.version(n) for n in names}}


def load_version(version: ModelVersion) -> Any:
    """Load a model version's pipeline through the verified loader, cached by digest."""
    with _cache_lock:
        if version.sha256 in _cache:
            _cache.move_to_end(version.sha256)
            return _cache[version.sha256]
    model = artifacts.load(version.artifact_path, version.sha256)
    with _cache_lock:
        _cache[version.sha256] = model
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return model


def champion_metadata(db: Database, principal: Principal, slug: str) -> dict[str, Any]:
    """Describe the model now serving: version, metrics, baseline, snapshot, digest."""
    with db.read() as session:
        project = visible_project(session, principal, slug)
        version = session.get(ModelVersion, project.champion_id) if project.champion_id else None
        if version is None:
            raise Unavailable(f"project '{slug}' has no champion model yet")
        return describe(version)


def describe(version: ModelVersion) -> dict[str, Any]:
    """The public description of a model version."""
    return {
        "version": version.version,
        "created_at": version.created_at.isoformat() + "Z",
        "spec": version.spec,
        "metrics": version.metrics,
        "per_class": version.per_class,
        "baseline_metrics": version.baseline_metrics,
        "champion_metrics": version.champion_metrics,
        "decision": version.decision,
        "reason": version.reason,
        "train_size": version.train_size,
        "holdout_size": version.holdout_size,
        "watermark": version.watermark,
        "snapshot_digest": version.snapshot_digest,
        "sha256": version.sha256,
        "library_versions": version.library_versions,
        "timings": version.timings,
    }


def champion_artifact(db: Database, principal: Principal, slug: str) -> tuple[bytes, str]:
    """Return the champion's model file (verified) and its sha256."""
    with db.read() as session:
        project = visible_project(session, principal, slug)
        version = session.get(ModelVersion, project.champion_id) if project.champion_id else None
        if version is None:
            raise Unavailable(f"project '{slug}' has no champion model yet")
        return artifacts.read_verified(version.artifact_path, version.sha256), version.sha256


def predict_probabilities(version: ModelVersion, project: Project, inputs: list[Any]) -> np.ndarray:
    """Champion probabilities for stored-form inputs, one column per project label."""
    model = load_version(version)
    key = "text" if project.input_kind == "text" else "features"
    features = pipelines.as_model_input([i[key] for i in inputs], project.input_kind)
    return aligned_probabilities(model, features, project.labels)


def rescore_queue(db: Database, project_id: int) -> int:
    """Re-score every waiting item with the current champion, batch by batch; return the count."""
    with db.read() as session:
        project = session.get_one(Project, project_id)
        version = session.get(ModelVersion, project.champion_id) if project.champion_id else None
    if version is None:
        return 0
    done, after = 0, 0
    while True:
        with db.read() as session:
            rows = session.execute(
                select(Item.id, Item.input, Item.route)
                .where(Item.project_id == project_id, Item.status == "queued", Item.id > after)
                .order_by(Item.id)
                .limit(RESCORE_BATCH)
            ).all()
        if not rows:
            return done
        _write_scores(db, project, version, rows)
        done, after = done + len(rows), rows[-1].id


def _write_scores(
    db: Database, project: Project, version: ModelVersion, rows: Sequence[Any]
) -> None:
    probabilities = predict_probabilities(version, project, [r.input for r in rows])
    scores = uncertainty.score(project.strategy, probabilities)
    params = [
        {
            "b_id": row.id,
            "b_unc": float(score),
            "b_pri": AUDIT_PRIORITY if row.route == "audit" else float(score),
            "b_probs": dict(zip(project.labels, map(float, probs), strict=True)),
            "b_ver": str(version.version),
        }
        for row, score, probs in zip(rows, scores, probabilities, strict=True)
    ]
    items = Item.__table__
    statement = (
        update(items)  # type: ignore[arg-type]
        .where(items.c.id == bindparam("b_id"), items.c.status == "queued")
        .values(
            uncertainty=bindparam("b_unc"),
            priority=bindparam("b_pri"),
            probabilities=bindparam("b_probs"),
            model_version=bindparam("b_ver"),
        )
    )
    with db.transaction() as session:
        session.execute(statement, params)
