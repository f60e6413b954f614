"""Real Celery worker and beat processes retrain through the database outbox.

Two settings: embedded (SQLite file + kombu's `filesystem://` broker, no server) and
production-like (PostgreSQL + Redis). The test process only writes rows and reads results;
every retrain runs in the worker.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from feedback import artifacts
from feedback.db.engine import Database
from feedback.db.models import Decision, Item, ModelVersion, Project, RetrainRun
from feedback.services import retrain
from tests.conftest import REDIS_URL, People, need_service, text_seed
from tests.processes import (
    Process,
    clean_environment,
    redis_database,
    start,
    supervised,
    wait_until,
)

pytestmark = [pytest.mark.services, pytest.mark.usefixtures("backend")]

REDIS_TEST_DB = 12  # never 0: flushed before and after the test
FIRST_RUN_SECONDS = 90.0  # includes starting the worker on a busy machine
RUN_SECONDS = 60.0
SWAP = {"neg": "pos", "pos": "neg"}


@pytest.fixture
def broker_url(backend: str) -> Iterator[str]:
    """`filesystem://` beside SQLite; with PostgreSQL, a dedicated Redis database, kept empty."""
    if backend == "sqlite":
        yield "filesystem://"
        return
    with redis_database(need_service("redis", REDIS_URL), REDIS_TEST_DB) as url:
        yield url


def start_workers(
    instance: Path, database_url: str, broker_url: str, tick_seconds: str = "0.5"
) -> list[Process]:
    """One worker (both queues) and one beat ticking every half second, as `feedback run` does."""
    env = clean_environment(
        FEEDBACK_INSTANCE_PATH=str(instance),
        FEEDBACK_DATABASE_URL=database_url,
        FEEDBACK_BROKER_URL=broker_url,
        FEEDBACK_TICK_SECONDS=tick_seconds,
        FEEDBACK_DISPATCH_SECONDS="0.1",
    )
    worker = [sys.executable, "-m", "workers", "worker", "--concurrency=1"]
    worker += ["--without-mingle", "--without-gossip", "--hostname=test-worker@%h"]
    logs = instance.parent / "logs"
    return [
        start("worker", worker, env, logs),
        start("beat", [sys.executable, "-m", "workers", "beat"], env, logs),
    ]


def ended_run(db: Database, run_id: int) -> RetrainRun | None:
    with db.read() as session:
        run = session.get_one(RetrainRun, run_id)
        return None if run.status in retrain.ACTIVE else run


def newest_run_after(db: Database, run_id: int) -> int | None:
    with db.read() as session:
        return session.scalar(select(func.max(RetrainRun.id)).where(RetrainRun.id > run_id))


def champion(db: Database) -> tuple[int | None, ModelVersion | None]:
    with db.read() as session:
        champion_id = session.scalar(select(Project.champion_id).where(Project.slug == "demo"))
        return champion_id, session.get(ModelVersion, champion_id) if champion_id else None


def version_of(db: Database, run: RetrainRun) -> ModelVersion:
    assert run.model_version_id is not None, run.error
    with db.read() as session:
        return session.get_one(ModelVersion, run.model_version_id)


def add_wrong_decisions(db: Database, count: int) -> None:
    """Store `count` labelled training items whose labels are all inverted, in one commit."""
    examples = text_seed(1000 + count)[1000:]  # texts the seed data does not contain
    with db.transaction() as session:
        project_id = session.scalar(select(Project.id).where(Project.slug == "demo"))
        rows = [
            {
                "project_id": project_id,
                "external_id": f"wrong-{i}",
                "input": example.input,
                "route": "review",
                "status": "decided",
                "is_holdout": False,
                "uncertainty": 0.5,
                "priority": 0.5,
                "fence": 1,
            }
            for i, example in enumerate(examples)
        ]
        ids = session.scalars(insert(Item).returning(Item.id, sort_by_parameter_order=True), rows)
        session.execute(
            insert(Decision),
            [
                {
                    "item_id": item_id,
                    "project_id": project_id,
                    "label": SWAP[example.label],
                    "source": "consensus",
                }
                for item_id, example in zip(ids.all(), examples, strict=True)
            ],
        )


def first_run_promotes(db: Database, run_id: int, instance: Path, watch: list[Process]) -> int:
    """The requested run ends in the worker with a better model as champion; return its id."""
    run = wait_until(
        "the first run to end", lambda: ended_run(db, run_id), FIRST_RUN_SECONDS, watch
    )
    assert (run.status, run.trigger, run.error) == ("succeeded", "manual", None)
    promoted = version_of(db, run)
    assert promoted.decision == "promoted", promoted.reason
    assert promoted.metrics["macro_f1"] > promoted.baseline_metrics["macro_f1"]
    assert champion(db)[0] == promoted.id
    # the worker wrote the file under its own instance folder, not the test's
    assert Path(promoted.artifact_path).is_relative_to(instance / "models" / "demo")
    model = artifacts.load(promoted.artifact_path, promoted.sha256)
    assert list(model.predict(["love it, excellent", "very bad value"])) == ["pos", "neg"]
    wait_until(
        "the worker to log the run",
        lambda: f"retrain run {run_id} ended" in watch[0].output(),
        RUN_SECONDS,
        watch,
    )
    return promoted.id


def wrong_labels_retrain_by_themselves_and_lose(
    db: Database, last_run: int, champion_id: int, watch: list[Process]
) -> int:
    """Enough new (inverted) decisions make the tick request a run; its model is rejected."""
    with db.read() as session:
        needed = session.scalar(select(Project.retrain_min_decisions)) or 0
        promoted = session.get_one(ModelVersion, champion_id)
    add_wrong_decisions(db, 6 * needed)
    run_id = wait_until(
        "the tick to request a retrain", lambda: newest_run_after(db, last_run), RUN_SECONDS, watch
    )
    run = wait_until("the automatic run to end", lambda: ended_run(db, run_id), RUN_SECONDS, watch)
    assert (run.status, run.trigger, run.error) == ("rejected", "decisions", None)
    rejected = version_of(db, run)
    assert rejected.decision == "rejected"
    assert rejected.train_size == promoted.train_size + 6 * needed
    assert rejected.champion_metrics == promoted.metrics
    assert "does not beat champion" in rejected.reason
    assert "does not beat baseline" in rejected.reason
    assert champion(db)[0] == champion_id
    return run_id


@pytest.mark.timeout(600)  # each wait is bounded; on a loaded machine they add up
def test_worker_promotes_a_better_model_and_rejects_a_worse_one(
    db: Database, project: str, people: People, tmp_path: Path, database_url: str, broker_url: str
) -> None:
    instance = tmp_path / "worker-instance"
    first = retrain.request_retrain(db, people.admin, project)
    with supervised(start_workers(instance, database_url, broker_url)) as processes:
        promoted = first_run_promotes(db, first, instance, processes)
        automatic = wrong_labels_retrain_by_themselves_and_lose(db, first, promoted, processes)

        # An admin asks again: the same verdict, and the champion still serves.
        manual = retrain.request_retrain(db, people.admin, project)
        assert manual > automatic
        run = wait_until(
            "the manual run to end", lambda: ended_run(db, manual), RUN_SECONDS, processes
        )
        assert (run.status, run.trigger) == ("rejected", "manual")
        assert "does not beat champion" in version_of(db, run).reason
        champion_id, serving = champion(db)
        assert champion_id == promoted
        assert serving is not None
        artifacts.load(serving.artifact_path, serving.sha256)
        with db.read() as session:
            assert session.scalar(select(func.count(RetrainRun.id))) == 3
        assert "Traceback" not in processes[0].output()  # no task failed along the way


@pytest.mark.timeout(300)
def test_beat_hands_a_requested_retrain_to_the_worker_without_waiting_for_a_tick(
    db: Database, project: str, people: People, tmp_path: Path, database_url: str, broker_url: str
) -> None:
    """The tick is an hour away: only beat's outbox relay can start the run."""
    instance = tmp_path / "worker-instance"
    with supervised(start_workers(instance, database_url, broker_url, "3600")) as processes:
        worker, beat = processes
        wait_until("beat to start", lambda: "beat: Starting" in beat.output(), 60, processes)
        run_id = retrain.request_retrain(db, people.admin, project)
        run = wait_until(
            "the run to end", lambda: ended_run(db, run_id), FIRST_RUN_SECONDS, processes
        )
        assert (run.status, run.error) == ("succeeded", None)
        assert "handed 1 outbox message(s) to the broker" in beat.output()
        assert re.search(r"froze \d+ startup objects before forking the pool", worker.output())
        assert "Sending due task tick" not in beat.output()
        assert not re.search(r"Task workers\.tasks\.tick\[", worker.output())  # no tick ran
