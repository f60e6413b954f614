"""Batch ingest: items/s through the service and through HTTP, next to raw inserts of the rows.

Every run posts fresh predictions in batches of 1,000 and, side by side in the same run,
inserts the very same rows (same columns, JSON already encoded) with the driver alone:
`sqlite3.executemany` into a copy of the same migrated schema, and - when
PostgreSQL answers (FEEDBACK_BENCH_POSTGRES_URL, by default the local test database) - a
psycopg multi-row `INSERT ... VALUES (...), (...)`.
The goal: the service keeps at least 0.35 of the raw rate.

`.venv/bin/python -m benchmarks.ingest [--smoke]` prints the result as JSON.
"""

from __future__ import annotations

import gc
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from benchmarks import common
from feedback.config import Settings
from feedback.db.engine import make_database, make_engine
from feedback.db.migrate import upgrade
from feedback.services import ingest, projects, users
from feedback.web import create_app

BATCH = 1000
GOAL = 0.35
COLUMNS = (
    "project_id",
    "external_id",
    "input",
    "display",
    "probabilities",
    "model_version",
    "uncertainty",
    "priority",
    "route",
    "status",
    "is_holdout",
    "deferred",
    "fence",
    "created_at",
)


def predictions(tag: str, count: int, seed: int) -> list[dict[str, Any]]:
    """Fresh predictions shaped like a text model service's, about a third of them unsure."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        pos = rng.random()
        out.append(
            {
                "external_id": f"{tag}-{i}",
                "input": {"text": f"review {i}: the product was fine"},
                "probabilities": {"neg": 1.0 - pos, "pos": pos},
                "model_version": "prod-7",
            }
        )
    return out


def raw_rows(project_id: int, batch: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The rows the service would write for these predictions, for the driver alone to insert."""
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = []
    for p in batch:
        pos = p["probabilities"]["pos"]
        score = min(pos, 1 - pos) * 2
        route = "review" if 1 - score < 0.8 else "auto"
        rows.append(
            (
                project_id,
                p["external_id"],
                json.dumps(p["input"]),
                None,
                json.dumps(p["probabilities"]),
                p["model_version"],
                score,
                score,
                route,
                "queued" if route == "review" else "auto",
                False,
                False,
                0,
                now,
            )
        )
    return rows


