"""Retraining: the Celery path's overhead, incremental updates, and re-scoring the queue.

Three ratios, each measured side by side in one run against its reference (embedded
setting: SQLite file, kombu's `filesystem://` broker):

1. Celery end-to-end retrain (request written -> run ended, through a real beat and worker)
   / in-process `fit` of the same pipeline on the same training examples (50,000 synthetic
   60-word texts). Goal <= 1.10. Also reported: the same run executed in-process on a copy
   of the database (what Celery itself adds), the dispatch latency and the worker's stages.
2. Incremental update (fit stage folding 1,000 new labels into the champion) / full refit
   (fit stage over all of them) at 100,000 labels, through the retrain service, with the
   holdout accuracy gap between the two. Goals <= 0.01 and <= 1 point.
3. Re-scoring 100,000 queued items with the new champion / the retrain that promoted it.
   Goal <= 2.

`.venv/bin/python -m benchmarks.retrain [--smoke]` prints the result as JSON.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, select, update

from benchmarks import common
from feedback.config import Settings
from feedback.db.engine import Database, make_database
from feedback.db.migrate import upgrade
from feedback.db.models import Decision, Item, ModelVersion, Project, RetrainRun
from feedback.domain import pipelines
from feedback.services import models, projects, retrain, snapshots
from feedback.services.seed_files import Example
from feedback.services.users import Principal

ADMIN = Principal(user_id=None, role="admin")
TICK_SECONDS = 0.5
WORDS = [f"w{i}" for i in range(3000)]
FEATURES = 20
NEW_LABELS = 1000


@dataclass(frozen=True)
class Sizes:
    runs: int
    celery_runs: int
    texts: int
    labels: int
    queue: int


FULL = Sizes(runs=7, celery_runs=7, texts=50_000, labels=100_000, queue=100_000)
SMOKE = Sizes(runs=2, celery_runs=1, texts=1_000, labels=5_000, queue=5_000)


def texts(count: int, seed: int) -> list[Example]:
    """Synthetic reviews of 60 words: 20 from the class's side of the vocabulary, 40 at random."""
    rng = np.random.default_rng(seed)
    out = []
    for label in rng.integers(0, 2, count):
        own = rng.choice(WORDS[:1600] if label else WORDS[1400:], 20)
        text = " ".join(np.concatenate([own, rng.choice(WORDS, 40)]))
        out.append(Example({"text": text}, "pos" if label else "neg"))
    return out


