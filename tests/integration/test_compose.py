"""docker-compose.yml without Docker: each app service's own command, run against local services.

The command and environment come from the compose file as written; only what names the
containers' world is rewritten: the PostgreSQL and Redis hosts become the test servers (a
database of this test's own, Redis DB 13), the web binds a free port on 127.0.0.1, /data
becomes tmp_path, and the secret becomes a random one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import pytest
import redis
import yaml
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from feedback.db.base import Base
from feedback.db.engine import make_engine
from feedback.db.migrate import upgrade
from tests.conftest import POSTGRES_URL, REDIS_URL, need_service

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("migrate", "web", "worker", "beat")
REDIS_TEST_DB = 13  # never 0: that is where a developer's own data lives
WAIT_SECONDS = 60.0
STOP_SECONDS = 15.0
# migrate and web get a broker that refuses at once: neither may need Redis (DESIGN.md).
NO_BROKER = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The parsed docker-compose.yml."""
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    found = compose["services"][name]
    assert isinstance(found, dict)
    return found


# --- the file's structural promises ------------------------------------------------------


def test_app_services_share_one_production_environment(compose: dict[str, Any]) -> None:
    environments = [service(compose, name)["environment"] for name in APP_SERVICES]
    assert all(env == environments[0] for env in environments)
    env = environments[0]
    assert env["FEEDBACK_ENV"] == "production"
    assert env["FEEDBACK_INSTANCE_PATH"] == "/data"
    for name in ("web", "worker", "beat"):
        assert "data:/data" in service(compose, name)["volumes"], name
    assert "data" in compose["volumes"]


def test_urls_name_the_compose_services_and_their_credentials(compose: dict[str, Any]) -> None:
    env = service(compose, "web")["environment"]
    database = urlsplit(env["FEEDBACK_DATABASE_URL"])
    postgres = service(compose, "postgres")["environment"]
    assert database.scheme == "postgresql"
    assert database.hostname == "postgres"
    assert (database.username, database.password, database.path) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        "/" + postgres["POSTGRES_DB"],
    )
    broker = urlsplit(env["FEEDBACK_BROKER_URL"])
    assert broker.scheme == "redis"
    assert broker.hostname == "redis"
    assert {"postgres", "redis"} <= set(compose["services"])


def test_the_secret_key_must_be_given(compose: dict[str, Any]) -> None:
    value = service(compose, "web")["environment"]["FEEDBACK_SECRET_KEY"]
    # `:?` makes compose refuse to start when the variable is unset or empty: no default.
    assert re.fullmatch(r"\$\{FEEDBACK_SECRET_KEY:\?[^}]+\}", value), value


def test_exactly_one_beat(compose: dict[str, Any]) -> None:
    beats = [
        name for name, spec in compose["services"].items() if "beat" in (spec.get("command") or [])
    ]
    assert beats == ["beat"]
    beat = service(compose, "beat")
    assert beat.get("scale", 1) == 1
    assert beat.get("deploy", {}).get("replicas", 1) == 1


