"""Model versions: load the champion (verified, cached), describe it, re-score the queue."""

from __future__ import annotations

import functools
import logging
import platform
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from importlib import metadata
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from feedback import artifacts
from feedback.db.engine import Database
from feedback.db.models import Item, ModelVersion, Project, RetrainRun
from feedback.domain import pipelines, uncertainty
from feedback.domain.errors import Unavailable
from feedback.domain.evaluation import aligned_probabilities
from feedback.services.ingest import AUDIT_PRIORITY
from feedback.services.item_rows import json_key, json_numbers
from feedback.services.projects import visible_project
from feedback.services.users import Principal

log = logging.getLogger(__name__)
CACHE_SIZE = 8
# Items re-scored per transaction: feature rows are small; a text can be 100,000 characters.
RESCORE_BATCH = {"features": 5000, "text": 1000}
_cache: OrderedDict[tuple[str, frozenset[str]], Any] = OrderedDict()
_cache_lock = threading.Lock()


def library_versions() -> dict[str, str]:
    """Versions that decide whether a saved pipeline behaves the same when loaded."""
    return dict(_imported_versions())


@functools.cache
def _imported_versions() -> tuple[tuple[str, str], ...]:
    """Read once per process: the libraries it imported cannot change under it."""
    names = ("scikit-learn", "numpy", "scipy", "skops")
    return (("python", platform.python_version()), *((n, metadata.version(n)) for n in names))


def load_version(version: ModelVersion, trusted_types: Iterable[str] = ()) -> Any:
    """Load a version's pipeline through the verified loader, cached by digest and allowlist.

    Raises:
        ArtifactError: the file is missing, does not match its sha256, or holds a type
            outside the allowlist (the built-ins' plus `trusted_types`).
    """
    key = (version.sha256, frozenset(trusted_types))
    model = _cached(key)
    if model is None:
        model = _remember(key, artifacts.load(version.artifact_path, version.sha256, key[1]))
    return model


def load_checked(version: ModelVersion, trusted_types: Iterable[str] = ()) -> Any:
    """Check the version's file against its sha256 now, then load it like `load_version`.

    A retrain run judges the champion with this: a file tampered with since the model was
    cached is refused, while an intact one is not rebuilt (reading and hashing it costs a
    few milliseconds; rebuilding it from skops ten times more).

    Raises:
        ArtifactError: as `load_version`.
    """
    data = artifacts.read_verified(version.artifact_path, version.sha256)
    key = (version.sha256, frozenset(trusted_types))
    model = _cached(key)
    if model is None:
        model = _remember(key, artifacts.build(data, version.artifact_path, key[1]))
    return model


def _cached(key: tuple[str, frozenset[str]]) -> Any | None:
    with _cache_lock:
        if key not in _cache:
            return None
        _cache.move_to_end(key)
        return _cache[key]


def _remember(key: tuple[str, frozenset[str]], model: Any) -> Any:
    with _cache_lock:
        _cache[key] = model
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
        return {**describe(version), "champion": True}


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
        "routing": version.routing,
        "incremental": version.incremental,
    }


def champion_artifact(db: Database, principal: Principal, slug: str) -> tuple[bytes, str]:
    """Return the champion's model file (verified) and its sha256."""
    with db.read() as session:
        project = visible_project(session, principal, slug)
        version = session.get(ModelVersion, project.champion_id) if project.champion_id else None
        if version is None:
            raise Unavailable(f"project '{slug}' has no champion model yet")
    try:
        return artifacts.read_verified(version.artifact_path, version.sha256), version.sha256
    except artifacts.ArtifactError as error:
        raise Unavailable(f"the champion's model file was refused: {error}") from error


def predict_probabilities(version: ModelVersion, project: Project, inputs: list[Any]) -> np.ndarray:
    """Champion probabilities for stored-form inputs, one column per project label.

    Raises:
        Unavailable: the champion's file was refused (tampered, missing, foreign types).
    """
    try:
        model = load_version(version, project.trusted_types or ())
    except artifacts.ArtifactError as error:
        raise Unavailable(f"the champion's model file was refused: {error}") from error
    key = pipelines.input_key(project.input_kind)
    features = pipelines.as_model_input([i[key] for i in inputs], project.input_kind)
    return aligned_probabilities(model, features, project.labels)


