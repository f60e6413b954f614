"""The model work of one run: read the snapshot, fit (full or incremental), judge on the holdout."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier
from sqlalchemy.orm import Session

from feedback.artifacts import ArtifactError
from feedback.db.models import ModelVersion, Project
from feedback.domain import incremental, pipelines
from feedback.domain.evaluation import Holdout, inputs_digest, no_scores
from feedback.domain.promotion import Scores
from feedback.services import snapshots
from feedback.services.models import load_checked

log = logging.getLogger(__name__)
# Hashed holdouts kept per worker process (one per project, the most recent projects): a
# 2,500-text holdout hashed into 2**20 columns is about 5 MB and 0.1 s of hashing per run.
FEATURISED_HOLDOUTS = 4
_featurised: OrderedDict[tuple[int, str], list[tuple[Any, Any]]] = OrderedDict()
_featurised_lock = threading.Lock()


class Timer:
    """Seconds spent per stage of a run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Add the time the block takes to `stage`."""
        began = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - began
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + spent, 4)


@dataclass(frozen=True)
class Champion:
    """The champion a run started from: its version, and its model if the file verified."""

    version: ModelVersion
    model: Any | None
    error: str | None


@dataclass(frozen=True)
class Work:
    """Everything one run reads before it fits."""

    project: Project
    champion: Champion | None
    plan: incremental.Plan
    snapshot: snapshots.Snapshot

    @property
    def spec(self) -> str:
        return pipelines.resolve_spec(self.project.model_spec, self.project.input_kind)


def prepare(session: Session, project: Project, version: ModelVersion | None) -> Work:
    """Read the labels, load the champion, choose full or incremental, read the inputs."""
    since = version.watermark if version is not None else 0
    with ThreadPoolExecutor(1, thread_name_prefix="champion") as pool:
        # the champion's file is read and hashed while the database sends the labels
        loading = pool.submit(load_champion, version, project.trusted_types or ())
        labels = snapshots.read_labels(session, project, since if project.incremental else 0)
        champion = loading.result()
    spec = pipelines.resolve_spec(project.model_spec, project.input_kind)
    parent = None  # only incremental mode continues from the champion
    if project.incremental:
        parent = _parent(session, champion, labels, project.full_refit_every)
    new = sum(1 for e in labels.train if e.decision_id > since)
    plan = incremental.plan(
        project.incremental, parent, spec, project.labels, project.full_refit_every, new
    )
    snapshot = snapshots.read_inputs(session, project, labels, since if plan.incremental else 0)
    return Work(project, champion, plan, snapshot)


def load_champion(version: ModelVersion | None, trusted: Any) -> Champion | None:
    """Load the champion, its file checked now; a refused file is reported, not raised."""
    if version is None:
        return None
    try:
        return Champion(version, load_checked(version, trusted), None)
    except ArtifactError as error:
        log.error("champion v%s refused: %s", version.version, error)
        return Champion(version, None, str(error))


def _parent(
    session: Session, champion: Champion | None, labels: snapshots.Labels, refit_every: int
) -> incremental.Parent | None:
    if champion is None or champion.model is None:
        return None
    version = champion.version
    return incremental.Parent(
        spec=version.spec,
        supports_partial_fit=incremental.supports_partial_fit(champion.model),
        classes=frozenset(str(c) for c in getattr(champion.model, "classes_", ())),
        chain=_chain(session, version, refit_every),
        unchanged=labels.digest_upto(version.watermark) == version.snapshot_digest,
    )


def _chain(session: Session, version: ModelVersion, limit: int) -> int:
    """How many incremental updates lead to `version` since its last full refit."""
    count = 0
    current: ModelVersion | None = version
    while current is not None and current.incremental and count <= limit:
        count += 1
        current = session.get(ModelVersion, current.parent_id) if current.parent_id else None
    return count


def holdout(work: Work) -> Holdout | None:
    """The run's holdout, ready to score models on (None when it is empty).

    When an earlier run in this process scored the same inputs (same sha256), their hashed
    form comes with them: a stateless step with the same parameters makes the same of them.
    """
    snapshot = work.snapshot
    if not snapshot.holdout_labels:
        return None
    inputs = pipelines.as_model_input(snapshot.holdout_inputs, work.project.input_kind)
    with _featurised_lock:
        known = _featurised.get((work.project.id, inputs_digest(inputs)), [])
    return Holdout(inputs, snapshot.holdout_labels, work.project.labels, known)


def _keep_featurised(work: Work, scoring: Holdout) -> None:
    """Keep this run's hashed holdout for the project's next run in this process."""
    featurised = scoring.featurised()
    if not featurised:
        return
    with _featurised_lock:
        for key in [k for k in _featurised if k[0] == work.project.id]:
            del _featurised[key]  # the project's older holdout is of no further use
        _featurised[(work.project.id, scoring.digest)] = featurised
        while len(_featurised) > FEATURISED_HOLDOUTS:
            _featurised.popitem(last=False)


def fit(work: Work, scoring: Holdout | None = None) -> Any:
    """Fit the candidate: update a copy of the champion, or build and fit the pipeline.

    A full refit given the holdout scores the champion on it, and puts it through the
    candidate's fitted transforms, while the candidate's final estimator fits (another core
    does that work; see `pipelines.fit_overlapped`), so `judge` has little left to do.
    """
    snapshot, kind = work.snapshot, work.project.input_kind
    inputs = pipelines.as_model_input(snapshot.train_inputs, kind)
    if work.plan.incremental and work.champion is not None:
        return incremental.partial_fit(
            work.champion.model, inputs, snapshot.train_labels, work.project.labels
        )
    if not snapshot.train_labels:
        raise ValueError("the snapshot has no training examples")
    pipeline = pipelines.build_pipeline(work.spec, kind)
    if scoring is None:
        return pipeline.fit(inputs, snapshot.train_labels)
    champion = work.champion.model if work.champion is not None else None

    def meanwhile(head: Any) -> None:
        if champion is not None:
            scoring.score(champion)
        scoring.prepare(head)

    return pipelines.fit_overlapped(pipeline, inputs, snapshot.train_labels, meanwhile)


def fit_baseline(labels: snapshots.Labels) -> DummyClassifier:
    """The most-frequent-class baseline over every training label, fitted from class counts.

    It never reads inputs, so one weighted example per class gives the same model as every
    example (and costs nothing at 100,000 labels).
    """
    counts = Counter(e.label for e in labels.train) or Counter({"?": 1})
    classes = sorted(counts)
    weights = [counts[c] for c in classes]
    return pipelines.baseline().fit(np.zeros((len(classes), 1)), classes, sample_weight=weights)


def judge(work: Work, candidate: Any, baseline: Any, scoring: Holdout | None) -> dict[str, Scores]:
    """Score candidate, baseline and champion on the same holdout (each once per `scoring`)."""
    if scoring is None:
        return {"candidate": no_scores(), "baseline": no_scores()}
    models = {"candidate": candidate, "baseline": baseline}
    if work.champion is not None and work.champion.model is not None:
        models["champion"] = work.champion.model
    scores = {name: scoring.score(model) for name, model in models.items()}
    _keep_featurised(work, scoring)
    return scores


def needs_full_refit(work: Work, scores: dict[str, Scores]) -> str:
    """Why an incremental candidate must be replaced by a full refit ("" when it need not)."""
    if not work.plan.incremental or "champion" not in scores:
        return ""
    metric = work.project.promotion_metric
    champion, candidate = scores["champion"].metrics[metric], scores["candidate"].metrics[metric]
    if not incremental.gap_too_big(metric, champion, candidate):
        return ""
    return (
        f"the incremental update ({metric} {candidate:.4f}) trailed the champion "
        f"({champion:.4f}) by more than {incremental.MAX_HOLDOUT_GAP}; refit in full"
    )


def as_full_refit(session: Session, work: Work, reason: str) -> Work:
    """The same run, planned as a full refit over every training example."""
    snapshot = snapshots.read_inputs(session, work.project, work.snapshot.labels, 0)
    return replace(work, plan=incremental.Plan(False, reason), snapshot=snapshot)