def test_start_order_is_healthy_databases_then_migrate_then_the_rest(
    compose: dict[str, Any],
) -> None:
    for name in ("postgres", "redis", "web"):
        assert "healthcheck" in service(compose, name), name
    # A socket probe passes while the image's first-start init server is up (see the file).
    assert "--host=127.0.0.1" in service(compose, "postgres")["healthcheck"]["test"]
    migrate = service(compose, "migrate")
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no"
    for name in ("web", "worker", "beat"):
        depends = service(compose, name)["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    for name in ("worker", "beat"):
        assert service(compose, name)["depends_on"]["redis"]["condition"] == "service_healthy"


def test_commands_are_exec_form(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        command = service(compose, name)["command"]
        assert isinstance(command, list), name
        assert all(isinstance(arg, str) for arg in command), name


def test_image_runs_as_a_user_on_an_in_place_install() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    assert any("pip install" in line and "-e ." in line for line in lines)
    assert "EXPOSE 8000" in lines


# --- local stand-ins for the containers' world --------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rehost(url: str, local: str, path: str | None = None) -> str:
    """Keep the scheme the compose file uses; take the server (and database) from `local`."""
    there, here = urlsplit(url), urlsplit(local)
    return urlunsplit(SplitResult(there.scheme, here.netloc, path or here.path, "", ""))


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server, dropped afterwards."""
    base = need_service("postgres", POSTGRES_URL)
    name = f"feedback_compose_{uuid.uuid4().hex[:10]}"
    admin = make_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def migrated_database(empty_database: str) -> str:
    upgrade(empty_database)
    return empty_database


@pytest.fixture
def broker() -> Iterator[str]:
    """Redis DB 13 on the test server, held by this test alone, flushed before and after."""
    server = need_service("redis", REDIS_URL)
    url = rehost(server, server, f"/{REDIS_TEST_DB}")
    lock = Path(tempfile.gettempdir()) / f"feedback-test-redis-{REDIS_TEST_DB}.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another test session would share the queues
        client = redis.Redis.from_url(url)
        assert client.connection_pool.connection_kwargs["db"] == REDIS_TEST_DB
        client.flushdb()
        try:
            yield url
        finally:
            client.flushdb()
            client.close()


@pytest.fixture
def local_env(compose: dict[str, Any], tmp_path: Path) -> Callable[..., dict[str, str]]:
    """Build a service's environment from the file, pointed at the local services."""

    def build(name: str, database: str, broker: str = NO_BROKER) -> dict[str, str]:
        env = {str(k): str(v) for k, v in service(compose, name)["environment"].items()}
        env["FEEDBACK_DATABASE_URL"] = rehost(env["FEEDBACK_DATABASE_URL"], database)
        env["FEEDBACK_BROKER_URL"] = rehost(env["FEEDBACK_BROKER_URL"], broker)
        env["FEEDBACK_INSTANCE_PATH"] = str(tmp_path / "data")
        env["FEEDBACK_SECRET_KEY"] = secrets.token_urlsafe(36)  # 48 characters
        env["FEEDBACK_TICK_SECONDS"] = "1"
        env["PYTHONUNBUFFERED"] = "1"  # the Dockerfile sets it too
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_") and k != "PORT"
        }
        return {**inherited, **env}

    (tmp_path / "data").mkdir()
    return build


def argv(compose: dict[str, Any], name: str, port: int | None = None) -> list[str]:
    """The service's command as written, with its executable mapped to this environment."""
    command = [str(arg) for arg in service(compose, name)["command"]]
    if port is not None:
        assert "0.0.0.0:8000" in command, command  # what the port mapping and EXPOSE expect
        command = [arg.replace("0.0.0.0:8000", f"127.0.0.1:{port}") for arg in command]
    executable, *rest = command
    mapped = {
        "feedback": [str(Path(sys.executable).with_name("feedback"))],
        "python": [sys.executable],
        "gunicorn": [sys.executable, "-m", "gunicorn"],
    }
    return [*mapped[executable], *rest]


class Running:
    """One started service: its process and its combined output in a file."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                command,
                env=env,
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str) -> re.Match[str]:
        """Wait until the output matches; fail if the process exits or time runs out."""
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            found = re.search(pattern, self.output())
            if found:
                return found
            if self.process.poll() is not None:
                pytest.fail(f"exited {self.process.returncode}:\n{self.output()}")
            time.sleep(0.2)
        pytest.fail(f"no {pattern!r} within {WAIT_SECONDS:.0f}s:\n{self.output()}")

    def stop(self) -> None:
        """Ask politely, then kill the whole process group (gunicorn and Celery children)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[str, list[str], dict[str, str]], Running]]:
    """Start services; every one is stopped when the test ends, however it ends."""
    started: list[Running] = []

    def launch(name: str, command: list[str], env: dict[str, str]) -> Running:
        started.append(Running(command, env, tmp_path / f"{name}.log"))
        return started[-1]

    try:
        yield launch
    finally:
        for running in reversed(started):
            running.stop()


# --- the services, run as written ---------------------------------------------------------


@pytest.mark.services
def test_migrate_creates_the_schema_in_an_empty_database(
    compose: dict[str, Any], local_env: Callable[..., dict[str, str]], empty_database: str
) -> None:
    result = subprocess.run(
        argv(compose, "migrate"),
        env=local_env("migrate", empty_database),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    engine = make_engine(empty_database)
    try:
        tables = set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert revision


@pytest.mark.services
def test_web_serves_healthz(
    compose: dict[str, Any],
    local_env: Callable[..., dict[str, str]],
    migrated_database: str,
    start: Callable[..., Running],
) -> None:
    port = free_port()
    web = start("web", argv(compose, "web", port), local_env("web", migrated_database))
    url = f"http://127.0.0.1:{port}/healthz"
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200
                assert b'"ok"' in response.read()
                return
        except OSError:
            if web.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{url} never answered:\n{web.output()}")
            time.sleep(0.3)


@pytest.mark.services
def test_beat_ticks_and_a_worker_runs_the_tick(
    compose: dict[str, Any],
    local_env: Callable[..., dict[str, str]],
    migrated_database: str,
    broker: str,
    start: Callable[..., Running],
) -> None:
    worker = start(
        "worker", argv(compose, "worker"), local_env("worker", migrated_database, broker)
    )
    worker.wait_for(r"celery@\S+ ready")
    beat = start("beat", argv(compose, "beat"), local_env("beat", migrated_database, broker))
    beat.wait_for(r"Sending due task tick")
    worker.wait_for(r"Task workers\.tasks\.tick\[[^\]]+\] succeeded")