def batches(items: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


def timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


class Target:
    """One database with a project to ingest into, and a raw copy of the schema beside it."""

    def __init__(
        self, url: str, instance: Path, raw_insert: Callable[[list[tuple[Any, ...]]], None]
    ) -> None:
        self.db = make_database(url)
        projects.create_project(
            self.db, projects.ProjectSpec(slug="bench", labels=["neg", "pos"], audit_rate=0.0)
        )
        self.token = users.create_token(self.db, "bench", "bench", None)
        caller = users.principal_for_token(self.db, self.token)
        assert caller is not None
        assert caller.project_id is not None
        self.caller, self.project_id, self.raw_insert = caller, caller.project_id, raw_insert
        settings = Settings(
            instance_path=instance,
            database_url=url,
            broker_url="filesystem://",
            secret_key="bench-" + "x" * 40,
            env="test",
        )
        self.client = create_app(settings, self.db).test_client()

    def service(self, items: list[dict[str, Any]]) -> None:
        for batch in batches(items):
            ingest.submit_batch(self.db, self.caller, "bench", batch)

    def http(self, items: list[dict[str, Any]]) -> None:
        bodies = [json.dumps({"items": batch}).encode() for batch in batches(items)]
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        for body in bodies:  # encoding the bodies counts too, as it does for a caller
            response = self.client.post(
                "/api/v1/projects/bench/predictions", data=body, headers=headers
            )
            assert response.status_code == 200, response.get_data(as_text=True)

    def raw(self, items: list[dict[str, Any]]) -> None:
        for batch in batches(items):
            self.raw_insert(raw_rows(self.project_id, batch))


def measure(target: Target, runs: int, count: int, seed: int) -> dict[str, list[float]]:
    """Measure raw, service and HTTP side by side in every run, each with fresh ids.

    First with Python's default garbage collector, then with the startup heap frozen
    (`gc.freeze()`, as a web or worker process should do once it has imported everything):
    a full collection otherwise rescans every module, model and mapper loaded at startup,
    about 0.2 s on this machine, once every few batches.
    """
    found = _measure(target, runs, count, seed)
    gc.collect()
    gc.freeze()
    try:
        frozen = _measure(target, runs, count, seed + 1000)
    finally:
        gc.unfreeze()
    return {f"unfrozen_{key}": values for key, values in found.items()} | frozen


def _measure(target: Target, runs: int, count: int, seed: int) -> dict[str, list[float]]:
    """Each run: the three ways take turns batch by batch, so a load spike hits all alike."""
    found: dict[str, list[float]] = {name: [] for name in ("raw", "service", "http")}
    ways = {"raw": target.raw, "service": target.service, "http": target.http}
    for run in range(runs):
        tag = uuid.uuid4().hex[:8]
        items = {name: predictions(f"{name}-{tag}", count, seed + run) for name in ways}
        seconds = dict.fromkeys(ways, 0.0)
        for start in range(0, count, BATCH):
            for name, way in ways.items():  # rows are made on the clock, as the service does
                seconds[name] += timed(partial(way, items[name][start : start + BATCH]))
        for name in ways:
            found[name].append(count / seconds[name])
    found["ratio"] = [s / r for s, r in zip(found["service"], found["raw"], strict=True)]
    found["http_ratio"] = [h / r for h, r in zip(found["http"], found["raw"], strict=True)]
    return found


@contextmanager
def sqlite_target(folder: Path) -> Iterator[Target]:
    template = folder / "template.db"
    upgrade(f"sqlite:///{template}")
    raw_path = folder / "raw.db"
    shutil.copy(template, folder / "service.db")
    shutil.copy(template, raw_path)
    connection = sqlite3.connect(raw_path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=OFF"):
        connection.execute(f"PRAGMA {pragma}")
    marks = ", ".join("?" * len(COLUMNS))
    statement = f"INSERT INTO items ({', '.join(COLUMNS)}) VALUES ({marks})"  # noqa: S608

    def insert(rows: list[tuple[Any, ...]]) -> None:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(statement, rows)
        connection.execute("COMMIT")

    target = Target(f"sqlite:///{folder / 'service.db'}", folder, insert)
    try:
        yield target
    finally:
        target.db.dispose()
        connection.close()


@contextmanager
def postgres_target(base: str) -> Iterator[Target]:
    name = f"feedback_bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base.replace("postgresql://", "postgresql+psycopg://", 1)).set(database=name)
    rendered = url.render_as_string(hide_password=False)
    upgrade(rendered)
    raw = psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    raw.execute("CREATE TABLE raw_items (LIKE items INCLUDING ALL)")
    raw.commit()

    def insert(rows: list[tuple[Any, ...]]) -> None:
        values = ", ".join(["(" + ", ".join(["%s"] * len(COLUMNS)) + ")"] * len(rows))
        flat = [value for row in rows for value in row]
        with raw.transaction():
            statement = f"INSERT INTO raw_items ({', '.join(COLUMNS)}) VALUES {values}"  # noqa: S608
            raw.execute(statement, flat)

    instance = Path(tempfile.mkdtemp())
    target = Target(rendered, instance, insert)
    try:
        yield target
    finally:
        target.db.dispose()
        raw.close()
        shutil.rmtree(instance, ignore_errors=True)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def report(prefix: str, found: dict[str, list[float]]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for key, values in found.items():
        stats = common.summary(values, digits=3)
        unit = "" if "ratio" in key else "_items_per_s"
        for stat in ("median", "min", "max"):
            metrics[f"{prefix}_{key}{unit}_{stat}"] = stats[stat]
    return metrics


def ratio_goals(
    backend: str, raw: str, prefix: str, metrics: dict[str, Any]
) -> list[dict[str, Any]]:
    return [
        common.at_least(
            f"{backend}: service ingest rate / {raw} (startup heap frozen)",
            metrics[f"{prefix}_ratio_median"],
            GOAL,
        ),
        common.at_least(
            f"{backend}: the same with Python's default GC (no gc.freeze())",
            metrics[f"{prefix}_unfrozen_ratio_median"],
            GOAL,
        ),
    ]


def run(smoke: bool) -> dict[str, Any]:
    """Measure ingest on SQLite (and PostgreSQL when it answers) against raw inserts."""
    started_load = common.load_average()
    runs, count = (3, 2000) if smoke else (7, 10_000)
    metrics: dict[str, Any] = {}
    goals = []
    with tempfile.TemporaryDirectory() as folder, sqlite_target(Path(folder)) as target:
        found = measure(target, runs, count, seed=1)
    metrics |= report("sqlite", found)
    goals += ratio_goals("SQLite", "raw sqlite3.executemany", "sqlite", metrics)
    notes = {}
    if common.postgres_version():
        with postgres_target(common.postgres_url()) as target:
            found = measure(target, runs, count, seed=2)
        metrics |= report("postgres", found)
        goals += ratio_goals("PostgreSQL", "raw psycopg multi-row INSERT", "postgres", metrics)
    else:
        notes["postgresql"] = (
            f"PostgreSQL at {common.public_url(common.postgres_url())} was not reachable"
        )
    return {
        "notes": notes,
        "name": "ingest",
        "machine_note": common.machine_note(started_load),
        "metrics": metrics | {"batch_size": BATCH, "items_per_run": count},
        "goals": goals,
        "runs": runs,
    }


if __name__ == "__main__":
    print(json.dumps(run("--smoke" in sys.argv[1:]), indent=2))
