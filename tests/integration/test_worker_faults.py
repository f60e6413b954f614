"""Real Celery workers that die mid-run, keep dying, race each other, or meet bad labels.

Two settings, like test_workers.py: SQLite + kombu's `filesystem://` broker (embedded), and
PostgreSQL + Redis (our own DB 11). Workers start through tests/integration/_workers_util.py,
which runs `workers.__main__.main` with short liveness timings and, where a test asks for
it, a pause or a self-kill on entering a retrain stage.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import func, select

from feedback import artifacts
from feedback.db.engine import Database
from feedback.db.models import AuditEvent, ModelVersion, Project, RetrainRun
from feedback.services import retrain, rollback
from tests.conftest import REDIS_URL, People, need_service
from tests.integration import lifecycle_data as data
from tests.integration._workers_util import (
    FAST_LIVENESS,
    environment,
    kill_group,
    markers,
    redis_db,
    start_beat,
    start_worker,
)
from tests.processes import Process, supervised, wait_until

pytestmark = [pytest.mark.services, pytest.mark.usefixtures("backend")]

START_SECONDS = 120.0  # a worker's first run, on a busy two-core machine
RUN_SECONDS = 90.0


@pytest.fixture
def broker_url(backend: str) -> Iterator[str]:
    """`filesystem://` beside SQLite; Redis (our DB 11, kept empty) beside PostgreSQL."""
    if backend == "sqlite":
        yield "filesystem://"
        return
    with redis_db(need_service("redis", REDIS_URL)) as url:
        yield url


@pytest.fixture
def env(tmp_path: Path, database_url: str, broker_url: str) -> dict[str, str]:
    return environment(tmp_path / "worker-instance", database_url, broker_url)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    return tmp_path / "logs"


def ended(db: Database, run_id: int) -> RetrainRun | None:
    with db.read() as session:
        run = session.get_one(RetrainRun, run_id)
        return None if run.status in retrain.ACTIVE else run


def versions(db: Database) -> list[ModelVersion]:
    with db.read() as session:
        return list(session.scalars(select(ModelVersion).order_by(ModelVersion.version)))


def champion_id(db: Database, slug: str = "demo") -> int | None:
    with db.read() as session:
        return session.scalar(select(Project.champion_id).where(Project.slug == slug))


def assert_every_artifact_verifies(db: Database) -> None:
    for version in versions(db):
        artifacts.load(version.artifact_path, version.sha256)


@pytest.mark.parametrize("stage", ["fit", "evaluate", "decide"])
def test_sigkill_at_a_stage_then_the_run_completes_exactly_once(
    stage: str, db: Database, project: str, people: People, env: dict[str, str], logs: Path
) -> None:
    run_id = retrain.request_retrain(db, people.admin, project)
    first = start_worker("first", env, logs, pause_at=stage)
    with supervised([start_beat("beat", env, logs), first]) as processes:
        paused = f"paused-{run_id}-{stage}-1"
        wait_until(
            f"attempt 1 to pause at {stage}",
            lambda: markers(logs, paused),
            START_SECONDS,
            processes,
        )
        kill_group(first)
        assert not first.alive()
        processes.append(start_worker("second", env, logs))
        run = wait_until("the run to end", lambda: ended(db, run_id), START_SECONDS, processes[::2])
    assert (run.status, run.attempts) == ("succeeded", 2), run.error
    assert run.report is not None
    assert len(run.report["lost"]) == 1
    assert f"stopped responding at stage {stage}" in run.report["lost"][0]
    made = versions(db)
    assert [v.decision for v in made] == ["promoted"]  # one version, one promotion
    assert champion_id(db) == made[0].id
    assert_every_artifact_verifies(db)
    with db.read() as session:
        promotions = session.scalars(select(AuditEvent).where(AuditEvent.action == "promote"))
        assert len(promotions.all()) == 1


def test_a_run_whose_pool_process_keeps_dying_ends_failed_and_does_not_loop(
    db: Database, project: str, people: People, env: dict[str, str], logs: Path
) -> None:
    settings = {"extra": FAST_LIVENESS, "retrain_max_attempts": 2}
    run_id = retrain.request_retrain(db, people.admin, project)
    worker = start_worker("crashing", env, logs, settings=settings, crash_at="fit")
    with supervised([start_beat("beat", env, logs), worker]) as processes:
        run = wait_until("the run to give up", lambda: ended(db, run_id), START_SECONDS, processes)
        assert markers(logs, "crashed-") == [f"crashed-{run_id}-fit-1", f"crashed-{run_id}-fit-2"]
        assert worker.alive()  # the pool replaced its dead process each time
        # Proof that ticks go on: a retrain of another project is requested and ends.
        data.features_project(db, "other", data.blobs(60, seed=3))
        other = retrain.request_retrain(db, people.admin, "other")
        wait_until(
            "a later tick to run",
            lambda: markers(logs, f"crashed-{other}-fit-1"),
            RUN_SECONDS,
            processes,
        )
    assert (run.status, run.attempts, run.stage) == ("failed", 2, "fit")
    assert (
        run.error
        == "gave up after 2 attempts; attempt 2: the worker stopped responding at stage fit"
    )
    assert versions(db) == []
    assert champion_id(db) is None
    with db.read() as session:
        demo_runs = session.scalar(
            select(func.count(RetrainRun.id)).where(
                RetrainRun.project_id == data.project_id(db, project)
            )
        )
    assert demo_runs == 1  # the failed run was not requested again
    assert "WorkerLostError" in worker.output() or "SIGKILL" in worker.output()


def test_two_beats_ticking_for_100_ticks_start_each_run_once(
    db: Database, project: str, people: People, env: dict[str, str], logs: Path
) -> None:
    fast = {**env, "FEEDBACK_TICK_SECONDS": "0.2"}
    data.set_project(db, project, retrain_min_decisions=5)
    beats = [start_beat(f"beat-{n}", fast, logs) for n in (1, 2)]
    worker = start_worker("worker", fast, logs, concurrency=2)
    batches, last = 0, 0
    with supervised([*beats, worker]) as processes:
        while min(sent(beat) for beat in beats) < 100:
            last = wait_until(
                "a run for the new labels", partial(newer_run, db, last), START_SECONDS, processes
            )
            wait_until("it to end", partial(ended, db, last), RUN_SECONDS, processes)
            batches += 1
            data.add_decisions(db, project, data.fresh_texts(5, offset=4000 + 10 * batches))
        wait_until(
            "the last batch's run to end",
            lambda: all_ended(db, batches + 1),
            RUN_SECONDS,
            processes,
        )
    with db.read() as session:
        made = session.scalars(select(RetrainRun).order_by(RetrainRun.id)).all()
    assert len(made) == batches + 1  # the seed run and one per batch: no duplicates
    assert all(run.attempts == 1 and run.status in ("succeeded", "rejected") for run in made)
    assert len({run.report["requested_watermark"] for run in made if run.report}) == len(made)
    assert len(versions(db)) == len(made)


def sent(beat: Process) -> int:
    return beat.output().count("Sending due task tick")


def newer_run(db: Database, than: int) -> int | None:
    with db.read() as session:
        return session.scalar(select(func.min(RetrainRun.id)).where(RetrainRun.id > than))


def all_ended(db: Database, expected: int) -> bool:
    with db.read() as session:
        statuses = session.scalars(select(RetrainRun.status)).all()
    return len(statuses) >= expected and not set(statuses) & set(retrain.ACTIVE)


def test_bad_labels_are_not_promoted_by_the_worker_and_say_why(
    db: Database, people: People, env: dict[str, str], logs: Path
) -> None:
    bad = {
        "shuffled": lambda ex: data.shuffled(ex, 5),
        "noisy": lambda ex: data.blobs(900, seed=23, noise=0.3),
    }
    first = {}
    for slug in (*bad, "missing"):
        classes = ("neg", "pos", "mid") if slug == "missing" else ("neg", "pos")
        data.features_project(db, slug, data.blobs(300, seed=21), labels=classes, holdout_share=0.4)
        first[slug] = retrain.request_retrain(db, people.admin, slug)  # before a tick seeds one
    with supervised(
        [start_beat("beat", env, logs), start_worker("worker", env, logs)]
    ) as processes:

        def outcome(slug: str, run_id: int | None = None) -> RetrainRun:
            run_id = run_id or retrain.request_retrain(db, people.admin, slug)
            return wait_until(f"{slug} to end", lambda: ended(db, run_id), START_SECONDS, processes)

        for slug, corrupt in bad.items():
            assert outcome(slug, first[slug]).status == "succeeded"  # a good champion first
            data.add_decisions(db, slug, data.as_inputs(corrupt(data.blobs(900, seed=22))))
            run = outcome(slug)
            assert run.status == "rejected"
            assert "probabilities got worse" in run.report["decision"]["reason"]
        missing = outcome("missing", first["missing"])
    assert missing.status == "rejected"
    assert missing.report["decision"]["reason"] == "classes missing from training: mid"
    with db.read() as session:
        serving = session.scalars(
            select(ModelVersion.version)
            .join(Project, Project.champion_id == ModelVersion.id)
            .order_by(Project.slug)
        ).all()
    assert serving == [1, 1]  # noisy and shuffled keep their first model; missing has none


def test_a_rollback_is_rescored_by_the_worker_as_the_older_model_dictates(
    db: Database, people: People, env: dict[str, str], logs: Path
) -> None:
    slug = "order"
    data.order_project(db, slug)
    data.queue_points(db, slug)
    with supervised(
        [start_beat("beat", env, logs), start_worker("worker", env, logs)]
    ) as processes:

        def promoted(version: str) -> None:
            run_id = retrain.request_retrain(db, people.admin, slug)
            run = wait_until("the run to end", lambda: ended(db, run_id), START_SECONDS, processes)
            assert run.status == "succeeded", run.report
            wait_until(
                f"the queue re-scored by v{version}",
                lambda: data.queue_versions(db, slug) == {version},
                RUN_SECONDS,
                processes,
            )

        promoted("1")
        data.add_decisions(db, slug, data.as_inputs(data.blobs(600, seed=12)))
        promoted("2")
        newer = data.queue_order(db, slug)
        rollback.rollback(db, people.admin, slug, 1)
        wait_until(
            "the rollback's re-score",
            lambda: data.queue_versions(db, slug) == {"1"},
            RUN_SECONDS,
            processes,
        )
    v1 = versions(db)[0]
    older = data.order_by_model(artifacts.load(v1.artifact_path, v1.sha256), "least_confidence")
    assert data.queue_order(db, slug) == older != newer
    with db.read() as session:
        runs = session.scalars(select(RetrainRun).order_by(RetrainRun.id)).all()
    assert [r.report["rescore"]["status"] for r in runs] == ["done", "done"]
    assert [r.stage for r in runs] == ["done", "done"]