def rescore_queue(db: Database, project_id: int, run_id: int | None = None) -> int:
    """Re-score every waiting item with the current champion, batch by batch; return the count.

    Stops early when the champion changes meanwhile: the change queued its own re-score.
    """
    began = time.perf_counter()
    with db.read() as session:
        project = session.get(Project, project_id)
        version = None
        if project is not None and project.champion_id is not None:
            version = session.get(ModelVersion, project.champion_id)
        total = session.scalar(
            select(func.count(Item.id)).where(
                Item.project_id == project_id, Item.status == "queued"
            )
        )
    if project is None or version is None:
        _progress(db, run_id, {"status": "skipped"}, done=True)
        return 0
    try:
        done, complete = _rescore_batches(db, project, version, run_id, int(total or 0))
    except Unavailable as error:  # the champion's file was refused: say so on the run
        log.error("re-scoring project %s stopped: %s", project_id, error.message)
        _progress(db, run_id, {"status": "failed", "error": error.message}, done=True)
        return 0
    finished: dict[str, Any] = {"status": "done" if complete else "superseded", "items": done}
    finished["seconds"] = round(time.perf_counter() - began, 4)
    _progress(db, run_id, finished, done=True)
    return done


def _rescore_batches(
    db: Database, project: Project, version: ModelVersion, run_id: int | None, total: int
) -> tuple[int, bool]:
    """Re-score batch after batch; return the count and whether the champion held throughout."""
    done, after, batch = 0, 0, RESCORE_BATCH.get(project.input_kind, 1000)
    while True:
        with db.read() as session:
            rows = (
                session.connection()  # Core rows: no ORM bookkeeping per item
                .execute(  # in storage order (ix_items_status_id): a batch shares its pages
                    select(Item.id, Item.input, Item.route)
                    .where(Item.project_id == project.id, Item.status == "queued", Item.id > after)
                    .order_by(Item.id)
                    .limit(batch)
                )
                .all()
            )
        if not rows:
            return done, True
        progress = {"status": "running", "items": done + len(rows), "total": total}
        if not _write_scores(db, project, version, rows, run_id, progress):
            log.info("champion of project %s changed; this re-score stops", project.id)
            return done, False
        done, after = done + len(rows), rows[-1].id


def _write_scores(
    db: Database,
    project: Project,
    version: ModelVersion,
    rows: Sequence[Any],
    run_id: int | None,
    progress: dict[str, Any],
) -> bool:
    probabilities = predict_probabilities(version, project, [r.input for r in rows])
    scores = uncertainty.score(project.strategy, probabilities).tolist()
    keys = [json_key(label) for label in project.labels]
    number = str(version.version)
    params = [
        (
            score,
            AUDIT_PRIORITY if row.route == "audit" else score,
            json_numbers(keys, probs),
            number,
            row.id,
        )
        for row, score, probs in zip(rows, scores, probabilities.tolist(), strict=True)
    ]
    with db.transaction() as session:
        current = session.scalar(select(Project.champion_id).where(Project.id == project.id))
        if current != version.id:
            return False
        connection = session.connection()  # the driver's executemany: no per-row processing
        connection.exec_driver_sql(_SCORE_UPDATE[connection.dialect.name], params)
        _merge_progress(session, run_id, progress)
    return True


_SCORE_UPDATE = {
    "sqlite": "UPDATE items SET uncertainty = ?, priority = ?, probabilities = ?, "
    "model_version = ? WHERE id = ? AND status = 'queued'",
    "postgresql": "UPDATE items SET uncertainty = %s, priority = %s, probabilities = %s::json, "
    "model_version = %s WHERE id = %s AND status = 'queued'",
}


def _progress(db: Database, run_id: int | None, values: dict[str, Any], done: bool) -> None:
    if run_id is None:
        return
    with db.transaction() as session:
        _merge_progress(session, run_id, values, done)


def _merge_progress(
    session: Session, run_id: int | None, values: dict[str, Any], done: bool = False
) -> None:
    """Record re-score progress on the run that promoted the model."""
    run = session.get(RetrainRun, run_id) if run_id is not None else None
    if run is None:
        return
    run.report = {**(run.report or {}), "rescore": values}
    if done and run.stage == "rescore":
        run.stage = "done"
