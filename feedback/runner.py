"""`feedback run`: migrate, create the demo, then supervise web + worker + beat."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

import click

from feedback.config import Settings
from feedback.db.engine import Database
from feedback.db.migrate import upgrade
from feedback.services.demo import ensure_demo

log = logging.getLogger(__name__)
STOP_GRACE_SECONDS = 15.0


def child_environment(settings: Settings) -> dict[str, str]:
    """The variables that make every child process see the same settings as this one."""
    env = dict(os.environ)
    env.update(
        {
            "FEEDBACK_INSTANCE_PATH": str(settings.instance_path),
            "FEEDBACK_DATABASE_URL": settings.database_url,
            "FEEDBACK_BROKER_URL": settings.broker_url,
            "FEEDBACK_TICK_SECONDS": str(settings.tick_seconds),
            "FEEDBACK_DISPATCH_SECONDS": str(settings.dispatch_seconds),
            "FEEDBACK_ENV": settings.env,
            "PORT": str(settings.port),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def commands(settings: Settings) -> dict[str, list[str]]:
    """The three processes of the embedded setting."""
    python = sys.executable
    return {
        "web": [
            python,
            "-m",
            "gunicorn",
            "--bind",
            f"{settings.host}:{settings.port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--no-control-socket",
            "--graceful-timeout",
            "10",
            "--access-logfile",
            "-",
            "feedback.web:create_app_from_env()",
        ],
        "worker": [
            python,
            "-m",
            "workers",
            "worker",
            "--concurrency=1",
            "--without-mingle",
            "--without-gossip",
        ],
        "beat": [python, "-m", "workers", "beat"],
    }


def run_all(settings: Settings, db: Database, demo: bool = True) -> int:
    """Prepare the instance, start the processes, and stop them all on Ctrl-C or a crash."""
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    if demo:
        click.echo("preparing the demo project (first run trains the first model)...")
        credentials = ensure_demo(db, settings)
        click.echo(f"  admin:   {credentials.admin_email} / {credentials.admin_password}")
        click.echo(f"  labeler: {credentials.labeler_email} / {credentials.labeler_password}")
    db.dispose()
    click.echo(
        f"feedback is starting on http://{settings.host}:{settings.port}  (Ctrl-C stops everything)"
    )
    env = child_environment(settings)
    children = {name: subprocess.Popen(argv, env=env) for name, argv in commands(settings).items()}
    return _supervise(children)


def _supervise(children: dict[str, subprocess.Popen[bytes]]) -> int:
    stopping = {"flag": False}

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    exit_code = 0
    while not stopping["flag"]:
        dead = [name for name, child in children.items() if child.poll() is not None]
        if dead:
            click.echo(f"{', '.join(dead)} stopped unexpectedly; stopping the rest", err=True)
            exit_code = 1
            break
        time.sleep(0.3)
    _stop_all(children)
    click.echo("stopped")
    return exit_code


def _stop_all(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children.values():
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
