"""`feedback run` (what `make run` starts) turns an empty instance folder into a working service."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.client import HTTPResponse
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, HTTPErrorProcessor, Request, build_opener, urlopen

import pytest
from sqlalchemy import func, select

from feedback.db.engine import make_database
from feedback.db.models import Item, ModelVersion, Project, User
from tests.processes import (
    Process,
    clean_environment,
    free_port,
    pids_with_environment,
    start,
    supervised,
    wait_until,
)

pytestmark = pytest.mark.services

FEEDBACK = Path(sys.executable).parent / "feedback"
READY_SECONDS = 120.0
EXIT_SECONDS = 30.0
LOGIN_LINE = re.compile(r"^\s*(admin|labeler):\s+(\S+) / (\S+)\s*$", re.MULTILINE)
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
TICK_DONE = re.compile(r"Task workers\.tasks\.tick\[[^\]]+\] succeeded")


class _KeepStatus(HTTPErrorProcessor):
    """Hand back every response as it is: no redirect followed, no exception for a 4xx."""

    def http_response(self, request: Request, response: HTTPResponse) -> HTTPResponse:
        return response


class Browser:
    """A cookie-keeping HTTP client that shows status codes and redirects as they are."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = build_opener(HTTPCookieProcessor(CookieJar()), _KeepStatus())

    def request(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        data = None if form is None else urlencode(form).encode()
        with self.opener.open(Request(self.base + path, data=data), timeout=30) as response:
            return response.status, response.read().decode()

    def log_in(self, email: str, password: str) -> None:
        status, page = self.request("/login")
        found = CSRF_FIELD.search(page)
        assert status == 200, page
        assert found is not None, page
        form = {"email": email, "password": password, "csrf_token": found.group(1)}
        status, page = self.request("/login", form)
        assert status == 302, page


def healthy(base: str) -> bool:
    try:
        with urlopen(base + "/healthz", timeout=5) as response:
            return bool(response.status == 200 and json.load(response) == {"status": "ok"})
    except HTTPError as error:
        error.close()
        return False
    except OSError:  # not listening yet
        return False


def leftovers(instance: Path) -> dict[int, str]:
    """Processes still running with this instance folder in their environment."""
    return pids_with_environment("FEEDBACK_INSTANCE_PATH", str(instance))


@contextmanager
def feedback_run(instance: Path, name: str) -> Iterator[tuple[str, Process]]:
    """Start `feedback run` on a free port with only the instance folder set; wait until ready."""
    port = free_port()
    env = clean_environment(FEEDBACK_INSTANCE_PATH=str(instance), PORT=str(port))
    runner = start(name, [str(FEEDBACK), "run"], env, instance.parent / "logs")
    with supervised([runner]):
        base = f"http://127.0.0.1:{port}"
        wait_until(f"{base}/healthz to answer", lambda: healthy(base), READY_SECONDS, [runner])
        wait_until(
            "beat and the worker to run a tick",
            lambda: TICK_DONE.search(runner.output()),
            READY_SECONDS,
            [runner],
        )
        yield base, runner


def interrupt(runner: Process, instance: Path, whole_group: bool) -> None:
    """Press Ctrl-C (the terminal signals the whole group) or signal the runner alone."""
    running = " | ".join(leftovers(instance).values())
    for part in ("feedback run", "gunicorn", "workers worker", "workers beat"):
        assert part in running  # the check below would see them
    if whole_group:
        os.killpg(runner.pid, signal.SIGINT)
    else:
        runner.popen.send_signal(signal.SIGINT)
    assert runner.popen.wait(timeout=EXIT_SECONDS) == 0
    assert "stopped" in runner.output()
    with suppress(AssertionError):
        wait_until("every child to exit", lambda: not leftovers(instance), 10.0)
    assert leftovers(instance) == {}


def logins(output: str) -> dict[str, tuple[str, str]]:
    return {role: (email, password) for role, email, password in LOGIN_LINE.findall(output)}


def stored_counts(instance: Path) -> dict[str, int]:
    db = make_database(f"sqlite:///{instance / 'feedback.db'}")
    try:
        with db.read() as session:
            counts = {
                model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
                for model in (Project, User, Item, ModelVersion)
            }
            pool = select(func.count(Item.id)).where(Item.route != "seed")
            return {**counts, "pool": session.scalar(pool) or 0}
    finally:
        db.dispose()


@pytest.mark.timeout(900)  # two starts, each bounded by READY_SECONDS twice and EXIT_SECONDS
def test_run_serves_the_demo_from_an_empty_instance_and_reuses_it(tmp_path: Path) -> None:
    instance = (tmp_path / "instance").resolve()
    instance.mkdir()
    with feedback_run(instance, "first-run") as (base, runner):
        printed = logins(runner.output())
        assert set(printed) == {"admin", "labeler"}, runner.output()
        stored = json.loads((instance / "credentials.json").read_text())
        assert printed["labeler"] == (stored["labeler_email"], stored["labeler_password"])
        assert printed["admin"] == (stored["admin_email"], stored["admin_password"])
        for secret in ("credentials.json", "secret_key"):
            assert stat.S_IMODE((instance / secret).stat().st_mode) == 0o600
        browser = Browser(base)
        assert browser.request("/projects/digits/label")[0] == 302  # not logged in yet
        browser.log_in(*printed["labeler"])
        status, page = browser.request("/projects/digits/label")
        assert status == 200
        assert "Handwritten digits (demo)" in page
        interrupt(runner, instance, whole_group=False)
    first = stored_counts(instance)
    assert first["projects"] == 1
    assert first["model_versions"] == 1
    assert first["pool"] > 0  # the labelers have a queue

    with feedback_run(instance, "second-run") as (base, runner):
        assert logins(runner.output()) == printed
        browser = Browser(base)
        browser.log_in(*printed["labeler"])
        assert browser.request("/projects/digits/label")[0] == 200
        interrupt(runner, instance, whole_group=True)
    assert stored_counts(instance) == first
