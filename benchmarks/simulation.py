"""The headline: does the running service learn faster per human label than a random queue?

A simulated model service and simulated labelers drive `feedback run --no-demo` over HTTP:
the service posts the pool through `/predict`, the labelers claim from the queue in the
service's order and answer with the true label, and the real beat/worker retrain after every
`batch` new decisions and re-score the queue. After each round the champion is downloaded,
its sha256 checked against `/model`, loaded with `feedback.artifacts.load` and scored on a
fixed test split that nothing else sees. The same is done with a random queue (the project's
`random_share = 1.0`: every claim a uniformly random queued item), and with an in-process
reference loop (same pipeline, seeds and batch size, no service).

breast_cancer is easy: from 2 examples a class, 5 labels were often enough to reach 95% of the
full-data accuracy, so one round of 5 swung its ratios between 0, 1 and 2. It retrains every
2 labels and uses 10 seeds, which resolves labels-to-95% in steps of 2 (from 1 example a class,
some seeds' first model never beat the baseline, so there was nothing to rank the queue with);
the goal (labels to 95% of full-data accuracy, the same ratios) is unchanged.

`python -m benchmarks.simulation --help` runs a subset (data sets, seeds, strategy, random
share, modes) outside the harness while iterating.

Two labeler paces: "settled" labelers are slower than a retrain (the real case: 20 human labels
take minutes, a retrain seconds), so they wait for the retrain and re-score after each round;
"fast" labelers never wait, so labels pile up on a stale ranking while the worker trains.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split
from sqlalchemy import func, select

from benchmarks import common
from feedback import artifacts
from feedback.db.engine import Database, make_database
from feedback.db.migrate import upgrade
from feedback.db.models import Item, ModelVersion, Project, RetrainRun
from feedback.domain import pipelines, uncertainty
from feedback.domain.evaluation import aligned_probabilities
from feedback.services import projects, users
from feedback.services.seed_files import Example

TICK_SECONDS = 0.25
TEST_SHARE = 0.25
TARGET_SHARE = 0.95  # labels needed to reach 95% of the full-data accuracy
NOISE = 0.0  # share of oracle answers replaced by a wrong label
FAST_THINK_SECONDS = 0.2  # the fast labeler: about 4 labels a second, never waiting
PROBE_EVERY = 5  # the fast labeler samples the champion every 5 labels
SETTLE_SECONDS = 120.0
LABELER = "labeler@bench.invalid"
LOADERS: dict[str, Callable[[], Any]] = {
    "digits": load_digits,
    "breast_cancer": load_breast_cancer,
}


@dataclass(frozen=True)
class Config:
    """One data set's simulation: seed size, holdout, retrain batch and label budget."""

    dataset: str
    seeds: tuple[int, ...]
    per_class: int  # labelled training examples per class in the seed set
    holdout: int  # seed examples kept apart for the service's promotion gate
    batch: int  # the project's "retrain after N new decisions"
    budget: int  # human labels per run
    fast: bool = False  # also run the fast labeler
    strategy: str = projects.ProjectSpec.strategy  # the product's default
    random_share: float = projects.ProjectSpec.random_share  # of the uncertainty queue's claims


FULL = (
    Config("digits", (0, 1, 2, 3, 4), per_class=2, holdout=400, batch=20, budget=400, fast=True),
    Config("breast_cancer", tuple(range(10)), per_class=2, holdout=100, batch=2, budget=40),
)
SMOKE = (Config("digits", (0,), per_class=2, holdout=400, batch=20, budget=20),)
REFERENCE_STRATEGIES = ("least_confidence", "margin", "entropy")


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class Split:
    """One seed's data: seed (training and holdout), pool, and the fixed test split."""

    labels: list[str]
    features: list[str]
    holdout_share: float
    seed_x: np.ndarray
    seed_y: np.ndarray
    seed_holdout: list[bool]
    pool_x: np.ndarray
    pool_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    @property
    def train_x(self) -> np.ndarray:
        return np.asarray(self.seed_x[~np.array(self.seed_holdout)])

    @property
    def train_y(self) -> np.ndarray:
        return np.asarray(self.seed_y[~np.array(self.seed_holdout)])


def make_split(config: Config, seed: int) -> Split:
    """Fixed test split; per seed a stratified seed set, a holdout and the pool."""
    data = LOADERS[config.dataset]()
    x, y = np.asarray(data.data, dtype=np.float64), np.array([str(t) for t in data.target])
    labels = [str(t) for t in sorted(set(data.target))]
    rest_x, test_x, rest_y, test_y = train_test_split(
        x, y, test_size=TEST_SHARE, random_state=0, stratify=y
    )
    order = list(np.random.default_rng(seed).permutation(len(rest_y)))
    train = [
        i for label in labels for i in [j for j in order if rest_y[j] == label][: config.per_class]
    ]
    chosen = set(train)
    remaining = [i for i in order if i not in chosen]
    share, flags = holdout_flags(len(train), config.holdout)
    holdout, pool = remaining[: flags.count(True)], remaining[flags.count(True) :]
    trains, holds = iter(train), iter(holdout)
    seed_rows = [next(holds) if flag else next(trains) for flag in flags]
    return Split(
        labels=labels,
        features=[str(name) for name in data.feature_names],
        holdout_share=share,
        seed_x=rest_x[seed_rows],
        seed_y=rest_y[seed_rows],
        seed_holdout=flags,
        pool_x=rest_x[pool],
        pool_y=rest_y[pool],
        test_x=test_x,
        test_y=test_y,
    )


