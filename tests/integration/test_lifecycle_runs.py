"""Retrain runs as a fenced state machine, on SQLite and PostgreSQL: quiet workers are replaced,
attempts are bounded, an old attempt writes nothing, two promotions never both win, and two
processes ticking at once request each due run exactly once.
"""

from __future__ import annotations

import multiprocessing
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from feedback.config import Settings
from feedback.db.engine import Database, make_database
from feedback.db.models import ModelVersion, OutboxMessage, Project, RetrainRun
from feedback.services import retrain, runs
from tests.conftest import People, login
from tests.integration import lifecycle_data as data
from tests.integration.test_lifecycle import run_once

pytestmark = pytest.mark.usefixtures("backend")
TICKS = 100
HOUR = timedelta(hours=1)


def silence(db: Database, run_id: int) -> None:
    """Make a running attempt look like its worker died an hour ago."""
    with db.transaction() as session:
        run = session.get_one(RetrainRun, run_id)
        run.heartbeat_at = (run.heartbeat_at or run.requested_at) - HOUR


def get_run(db: Database, run_id: int) -> RetrainRun:
    with db.read() as session:
        return session.get_one(RetrainRun, run_id)


def count(db: Database, model: Any) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_a_quiet_run_is_retried_then_fails_with_the_reason_and_does_not_loop(
    db: Database, settings: Settings, project: str, people: People
) -> None:
    run_id = retrain.request_retrain(db, people.admin, project)
    for attempt in (1, 2, 3):
        started = runs.start(db, run_id)
        assert started is not None
        assert started.attempt == attempt
        runs.record_stage(db, started, "fit")
        assert retrain.schedule_due(db, settings) == []  # alive: nothing to do
        silence(db, run_id)
        retrain.schedule_due(db, settings)
        with pytest.raises(runs.TakenOver):
            runs.record_stage(db, started, "evaluate")  # the lost attempt may write nothing
    run = get_run(db, run_id)
    assert run.status == "failed"
    assert run.stage == "fit"
    assert (
        run.error
        == "gave up after 3 attempts; attempt 3: the worker stopped responding at stage fit"
    )
    assert run.report is not None
    assert len(run.report["lost"]) == 3
    assert retrain.execute_retrain(db, settings, run_id) == "failed"  # a late delivery: no-op
    assert retrain.schedule_due(db, settings) == []
    assert count(db, RetrainRun) == 1
    with db.read() as session:
        messages = session.scalars(
            select(OutboxMessage.payload).where(OutboxMessage.kind == "retrain")
        )
        assert list(messages) == [{"run_id": run_id}] * 3  # the request and two retries


def test_a_retried_run_completes_once_and_its_report_remembers_the_loss(
    db: Database, settings: Settings, project: str, people: People
) -> None:
    run_id = retrain.request_retrain(db, people.admin, project)
    lost = runs.start(db, run_id)
    assert lost is not None
    silence(db, run_id)
    retrain.schedule_due(db, settings)
    assert get_run(db, run_id).status == "requested"
    assert retrain.execute_retrain(db, settings, run_id) == "succeeded"
    run = get_run(db, run_id)
    assert run.attempts == 2
    assert run.report is not None
    assert len(run.report["lost"]) == 1
    assert count(db, ModelVersion) == 1


