"""Beat's outbox relay: how often it looks, and backing off while something is down."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from feedback.config import ConfigError, Settings
from workers import beat, tasks
from workers.celery_app import make_celery


@pytest.fixture
def app(tmp_path: Path) -> Celery:
    settings = Settings(
        instance_path=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        broker_url="filesystem://",
        secret_key="test-" + "x" * 40,
        dispatch_seconds=0.5,
    )
    return make_celery(settings)


@pytest.fixture
def ticking(app: Celery, tmp_path: Path) -> Iterator[beat.OutboxBeat]:
    scheduler = beat.OutboxBeat(app=app, schedule_filename=str(tmp_path / "schedule"))
    yield scheduler
    scheduler.close()


def test_the_app_runs_the_relaying_scheduler(app: Celery) -> None:
    assert app.conf.beat_scheduler == "workers.beat:OutboxBeat"


def test_beat_relays_once_per_dispatch_interval_and_sleeps_no_longer_than_until_the_next(
    app: Celery, ticking: beat.OutboxBeat, monkeypatch: pytest.MonkeyPatch
) -> None:
    relayed: list[Celery] = []
    monkeypatch.setattr(tasks, "relay_outbox", lambda a: relayed.append(a) or 0)
    sleep = ticking.tick()
    assert relayed == [app]
    assert 0 < sleep <= 0.5
    ticking.tick()
    assert relayed == [app]  # not due again yet


def test_beat_backs_off_while_the_relay_fails_and_resumes_after_a_success(
    ticking: beat.OutboxBeat,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="workers.beat")
    failing = True

    def relay(_: Celery) -> int:
        if failing:
            raise ConnectionError("database is away")
        return 2

    monkeypatch.setattr(tasks, "relay_outbox", relay)
    for _ in range(8):
        ticking._next_relay = 0.0  # due now
        ticking.tick()  # never raises: beat keeps sending the schedule's tasks
    assert ticking._failures == 8
    assert "next try in 30.0 s" in caplog.text  # doubled from 0.5 s up to the cap
    assert "database is away" in caplog.text
    failing = False
    ticking._next_relay = 0.0
    ticking.tick()
    assert ticking._failures == 0
    assert "handed 2 outbox message(s)" in caplog.text


@pytest.mark.parametrize("raw", ["0", "-1", "soon", "nan", "inf", "90000"])
def test_an_unusable_dispatch_interval_is_refused_by_name(raw: str) -> None:
    with pytest.raises(ConfigError, match="FEEDBACK_DISPATCH_SECONDS"):
        Settings.from_env({"FEEDBACK_DISPATCH_SECONDS": raw, "FEEDBACK_INSTANCE_PATH": "/tmp/x"})