def holdout_flags(train: int, holdout: int) -> tuple[float, list[bool]]:
    """Place the seed so `create_project`'s fixed-seed draw holds out exactly our holdout rows.

    `create_project` marks seed row i as holdout when the i-th draw of
    `random.Random(HOLDOUT_SEED)` is below the share; we pick the share that yields about
    `holdout` rows before the `train`-th training row, and read the flags back afterwards.
    """

    def flags_for(share: float) -> list[bool]:
        draws, out = random.Random(projects.HOLDOUT_SEED), list[bool]()
        while out.count(False) < train:
            out.append(draws.random() < share)
        return out

    shares = [s / 1000 for s in range(500, 995)]
    share = min(shares, key=lambda s: abs(flags_for(s).count(True) - holdout))
    return share, flags_for(share)


def accuracy(model: Any, split: Split) -> float:
    return float(np.mean(model.predict(split.test_x) == split.test_y))


def fit(x: np.ndarray, y: np.ndarray) -> Any:
    return pipelines.build_pipeline("auto", "features").fit(x, y)


class Oracle:
    """Answers the true label, or with probability `noise` a wrong one."""

    def __init__(self, labels: list[str], seed: int, noise: float = NOISE) -> None:
        self.labels, self.noise, self.rng = labels, noise, random.Random(seed)

    def answer(self, truth: str) -> str:
        if self.noise and self.rng.random() < self.noise:
            return self.rng.choice([label for label in self.labels if label != truth])
        return truth


# ---------------------------------------------------------------- the in-process reference


def reference_curve(
    split: Split, config: Config, seed: int, strategy: str | None
) -> list[tuple[int, float]]:
    """The textbook loop: fit, pick the `batch` most uncertain (or random) pool rows, repeat."""
    oracle, rng = Oracle(split.labels, seed), np.random.default_rng(seed)
    x, y = list(split.train_x), list(split.train_y)
    pool = list(range(len(split.pool_y)))
    model = fit(np.array(x), np.array(y))
    curve = [(0, accuracy(model, split))]
    labelled = 0
    while labelled < config.budget and pool:
        take = min(config.batch, config.budget - labelled, len(pool))
        if strategy is None:
            picked = [int(i) for i in rng.choice(len(pool), size=take, replace=False)]
        else:
            probabilities = aligned_probabilities(model, split.pool_x[pool], split.labels)
            scores = uncertainty.score(strategy, probabilities)
            picked = [int(i) for i in np.argsort(-scores, kind="stable")[:take]]
        for index in picked:
            x.append(split.pool_x[pool[index]])
            y.append(oracle.answer(split.pool_y[pool[index]]))
        pool = [row for i, row in enumerate(pool) if i not in set(picked)]
        labelled += take
        model = fit(np.array(x), np.array(y))
        curve.append((labelled, accuracy(model, split)))
    return curve


def full_accuracy(split: Split) -> float:
    """Accuracy with every trainable example labelled (seed training rows plus the pool)."""
    return accuracy(
        fit(
            np.vstack([split.train_x, split.pool_x]), np.concatenate([split.train_y, split.pool_y])
        ),
        split,
    )


# ---------------------------------------------------------------- the running service


@dataclass
class Planned:
    """One simulated project: a data set, a seed, and how its queue is worked."""

    config: Config
    seed: int
    mode: str  # "uncertainty", "random" or "fast"
    split: Split
    token: str = ""
    project_id: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return f"{self.config.dataset}-{self.mode}-{self.seed}".replace("_", "-")