def test_an_attempt_taken_over_mid_run_stops_without_writing(
    db: Database, settings: Settings, project: str, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = retrain.request_retrain(db, people.admin, project)
    original = runs.record_stage

    def taken_over_before_deciding(
        db_: Database, started: runs.Started, stage: str, **report: Any
    ) -> None:
        if stage == "decide" and started.attempt == 1:
            silence(db, run_id)
            retrain.schedule_due(db, settings)  # the tick gives the run to another attempt
        original(db_, started, stage, **report)

    monkeypatch.setattr(runs, "record_stage", taken_over_before_deciding)
    assert retrain.execute_retrain(db, settings, run_id) == "requested"
    assert count(db, ModelVersion) == 0
    assert retrain.execute_retrain(db, settings, run_id) == "succeeded"
    assert count(db, ModelVersion) == 1


def test_a_champion_changed_during_the_run_makes_its_promotion_fail(
    db: Database, settings: Settings, project: str, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_once(db, settings, people)
    data.add_decisions(db, project, data.fresh_texts(40))
    data.set_project(db, project, promotion_min_gain=-1.0)
    original = runs.record_stage

    def rollback_meanwhile(db_: Database, started: runs.Started, stage: str, **report: Any) -> None:
        if stage == "decide":
            with db.transaction() as session:
                session.execute(update(Project).values(champion_id=None))
        original(db_, started, stage, **report)

    monkeypatch.setattr(runs, "record_stage", rollback_meanwhile)
    second = run_once(db, settings, people)
    assert second.status == "rejected"
    with db.read() as session:
        version = session.get_one(ModelVersion, second.model_version_id)
        assert version.reason == "the champion changed while this run was training"
        assert session.scalar(select(Project.champion_id)) is None
    assert first.model_version_id is not None


def ticker(url: str, barrier: Any, ticks: int, out: Any) -> None:
    """One process playing a beat's tick task: call the tick's service function `ticks` times."""
    db = make_database(url)
    settings = Settings(
        instance_path=Path("."), database_url=url, broker_url="filesystem://", secret_key="x" * 40
    )
    barrier.wait()
    requested = []
    for _ in range(ticks):
        requested += retrain.schedule_due(db, settings)
    db.dispose()
    out.put(requested)


def test_two_processes_ticking_at_once_request_each_due_run_exactly_once(
    db: Database, settings: Settings, project: str, people: People, database_url: str
) -> None:
    """The honest equivalent of two beats: beats only enqueue ticks; what must not race is the
    tick's service function, here run from two processes at once, 100 times each."""
    context = multiprocessing.get_context("spawn")
    data.set_project(db, project, retrain_min_decisions=5)
    batches = 0
    for _ in range(3):
        barrier, out = context.Barrier(2), context.Queue()
        workers = [
            context.Process(target=ticker, args=(database_url, barrier, TICKS, out))
            for _ in range(2)
        ]
        for process in workers:
            process.start()
        requested = out.get(timeout=240) + out.get(timeout=240)
        for process in workers:
            process.join(timeout=60)
        assert len(requested) == 1, requested  # one run per due condition, whoever ticked
        assert retrain.execute_retrain(db, settings, requested[0]) in ("succeeded", "rejected")
        data.add_decisions(db, project, data.fresh_texts(5, offset=3000 + 10 * batches))
        batches += 1
    with db.read() as session:
        watermarks = [r["requested_watermark"] for r in session.scalars(select(RetrainRun.report))]
        outbox = session.scalar(
            select(func.count(OutboxMessage.id)).where(OutboxMessage.kind == "retrain")
        )
    assert len(watermarks) == batches
    assert len(set(watermarks)) == batches
    assert outbox == batches


def test_the_run_api_and_page_show_progress_by_stage(
    db: Database,
    settings: Settings,
    client: FlaskClient,
    project: str,
    people: People,
    service_token: str,
) -> None:
    run_id = retrain.request_retrain(db, people.admin, project)
    headers = {"Authorization": f"Bearer {service_token}"}
    waiting = client.get(f"/api/v1/projects/demo/runs/{run_id}", headers=headers).get_json()
    assert waiting["active"]
    assert {s["state"] for s in waiting["stages"]} == {"pending"}
    started = runs.start(db, run_id)
    assert started is not None
    runs.record_stage(db, started, "evaluate", timings={"snapshot": 0.5, "fit": 1.25})
    live = client.get(f"/api/v1/projects/demo/runs/{run_id}", headers=headers).get_json()
    assert [(s["name"], s["state"], s["seconds"]) for s in live["stages"]] == [
        ("snapshot", "done", 0.5),
        ("fit", "done", 1.25),
        ("evaluate", "running", None),
        ("decide", "pending", None),
        ("rescore", "pending", None),
    ]
    silence(db, run_id)
    retrain.schedule_due(db, settings)
    retrain.execute_retrain(db, settings, run_id)
    done = client.get(f"/api/v1/projects/demo/runs/{run_id}", headers=headers).get_json()
    assert done["status"] == "succeeded"
    assert done["model_version"] == 1
    assert [s["state"] for s in done["stages"]] == ["done"] * 4 + ["pending"]
    assert done["active"]
    assert done["report"]["decision"]["promoted"] is True
    login(client)
    page = client.get(f"/projects/demo/runs/{run_id}").get_data(as_text=True)
    assert f'data-url="/api/v1/projects/demo/runs/{run_id}"' in page
    assert 'data-active="1"' in page
    assert re.search(r'<script src="/static/run\.js" defer></script>', page)
    assert not re.search(r"<script(?![^>]*src=)", page)
    assert " on" + "click=" not in page
    assert "attempt 1: the worker stopped responding at stage evaluate" in page
    assert client.get("/projects/demo/runs/999").status_code == 404
    script = client.get("/static/run.js")
    assert script.status_code == 200
    assert b"location.reload" in script.get_data()
    script.close()


def test_a_delivery_for_a_run_that_no_longer_exists_does_nothing(
    db: Database, settings: Settings
) -> None:
    assert retrain.execute_retrain(db, settings, 12345) == "missing"