def points(count: int, seed: int) -> list[Example]:
    """Two overlapping classes in 20 features (two carry the signal)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    centre = np.zeros(FEATURES)
    centre[:2] = [1.0, 0.6]
    x = np.where(labels[:, None] == 1, 1.0, -1.0) * centre + rng.normal(0, 1, (count, FEATURES))
    return [
        Example({"features": row.round(4).tolist()}, "pos" if y else "neg")
        for row, y in zip(x, labels, strict=True)
    ]


def make_project(db: Database, slug: str, kind: str, seed: list[Example], **values: Any) -> int:
    features = [f"f{i}" for i in range(FEATURES)] if kind == "features" else None
    spec = projects.ProjectSpec(
        slug=slug,
        labels=["neg", "pos"],
        input_kind=kind,
        features=features,
        audit_rate=0.0,
        promotion_min_holdout=10,
        holdout_share=0.05,
    )
    project_id = projects.create_project(db, spec, seed)
    if values:
        with db.transaction() as session:
            session.execute(update(Project).where(Project.id == project_id).values(**values))
    return project_id


def add_items(db: Database, project_id: int, examples: list[Example], status: str) -> None:
    """Store decided labels (status "decided") or queued items, in one commit."""
    with db.transaction() as session:
        first = (session.scalar(select(Item.id).order_by(Item.id.desc()).limit(1)) or 0) + 1
        rows = [
            {
                "project_id": project_id,
                "external_id": f"b-{first + i}",
                "input": e.input,
                "route": "review",
                "status": status,
                "is_holdout": False,
                "uncertainty": 0.5,
                "priority": 0.5,
                "fence": 0,
            }
            for i, e in enumerate(examples)
        ]
        ids = session.scalars(insert(Item).returning(Item.id, sort_by_parameter_order=True), rows)
        if status == "decided":
            session.execute(
                insert(Decision),
                [
                    {
                        "item_id": item_id,
                        "project_id": project_id,
                        "label": e.label,
                        "source": "bench",
                    }
                    for item_id, e in zip(ids.all(), examples, strict=True)
                ],
            )


def execute(db: Database, settings: Settings, slug: str) -> tuple[RetrainRun, ModelVersion, float]:
    """Request and run one retrain in-process; return the run, its version and wall seconds."""
    began = time.perf_counter()
    run_id = retrain.request_retrain(db, ADMIN, slug)
    retrain.execute_retrain(db, settings, run_id)
    seconds = time.perf_counter() - began
    with db.read() as session:
        run = session.get_one(RetrainRun, run_id)
        assert run.model_version_id is not None, run.error
        return run, session.get_one(ModelVersion, run.model_version_id), seconds


# ------------------------------------------------------------------ 1. Celery end to end


def celery_vs_fit(folder: Path, sizes: Sizes) -> dict[str, list[float]]:
    """Alternate: a retrain through beat + worker, the same run in-process on a copy of the
    database (Celery's own cost), and the same pipeline fitted in-process (the goal's base)."""
    instance = folder / "celery"
    url = f"sqlite:///{instance / 'feedback.db'}"
    instance.mkdir()
    upgrade(url)
    db = make_database(url)
    make_project(db, "reviews", "text", texts(sizes.texts, seed=1))
    local = copy_database(folder / "local", instance / "feedback.db")
    env = common.clean_env(
        FEEDBACK_INSTANCE_PATH=str(instance),
        FEEDBACK_DATABASE_URL=url,
        FEEDBACK_BROKER_URL="filesystem://",
        FEEDBACK_TICK_SECONDS=str(TICK_SECONDS),
        FEEDBACK_SECRET_KEY="bench-" + "x" * 40,
    )
    logs = folder / "logs"
    worker = [
        sys.executable,
        "-m",
        "workers",
        "worker",
        "--concurrency=1",
        "--without-mingle",
        "--without-gossip",
    ]
    started = [
        common.start_process("worker", worker, env, logs),
        common.start_process("beat", [sys.executable, "-m", "workers", "beat"], env, logs),
    ]
    found: dict[str, list[float]] = {}
    try:
        for index in range(sizes.celery_runs + 1):  # the first run warms the worker up
            measured = one_celery_pair(db, started)
            measured["inprocess_run_s"] = execute(local[0], local[1], "reviews")[2]
            measured["celery_ratio"] = measured["celery_run_s"] / measured["inprocess_fit_s"]
            measured["celery_wall_ratio"] = measured["celery_wall_s"] / measured["inprocess_fit_s"]
            ratio = measured["celery_run_s"] / measured["inprocess_run_s"]
            measured["celery_vs_inprocess_run"] = ratio
            for key, value in measured.items():
                if index:
                    found.setdefault(key, []).append(value)
            common.say(", ".join(f"{k} {v:.3f}" for k, v in measured.items()))
    finally:
        for process in started:
            common.stop_process(process)
        db.dispose()
        local[0].dispose()
    return found


def copy_database(instance: Path, source: Path) -> tuple[Database, Settings]:
    """The same data in another SQLite file, for in-process runs nothing else touches."""
    instance.mkdir()
    with sqlite3.connect(source) as original, sqlite3.connect(instance / "feedback.db") as copy:
        original.backup(copy)
    url = f"sqlite:///{instance / 'feedback.db'}"
    settings = Settings(
        instance_path=instance,
        database_url=url,
        broker_url="filesystem://",
        secret_key="bench-" + "x" * 40,
    )
    return make_database(url), settings


def one_celery_pair(db: Database, watch: list[common.Process]) -> dict[str, float]:
    """One run through Celery, then the pipeline fitted in-process on exactly that run's
    training examples.

    The run's time is from its request row being written to the run ending, both stamped
    when they happen (`requested_at`, `finished_at`), so how often this process looks does
    not change it; the wall time this process saw (the request's own transaction and up to
    one look at the run later) is reported next to it.
    """
    began = time.perf_counter()
    run_id = retrain.request_retrain(db, ADMIN, "reviews")

    def ended() -> RetrainRun | None:
        with db.read() as session:
            run = session.get_one(RetrainRun, run_id)
            return None if run.status in retrain.ACTIVE else run

    run = common.wait_until("the run to end", ended, 1800, watch, interval=0.05)
    wall = time.perf_counter() - began
    assert run.status in ("succeeded", "rejected"), run.error
    with db.read() as session:
        project = session.scalars(select(Project).where(Project.slug == "reviews")).one()
        labels = snapshots.read_labels(session, project)
        snapshot = snapshots.read_inputs(session, project, labels)
    pipeline = pipelines.build_pipeline(project.model_spec, "text")
    _, fit = common.timed(lambda: pipeline.fit(snapshot.train_inputs, snapshot.train_labels))
    stages = (run.report or {}).get("timings", {})
    assert run.started_at is not None
    assert run.finished_at is not None
    return {
        "celery_run_s": (run.finished_at - run.requested_at).total_seconds(),
        "celery_wall_s": wall,
        "inprocess_fit_s": fit,
        "dispatch_s": (run.started_at - run.requested_at).total_seconds(),
        "worker_run_s": (run.finished_at - run.started_at).total_seconds(),
        **{f"worker_{stage}_s": float(seconds) for stage, seconds in stages.items()},
    }


# ------------------------------------------------- 2. incremental and 3. re-scoring the queue


def incremental_and_rescore(folder: Path, sizes: Sizes) -> dict[str, list[float]]:
    """Per repetition: fold in 1,000 new labels, then refit in full, then re-score the queue."""
    instance = folder / "incremental"
    url = f"sqlite:///{instance / 'feedback.db'}"
    instance.mkdir()
    upgrade(url)
    db = make_database(url)
    settings = Settings(
        instance_path=instance,
        database_url=url,
        broker_url="filesystem://",
        secret_key="bench-" + "x" * 40,
    )
    seed = points(int(sizes.labels / 0.95), seed=2)  # 5% of the seed becomes holdout
    project_id = make_project(
        db,
        "points",
        "features",
        seed,
        model_spec="features-sgd",
        incremental=True,
        full_refit_every=10**6,
        promotion_min_gain=-1.0,
    )
    add_items(db, project_id, points(sizes.queue, seed=3), status="queued")
    execute(db, settings, "points")  # the first champion
    found: dict[str, list[float]] = {
        key: []
        for key in (
            "incremental_fit_s",
            "full_fit_s",
            "fit_ratio",
            "incremental_run_s",
            "full_run_s",
            "run_ratio",
            "accuracy_gap_points",
            "rescore_s",
            "retrain_s",
            "rescore_ratio",
        )
    }
    try:
        for rep in range(sizes.runs):
            one_repetition(db, settings, project_id, rep, found)
    finally:
        db.dispose()
    return found


def one_repetition(
    db: Database, settings: Settings, project_id: int, rep: int, found: dict[str, list[float]]
) -> None:
    add_items(db, project_id, points(NEW_LABELS, seed=100 + rep), status="decided")
    inc_run, inc, inc_s = execute(db, settings, "points")
    assert inc.incremental
    assert inc_run.report
    assert inc_run.report["fitted_on"] == NEW_LABELS
    set_incremental(db, project_id, False)
    _full_run, full, full_s = execute(db, settings, "points")  # same snapshot, refit in full
    set_incremental(db, project_id, True)
    assert not full.incremental, full.reason
    assert full.decision == "promoted", full.reason
    rescored, rescore_s = common.timed(lambda: models.rescore_queue(db, project_id))
    found["incremental_fit_s"].append(inc.timings["fit"])
    found["full_fit_s"].append(full.timings["fit"])
    found["fit_ratio"].append(inc.timings["fit"] / full.timings["fit"])
    found["incremental_run_s"].append(inc_s)
    found["full_run_s"].append(full_s)
    found["run_ratio"].append(inc_s / full_s)
    found["accuracy_gap_points"].append(100 * (full.metrics["accuracy"] - inc.metrics["accuracy"]))
    found["rescore_s"].append(rescore_s)
    found["retrain_s"].append(full_s)
    found["rescore_ratio"].append(rescore_s / full_s)
    common.say(
        f"rep {rep}: incremental fit {inc.timings['fit']:.4f}s, full fit "
        f"{full.timings['fit']:.3f}s, re-scored {rescored} in {rescore_s:.2f}s"
    )


def set_incremental(db: Database, project_id: int, on: bool) -> None:
    with db.transaction() as session:
        session.execute(update(Project).where(Project.id == project_id).values(incremental=on))


# ------------------------------------------------------------------------------ the report


def run(smoke: bool) -> dict[str, Any]:
    """Measure the three ratios on the embedded setting."""
    started_load = common.load_average()
    sizes = SMOKE if smoke else FULL
    with tempfile.TemporaryDirectory(prefix="feedback-bench-retrain-") as name:
        folder = Path(name)
        celery = celery_vs_fit(folder, sizes)
        local = incremental_and_rescore(folder, sizes)
    metrics: dict[str, Any] = {}
    for key, values in {**celery, **local}.items():
        stats = common.summary(values)
        for stat in ("median", "min", "max"):
            metrics[f"{key}_{stat}"] = stats[stat]
    metrics |= {
        "texts": sizes.texts,
        "labels": sizes.labels,
        "queue": sizes.queue,
        "new_labels_per_update": NEW_LABELS,
        "tick_seconds": TICK_SECONDS,
        "dispatch_seconds": Settings.dispatch_seconds,
    }
    return {
        "name": "retrain",
        "machine_note": common.machine_note(started_load),
        "metrics": metrics,
        "goals": [
            common.at_most(
                "Celery end-to-end retrain / in-process fit of the same pipeline",
                metrics["celery_ratio_median"],
                1.10,
            ),
            common.at_most(
                f"incremental update / full refit at {sizes.labels:,} labels (fit stage)",
                metrics["fit_ratio_median"],
                0.01,
            ),
            common.at_most(
                "holdout accuracy, full refit minus incremental (points)",
                metrics["accuracy_gap_points_median"],
                1.0,
            ),
            common.at_most(
                f"re-scoring {sizes.queue:,} queued items / the retrain before it",
                metrics["rescore_ratio_median"],
                2.0,
            ),
        ],
        "runs": sizes.runs,
        "notes": {
            f"incremental update / full refit at {sizes.labels:,} labels (fit stage)": (
                "The update's fit stage is a fixed cost of about 3 ms whatever the number of "
                "new labels: scikit-learn's own per-call work (StandardScaler.partial_fit about "
                "0.9 ms and SGDClassifier.partial_fit about 1.1 ms on 1,000 rows, the copy of "
                "the champion 0.2 ms, turning the stored feature lists into an array 0.35 ms), "
                "against a full refit of under 0.3 s at 100,000 labels, so the ratio sits at "
                "the goal and runs fall on both sides of it (see fit_ratio_min and _max)."
            ),
            "Celery end-to-end retrain / in-process fit of the same pipeline": (
                "The end-to-end time (request row written -> run ended, celery_run_s; the "
                "wall time seen by the requester is celery_wall_s) also waits for beat to "
                "hand the request to the broker (every 0.05 s) and for the worker to take it "
                "(see dispatch_s), reads the snapshot from SQL and writes the model file "
                "(worker_snapshot_s, worker_save_s); scoring the champion and putting the "
                "holdout through the candidate's transforms overlap the fit of its final "
                "estimator. Celery's own cost is celery_vs_inprocess_run, the same run "
                "executed in-process on a copy of the database."
            ),
        },
    }


if __name__ == "__main__":
    print(json.dumps(run("--smoke" in sys.argv[1:]), indent=2))