@dataclass
class Outcome:
    """What one simulated project measured."""

    curve: list[tuple[int, float]]
    staleness: list[int] = field(default_factory=list)
    settle_seconds: list[float] = field(default_factory=list)
    rejected: int = 0
    failed: int = 0
    better_rejected: int = 0  # rejected, yet more accurate on the test split than the champion
    batches: list[int] = field(default_factory=list)  # new labels per candidate
    trained_curve: list[tuple[int, float]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    auto_routed: int = 0
    seconds: float = 0.0
    labels_per_second: float | None = None


class Service:
    """`feedback run --no-demo` in a temporary instance folder, with a labeler and projects."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.instance = folder / "instance"
        self.url = f"sqlite:///{self.instance / 'feedback.db'}"
        self.port = common.free_port()
        self.process: common.Process | None = None
        self.labeler_token = ""
        self.instance.mkdir(parents=True, exist_ok=True)
        upgrade(self.url)
        self.db: Database = make_database(self.url)
        users.create_user(self.db, LABELER, "bench-labeler-password", "labeler")
        self.labeler_token = users.create_token(self.db, "bench-labeler", None, LABELER)

    def add_project(self, planned: Planned) -> None:
        """Create the project with its seed set (holdout rows where we placed them)."""
        split, config = planned.split, planned.config
        spec = projects.ProjectSpec(
            slug=planned.slug,
            labels=split.labels,
            input_kind="features",
            features=split.features,
            threshold=1.0,  # every prediction that is not certain goes to the queue
            audit_rate=0.0,  # the holdout comes from the seed set
            strategy=config.strategy,
            retrain_min_decisions=config.batch,
            random_share=1.0 if planned.mode == "random" else config.random_share,
            holdout_share=split.holdout_share,
        )
        seed = [
            Example({"features": row.tolist()}, label)
            for row, label in zip(split.seed_x, split.seed_y, strict=True)
        ]
        planned.project_id = projects.create_project(self.db, spec, seed)
        projects.add_member(self.db, planned.slug, LABELER)
        planned.token = users.create_token(self.db, f"bench-{planned.slug}", planned.slug, None)
        self._check_holdout(planned)

    def _check_holdout(self, planned: Planned) -> None:
        with self.db.read() as session:
            flags = list(
                session.scalars(
                    select(Item.is_holdout)
                    .where(Item.project_id == planned.project_id, Item.route == "seed")
                    .order_by(Item.id)
                )
            )
        if len(flags) != len(planned.split.seed_holdout):
            planned.notes.append(f"{planned.slug}: could not read the seed items back")
        elif flags != planned.split.seed_holdout:
            planned.notes.append(
                f"{planned.slug}: create_project held out other seed rows than planned; "
                "the in-process reference trains on the same rows as the service."
            )
            planned.split = replace(planned.split, seed_holdout=flags)

    def start(self) -> None:
        env = common.service_env(self.instance, self.port, TICK_SECONDS)
        argv = [*common.feedback_command(), "run", "--no-demo"]
        self.process = common.start_process("feedback-run", argv, env, self.folder / "logs")
        http = common.Http(self.port)
        common.wait_until("the service to answer", http.up, 180.0, [self.process], 0.5)
        http.close()

    def wait_for_champions(self, planned: Sequence[Planned]) -> None:
        """Wait until every project's seed run has promoted a first champion."""
        ids = [p.project_id for p in planned]

        def ready() -> bool:
            with self.db.read() as session:
                count = session.scalar(
                    select(func.count(Project.id)).where(
                        Project.id.in_(ids), Project.champion_id.is_not(None)
                    )
                )
            return count == len(ids)

        assert self.process is not None
        common.wait_until("first champions", ready, 120.0 + 10.0 * len(ids), [self.process], 0.5)

    def stop(self) -> None:
        if self.process is not None:
            common.stop_process(self.process, grace=5.0)  # results are in; no need to linger
            self.process = None
        self.db.dispose()


class Champion:
    """Download the champion, check its sha256 against `/model`, load it, score it on test."""

    def __init__(self, http: common.Http, planned: Planned, folder: Path) -> None:
        self.http, self.planned, self.folder = http, planned, folder
        self.scores: dict[str, float] = {}
        self.path = f"/api/v1/projects/{planned.slug}/model"

    def current(self) -> tuple[float, int]:
        """The champion's test accuracy and how many human labels it was trained on."""
        token = self.planned.token
        for _ in range(5):
            meta = self.http.expect("GET", self.path, token=token)
            sha = meta["sha256"]
            if sha not in self.scores:
                reply = self.http.request("GET", f"{self.path}/artifact", token=token)
                etag = reply.headers.get("etag", "").removeprefix("W/").strip('"')
                digest = hashlib.sha256(reply.body).hexdigest()
                if reply.status != 200 or not digest == etag == sha:
                    continue  # promoted between the two calls: ask again
                file = self.folder / f"{sha}.skops"
                file.write_bytes(reply.body)
                self.scores[sha] = accuracy(artifacts.load(file, sha), self.planned.split)
            seed_train = int((~np.array(self.planned.split.seed_holdout)).sum())
            return self.scores[sha], int(meta["train_size"]) - seed_train
        raise RuntimeError(f"{self.planned.slug}: /model and /model/artifact kept disagreeing")


class Labeler:
    """A labeler (and the model service) driving one project over HTTP."""

    def __init__(self, service: Service, planned: Planned) -> None:
        self.service, self.planned = service, planned
        self.http = common.Http(service.port)
        self.oracle = Oracle(planned.split.labels, planned.seed)
        self.rows: dict[int, int] = {}
        self.outcome = Outcome(curve=[])
        self.champion = Champion(self.http, planned, service.folder)
        self.champion_labels = 0
        self.labelled = 0

    def post_pool(self, rows: Sequence[int]) -> list[dict[str, Any]]:
        """Play the model service: post pool rows via `/predict`."""
        slug, posted = self.planned.slug, []
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            items = [self._item(i) for i in chunk]
            path = f"/api/v1/projects/{slug}/predict"
            answer = self.http.expect("POST", path, {"items": items}, self.planned.token)
            for row, item in zip(chunk, answer["items"], strict=True):
                self.rows[item["id"]] = row
                self.outcome.auto_routed += item["route"] == "auto"
                posted.append(item)
        return posted

    def _item(self, row: int) -> dict[str, Any]:
        return {
            "external_id": f"pool-{row}",
            "input": {"features": self.planned.split.pool_x[row].tolist()},
        }

    def label_one(self) -> int | None:
        """Claim the next item in the service's order and answer it; None when none is left."""
        token = self.service.labeler_token
        claim = self.http.request(
            "POST", f"/api/v1/projects/{self.planned.slug}/queue/claim", token=token
        )
        if claim.status == 204:
            return None
        if claim.status != 200:
            raise RuntimeError(f"claim answered {claim.status}: {claim.body[:300]!r}")
        item = claim.json()["item"]
        truth = str(self.planned.split.pool_y[self.rows[item["id"]]])
        vote = {"label": self.oracle.answer(truth), "fence": item["lease"]["fence"], "seconds": 1.0}
        self.http.expect("POST", f"/api/v1/items/{item['id']}/votes", vote, token, 201)
        self.outcome.staleness.append(self.labelled - self.champion_labels)
        self.labelled += 1
        return int(item["id"])

    def record(self) -> None:
        score, self.champion_labels = self.champion.current()
        self.outcome.curve.append((self.labelled, score))


def last_run(db: Database, project_id: int) -> int:
    with db.read() as session:
        found = session.scalar(
            select(func.max(RetrainRun.id)).where(RetrainRun.project_id == project_id)
        )
        return int(found or 0)


def settle(service: Service, project_id: int, before: int) -> float:
    """Wait for the retrain this round triggered to end and, if it promoted, the re-score."""
    started = time.monotonic()
    watch = [service.process] if service.process else []

    def ended() -> RetrainRun | None:
        with service.db.read() as session:
            run = session.scalar(
                select(RetrainRun)
                .where(RetrainRun.project_id == project_id, RetrainRun.id > before)
                .order_by(RetrainRun.id.desc())
                .limit(1)
            )
            return None if run is None or run.status in ("requested", "running") else run

    def rescored() -> bool:
        with service.db.read() as session:
            version = session.scalar(
                select(ModelVersion.version)
                .join(Project, Project.champion_id == ModelVersion.id)
                .where(Project.id == project_id)
            )
            stale = session.scalar(
                select(func.count(Item.id)).where(
                    Item.project_id == project_id,
                    Item.status == "queued",
                    Item.model_version != str(version),
                )
            )
        return stale == 0

    run = common.wait_until("the retrain after this round", ended, SETTLE_SECONDS, watch, 0.05)
    if run.status == "succeeded":
        common.wait_until("the queue re-score", rescored, SETTLE_SECONDS, watch, 0.05)
    return time.monotonic() - started


def run_settled(service: Service, planned: Planned) -> Outcome:
    """Label round by round; after each round wait for the retrain and re-score it caused."""
    labeler, config, started = Labeler(service, planned), planned.config, time.monotonic()
    labeler.record()
    labeler.post_pool(
        [int(i) for i in np.random.default_rng(planned.seed).permutation(len(planned.split.pool_y))]
    )
    while labeler.labelled < config.budget:
        before, want = (
            last_run(service.db, planned.project_id),
            min(config.batch, config.budget - labeler.labelled),
        )
        done = 0
        while done < want and labeler.label_one() is not None:
            done += 1
        if done == config.batch:
            try:
                labeler.outcome.settle_seconds.append(settle(service, planned.project_id, before))
            except TimeoutError as error:
                planned.notes.append(f"{planned.slug}: {error}")
        labeler.record()
        if done < want:
            break
    return finish(service, planned, labeler, started)


def run_fast(service: Service, planned: Planned) -> Outcome:
    """Label without ever waiting; the champion is sampled every few labels."""
    labeler, started = Labeler(service, planned), time.monotonic()
    labeler.record()
    labeler.post_pool(list(range(len(planned.split.pool_y))))
    clock = time.monotonic()
    while labeler.labelled < planned.config.budget and labeler.label_one() is not None:
        if labeler.labelled % PROBE_EVERY == 0:
            labeler.record()
        time.sleep(FAST_THINK_SECONDS)
    labeler.outcome.labels_per_second = labeler.labelled / (time.monotonic() - clock)
    wait_for_quiet(service, planned.project_id)
    return finish(service, planned, labeler, started)


def finish(service: Service, planned: Planned, labeler: Labeler, started: float) -> Outcome:
    """Close the run: count rejected candidates and failed runs, keep their reasons."""
    outcome = labeler.outcome
    labeler.http.close()
    with service.db.read() as session:
        outcome.reasons = list(
            session.scalars(
                select(ModelVersion.reason).where(
                    ModelVersion.project_id == planned.project_id,
                    ModelVersion.decision == "rejected",
                )
            )
        )
        errors = list(
            session.scalars(
                select(RetrainRun.error).where(
                    RetrainRun.project_id == planned.project_id, RetrainRun.status == "failed"
                )
            )
        )
    outcome.rejected, outcome.failed = len(outcome.reasons), len(errors)
    version_history(service, planned, outcome)
    if errors:
        first = (errors[0] or "no error recorded").strip().splitlines()[0][:300]
        planned.notes.append(f"{planned.slug}: {len(errors)} retrain runs failed ({first}).")
    outcome.seconds = time.monotonic() - started
    return outcome


def version_history(service: Service, planned: Planned, outcome: Outcome) -> None:
    """Score every model version on the test split: what the gate did, and batch sizes.

    Fills `better_rejected` (rejected, yet more accurate than the champion then),
    `batches` (new labels each candidate saw beyond the one before it: the effective batch)
    and `trained_curve` (accuracy of each promoted version against the labels it was
    trained on, which for a fast labeler separates selection from serving lag).
    """
    with service.db.read() as session:
        versions = session.execute(
            select(
                ModelVersion.decision,
                ModelVersion.artifact_path,
                ModelVersion.sha256,
                ModelVersion.train_size,
            )
            .where(ModelVersion.project_id == planned.project_id)
            .order_by(ModelVersion.version)
        ).all()
    seed_train = int((~np.array(planned.split.seed_holdout)).sum())
    champion, previous = None, None
    for version in versions:
        score = accuracy(artifacts.load(version.artifact_path, version.sha256), planned.split)
        labels = version.train_size - seed_train
        if previous is not None:
            outcome.batches.append(labels - previous)
        previous = labels
        if version.decision == "promoted":
            champion = score
            outcome.trained_curve.append((labels, score))
        elif champion is not None and score > champion:
            outcome.better_rejected += 1


def wait_for_quiet(service: Service, project_id: int) -> None:
    """Wait until no retrain is due or running for a few ticks (the last labels trained)."""
    quiet, deadline = 0, time.monotonic() + SETTLE_SECONDS
    while quiet < 4 and time.monotonic() < deadline:
        with service.db.read() as session:
            active = session.scalar(
                select(func.count(RetrainRun.id)).where(
                    RetrainRun.project_id == project_id,
                    RetrainRun.status.in_(("requested", "running")),
                )
            )
        quiet = 0 if active else quiet + 1
        time.sleep(TICK_SECONDS)


# ---------------------------------------------------------------- learning curves


def on_grid(curve: list[tuple[int, float]], budget: int, step: int) -> list[float]:
    """Accuracy of the model serving at 0, step, 2*step, ... budget labels."""
    values = []
    for mark in range(0, budget + 1, step):
        earlier = [score for labels, score in curve if labels <= mark]
        values.append(earlier[-1] if earlier else curve[0][1])
    return values


@dataclass
class Series:
    """One way of labelling, over all seeds of one data set."""

    needed: list[int | None] = field(default_factory=list)
    grids: list[list[float]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, curve: list[tuple[int, float]], target: float, config: Config) -> None:
        """Add one seed's curve, read as the model serving at each multiple of the batch."""
        grid = on_grid(curve, config.budget, config.batch) if curve else []
        marks = range(0, config.budget + 1, config.batch)
        self.needed.append(
            next((m for m, v in zip(marks, grid, strict=False) if v >= target), None)
        )
        if grid:
            self.grids.append(grid)

    def needed_median(self, config: Config) -> float | None:
        """Median labels to the target; a run that never got there counts as budget + batch."""
        if not self.needed:
            return None
        return float(
            np.median([config.budget + config.batch if n is None else n for n in self.needed])
        )

    def missed(self) -> int:
        return sum(n is None for n in self.needed)

    def area(self) -> list[float]:
        return [float(np.mean(grid)) for grid in self.grids]


def plot(config: Config, series: dict[str, Series], target: float, folder: Path) -> str | None:
    """Draw the median learning curves (service runs with their min-max band); return the file.

    The other in-process strategies are in the tables, not on the plot.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    grid = list(range(0, config.budget + 1, config.batch))
    figure, axes = plt.subplots(figsize=(8, 5))
    for name, one in series.items():
        plotted = ("service, ", f"in-process, {config.strategy}", "in-process, random")
        if not one.grids or not name.startswith(plotted):
            continue
        rows, service = np.array(one.grids), name.startswith("service")
        style = {"linewidth": 2.0} if service else {"linewidth": 1.2, "linestyle": "--"}
        axes.step(grid, np.median(rows, axis=0), where="post", label=name, **style)
        if service:
            low, high = rows.min(axis=0), rows.max(axis=0)
            axes.fill_between(grid, low, high, step="post", alpha=0.12)
    axes.axhline(target, linestyle=":", color="black", label="95% of full-data accuracy")
    axes.set_xlabel("human labels")
    axes.set_ylabel("test accuracy of the champion")
    axes.set_title(
        f"{config.dataset}: median of {len(config.seeds)} seeds (band: min to max), "
        f"retrain every {config.batch} labels"
    )
    axes.legend(loc="lower right", fontsize="small")
    axes.grid(alpha=0.3)
    name = f"simulation-{config.dataset}.png"
    figure.tight_layout()
    figure.savefig(folder / name, dpi=110)
    plt.close(figure)
    return name


# ---------------------------------------------------------------- the module


SERVICE_SERIES = {
    "uncertainty": "service, uncertainty queue",
    "random": "service, random queue",
    "fast": "service, uncertainty queue, fast labeler, model serving at each label",
}
TRAINED = "service, uncertainty queue, fast labeler, by labels trained"
MODES = tuple(SERVICE_SERIES)


def run(smoke: bool) -> dict[str, Any]:
    """Simulate labelling through the running service and in-process; report the goals."""
    return simulate(SMOKE if smoke else FULL, smoke)


def simulate(
    configs: Sequence[Config], smoke: bool, modes: Sequence[str] = MODES
) -> dict[str, Any]:
    """Run these data sets' simulations in one service; return the harness's result."""
    load = common.load_average()
    plans = [
        Planned(config, seed, mode, make_split(config, seed))
        for config in configs
        for seed in config.seeds
        for mode in modes
        if mode != "fast" or config.fast
    ]
    with tempfile.TemporaryDirectory(prefix="feedback-bench-simulation-") as folder:
        outcomes = drive_service(Path(folder), plans)
    result: dict[str, Any] = {"metrics": {}, "goals": [], "notes": {}, "plots": []}
    result.update(tables=[], curves={})  # curves: per data set, each seed's accuracy on the grid
    for config in configs:
        summarize(config, [p for p in plans if p.config is config], outcomes, smoke, result)
    queue = (
        "random queue: the same service and pool with the project's random_share = 1.0, so "
        "every claim is a uniformly random queued item (a random order)"
    )
    result["metrics"]["random queue"] = queue
    for planned in plans:
        for note in planned.notes:
            result["notes"].setdefault("general", "")
            result["notes"]["general"] += note + " "
    return {
        "name": "simulation",
        "machine_note": common.machine_note(load),
        "runs": min(len(c.seeds) for c in configs),
        **result,
    }


def drive_service(folder: Path, plans: list[Planned]) -> dict[str, Outcome]:
    """Start one service with every project, then work each project's queue in turn."""
    service = Service(folder)
    common.say(f"simulation: {len(plans)} projects in {folder}")
    try:
        for planned in plans:
            service.add_project(planned)
        common.say("simulation: projects created; starting `feedback run --no-demo`")
        service.start()
        common.say(f"simulation: service up on 127.0.0.1:{service.port}")
        service.wait_for_champions(plans)
        common.say("simulation: every project has its first champion")
        outcomes = {}
        for planned in plans:
            if planned.mode == "fast":
                outcomes[planned.slug] = run_fast(service, planned)
            else:
                outcomes[planned.slug] = run_settled(service, planned)
            done = outcomes[planned.slug]
            common.say(
                f"simulation: {planned.slug}: {len(done.staleness)} labels in {done.seconds:.1f}s, "
                f"final accuracy {done.curve[-1][1]:.3f}, {done.rejected} rejected"
            )
        return outcomes
    finally:
        service.stop()


def summarize(
    config: Config,
    plans: list[Planned],
    outcomes: dict[str, Outcome],
    smoke: bool,
    result: dict[str, Any],
) -> None:
    """Add this data set's metrics, goals, notes and plot to `result`."""
    series: dict[str, Series] = {}
    fulls = []
    strategies: list[str | None] = [config.strategy, None]
    if not smoke:
        strategies += [s for s in REFERENCE_STRATEGIES if s != config.strategy]
    common.say(f"simulation: in-process reference loops for {config.dataset}")
    for seed in config.seeds:
        mine = [p for p in plans if p.seed == seed]
        split = mine[0].split
        fulls.append(full_accuracy(split))
        target = TARGET_SHARE * fulls[-1]
        for planned in mine:
            one = series.setdefault(SERVICE_SERIES[planned.mode], Series())
            one.add(outcomes[planned.slug].curve, target, config)
            one.outcomes.append(outcomes[planned.slug])
            if planned.mode == "fast":
                one = series.setdefault(TRAINED, Series())
                one.add(outcomes[planned.slug].trained_curve, target, config)
        for strategy in strategies:
            one = series.setdefault(f"in-process, {strategy or 'random'}", Series())
            one.add(reference_curve(split, config, seed, strategy), target, config)
    result["metrics"].update(metrics(config, series, fulls))
    result["tables"].append(headline(config, series, fulls))
    result["curves"][config.dataset] = {
        "labels": list(range(0, config.budget + 1, config.batch)),
        **{name: one.grids for name, one in series.items()},
    }
    holdouts = [sum(p.split.seed_holdout) for p in plans]
    result["metrics"][f"{config.dataset}: holdout rows (the gate's)"] = common.summary(holdouts)
    result["metrics"][f"{config.dataset}: pool rows"] = common.summary(
        len(p.split.pool_y) for p in plans
    )
    goals, notes = judge(config, series)
    result["goals"] += goals
    result["notes"].update(notes)
    picture = plot(config, series, TARGET_SHARE * float(np.median(fulls)), common.output_dir())
    if picture:
        result["plots"].append(picture)


def headline(config: Config, series: dict[str, Series], fulls: list[float]) -> dict[str, Any]:
    """One row per way of labelling: the numbers the goals are made of."""
    rows = []
    for label, one in series.items():
        censored = [config.budget + config.batch if n is None else n for n in one.needed]
        outcomes = one.outcomes
        rows.append(
            [
                label,
                common.summary(censored),
                f"{one.missed()} of {len(one.needed)}",
                common.summary(one.area()),
                common.summary(o.rejected for o in outcomes) if outcomes else None,
                common.summary(float(np.median(o.batches)) for o in outcomes if o.batches)
                if outcomes
                else None,
            ]
        )
    full = common.summary(fulls)["median"]
    return {
        "title": f"{config.dataset}: target {TARGET_SHARE:.0%} of full-data accuracy {full:.3f}, "
        f"retrain every {config.batch} labels, budget {config.budget}, {len(config.seeds)} seeds",
        "columns": [
            "way of labelling",
            "labels to 95%",
            "never reached",
            "learning-curve area",
            "rejected candidates per run",
            "new labels per candidate",
        ],
        "rows": rows,
    }


def metrics(config: Config, series: dict[str, Series], fulls: list[float]) -> dict[str, Any]:
    name = config.dataset
    out: dict[str, Any] = {
        f"{name}: setup": f"seed {config.per_class}/class, retrain every {config.batch} "
        f"decisions, budget {config.budget} labels, strategy {config.strategy}, "
        f"random share {config.random_share:g}",
        f"{name}: full-data accuracy": common.summary(fulls),
    }
    for label, one in series.items():
        censored = [config.budget + config.batch if n is None else n for n in one.needed]
        out[f"{name}: labels to 95%, {label}"] = {
            **common.summary(censored),
            "not_reached": one.missed(),
        }
        out[f"{name}: learning-curve area, {label}"] = common.summary(one.area())
        if one.outcomes:
            out.update(outcome_metrics(f"{name}: ", label, one.outcomes))
    return out


def outcome_metrics(prefix: str, label: str, outcomes: list[Outcome]) -> dict[str, Any]:
    """Per-run facts of the service's runs: staleness, the gate's verdicts, time."""
    per_run: dict[str, Callable[[Outcome], float | None]] = {
        "labels on a stale ranking (mean)": lambda o: (
            float(np.mean(o.staleness)) if o.staleness else None
        ),
        "rejected candidates per run": lambda o: o.rejected,
        "rejected yet better on the test split, per run": lambda o: o.better_rejected,
        "failed retrain runs per run": lambda o: o.failed,
        "new labels per candidate (effective batch)": lambda o: (
            float(np.median(o.batches)) if o.batches else None
        ),
        "auto-routed pool items per run": lambda o: o.auto_routed,
        "wall seconds per run": lambda o: o.seconds,
        "labels per second": lambda o: o.labels_per_second,
    }
    out = {
        f"{prefix}{name}, {label}": common.summary(get(o) for o in outcomes)
        for name, get in per_run.items()
        if any(get(o) is not None for o in outcomes)
    }
    settles = [s for o in outcomes for s in o.settle_seconds]
    if settles:
        out[f"{prefix}retrain + re-score round trip seconds, {label}"] = common.summary(settles)
    return out


def even_ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, where 0 / 0 (both reach the target on the seed alone) is 1."""
    if numerator == 0 and denominator == 0:
        return 1.0
    return common.ratio(numerator, denominator)


def judge(config: Config, series: dict[str, Series]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The goals of one data set, and a plain sentence for every goal that is not met."""
    name, need = config.dataset, {k: v.needed_median(config) for k, v in series.items()}
    u, r = need.get(SERVICE_SERIES["uncertainty"]), need.get(SERVICE_SERIES["random"])
    reference = need[f"in-process, {config.strategy}"]
    rows = []
    if name == "digits":
        rows.append(
            (f"{name}: uncertainty ÷ random queue, labels to 95%", even_ratio(u, r), 0.60, "queue")
        )
    rows.append(
        (f"{name}: uncertainty ÷ random queue, never worse", even_ratio(u, r), 1.0, "queue")
    )
    rows.append(
        (
            f"{name}: service ÷ in-process reference, labels to 95%",
            even_ratio(u, reference),
            1.15,
            "gate",
        )
    )
    if TRAINED in need:
        fast = need[TRAINED]
        rows.append(
            (
                f"{name}: fast labeler (asynchronous retraining) ÷ in-process reference",
                even_ratio(fast, reference),
                1.15,
                "fast",
            )
        )
    goals = [common.at_most(text, value, limit) for text, value, limit, _ in rows]
    notes = {
        text: explain(kind, config, series, need)
        for (text, _, _, kind), row in zip(rows, goals, strict=True)
        if not row["met"]
    }
    return goals, notes


def explain(
    kind: str, config: Config, series: dict[str, Series], need: dict[str, float | None]
) -> str:
    """Say why a goal is not met, with the numbers that show it."""
    found = "; ".join(f"{k} {v:g}" for k, v in need.items() if v is not None)
    tail = f" Labels to 95% (median of {len(config.seeds)} seeds): {found}."
    missed = sum(one.missed() for one in series.values())
    if missed:
        tail += (
            f" {missed} runs never reached the target within {config.budget} labels"
            f" (counted as {config.budget + config.batch})."
        )
    if kind == "queue":
        return explain_queue(config, need) + tail
    service = series[SERVICE_SERIES["uncertainty"]].outcomes
    if kind == "gate":
        rejected = float(np.median([o.rejected for o in service]))
        better = float(np.median([o.better_rejected for o in service]))
        reasons = sorted({r.split(";")[0] for o in service for r in o.reasons})[:3]
        return (
            f"The service gates promotion on its holdout: a median of {rejected:g} candidates per "
            f"run were rejected ({'; '.join(reasons) or 'none'}), {better:g} of them more "
            "accurate on the test split than the champion they lost to; after a rejection the "
            "queue stays ranked by the older champion." + tail
        )
    fast = series[SERVICE_SERIES["fast"]].outcomes
    batch = float(np.median([np.median(o.batches) for o in fast if o.batches]))
    speed = float(np.median([o.labels_per_second or 0.0 for o in fast]))
    serving, trained = need.get(SERVICE_SERIES["fast"]), need.get(TRAINED)
    return (
        f"Retraining is asynchronous: with a labeler at {speed:.1f} labels/s each candidate saw "
        f"a median of {batch:.0f} new labels instead of {config.batch}, chosen on an older "
        f"ranking. By the labels each promoted model was trained on, 95% took {trained or 0:g} "
        f"labels; counted by the model serving when each label arrived, {serving or 0:g}." + tail
    )


def explain_queue(config: Config, need: dict[str, float | None]) -> str:
    """Compare the service's queue with the same strategies in-process."""
    service = even_ratio(
        need.get(SERVICE_SERIES["uncertainty"]), need.get(SERVICE_SERIES["random"])
    )
    random = need["in-process, random"]
    text = f"The service's ratio is {service or 0:.2f}."
    for strategy in REFERENCE_STRATEGIES:
        ratio = even_ratio(need.get(f"in-process, {strategy}"), random)
        if ratio is not None:
            text += f" In-process, {strategy} ÷ random is {ratio:.2f}."
    return (
        text + f" The queue serves the top of one ranking per round of {config.batch} labels "
        f"with the project's {config.strategy} score; where the in-process ratios are as high, "
        "the strategy on this data set, not the service, is the limit."
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run chosen data sets, seeds and queue settings; print the goals and tables."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simulation", description=__doc__)
    parser.add_argument("--dataset", action="append", choices=[c.dataset for c in FULL])
    parser.add_argument("--seeds", type=int, help="run the first N seeds of each data set")
    parser.add_argument("--strategy", choices=list(uncertainty.Strategy))
    parser.add_argument("--random-share", type=float, help="the service projects' random_share")
    parser.add_argument("--no-fast", action="store_true", help="skip the fast labeler")
    parser.add_argument("--mode", action="append", choices=MODES, help="service runs to do")
    parser.add_argument("--out", type=Path, help="folder for plots and result.json")
    args = parser.parse_args(argv)
    if args.out:
        os.environ[common.OUT_ENV] = str(args.out)
    configs = [
        replace(
            config,
            seeds=config.seeds[: args.seeds] if args.seeds else config.seeds,
            strategy=args.strategy or config.strategy,
            random_share=config.random_share if args.random_share is None else args.random_share,
            fast=config.fast and not args.no_fast,
        )
        for config in FULL
        if not args.dataset or config.dataset in args.dataset
    ]
    result = simulate(configs, smoke=False, modes=args.mode or MODES)
    (common.output_dir() / "simulation.json").write_text(json.dumps(result, indent=1, default=str))
    for goal in result["goals"]:
        print(f"{goal['goal']}: {goal['value']} (target {goal['target']}, met {goal['met']})")
    for table in result["tables"]:
        print(table["title"])
        for row in table["rows"]:
            needed, area, rejected = row[1], row[3], row[4] or {}
            print(
                f"  {row[0]}: labels to 95% {needed['median']} ({needed['min']} to "
                f"{needed['max']}), area {area['median']}, rejected {rejected.get('median')}"
            )


if __name__ == "__main__":
    main()
