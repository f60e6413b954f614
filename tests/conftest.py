"""Shared fixtures: settings, databases (SQLite and PostgreSQL), app, client, users, tokens.

Real services are named by environment variables:
- FEEDBACK_TEST_POSTGRES_URL  e.g. postgresql://postgres@127.0.0.1:5432/test
- FEEDBACK_TEST_REDIS_URL     e.g. redis://127.0.0.1:6379/0
With FEEDBACK_TEST_REQUIRE_SERVICES=1 (CI), a missing service fails the test instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import make_url

from feedback.config import Settings
from feedback.db.base import Base
from feedback.db.engine import Database, make_database, make_engine
from feedback.db.migrate import upgrade
from feedback.services import projects, users
from feedback.services.seed_files import Example
from feedback.web import create_app

POSTGRES_URL = os.environ.get("FEEDBACK_TEST_POSTGRES_URL", "")
REDIS_URL = os.environ.get("FEEDBACK_TEST_REDIS_URL", "")
REQUIRE_SERVICES = os.environ.get("FEEDBACK_TEST_REQUIRE_SERVICES", "") == "1"
PASSWORD = "correct horse battery"
BACKENDS = ["sqlite", "postgresql"]


def need_service(name: str, url: str) -> str:
    """Return the service URL; without one, skip locally and fail in CI."""
    if url:
        return url
    message = f"{name} is not configured (set FEEDBACK_TEST_{name.upper()}_URL)"
    if REQUIRE_SERVICES:
        pytest.fail(message + " and FEEDBACK_TEST_REQUIRE_SERVICES=1 forbids skipping")
    pytest.skip(message)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (migrating once is much faster)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated, dropped at the end."""
    base = need_service("postgres", POSTGRES_URL)
    name = f"feedback_test_{uuid.uuid4().hex[:10]}"
    admin = make_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base.replace("postgresql://", "postgresql+psycopg://", 1)).set(database=name)
    rendered = url.render_as_string(hide_password=False)
    upgrade(rendered)
    yield rendered
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate(db: Database) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with db.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Run the test once on SQLite and once on PostgreSQL."""
    return str(request.param)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty database of the requested backend (SQLite when not parametrised)."""
    kind = request.getfixturevalue("backend") if "backend" in request.fixturenames else "sqlite"
    if kind == "sqlite":
        path = tmp_path / "feedback.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url = str(request.getfixturevalue("postgres_server_url"))
    database = make_database(url)
    _truncate(database)
    database.dispose()
    return url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings for one test: its own instance folder and database."""
    instance = tmp_path / "instance"
    instance.mkdir(exist_ok=True)
    return Settings(
        instance_path=instance,
        database_url=database_url,
        broker_url="filesystem://",
        secret_key="test-secret-" + "x" * 40,
        env="test",
        tick_seconds=0.5,
        lease_seconds=300,
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = make_database(settings.database_url)
    yield database
    database.dispose()


@pytest.fixture
def app(settings: Settings, db: Database) -> Flask:
    return create_app(settings, db)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@dataclass(frozen=True)
class People:
    admin: users.Principal
    labeler: users.Principal
    other: users.Principal


@pytest.fixture
def people(db: Database) -> People:
    """An admin, a labeler who is a member of the `demo` project, and one who is not."""
    made = {}
    for email, role in (
        ("admin@test.io", "admin"),
        ("labeler@test.io", "labeler"),
        ("other@test.io", "labeler"),
    ):
        user_id = users.create_user(db, email, PASSWORD, role)
        made[email] = users.Principal(user_id=user_id, role=role, email=email)
    return People(made["admin@test.io"], made["labeler@test.io"], made["other@test.io"])


def text_seed(count: int = 80) -> list[Example]:
    """Separable seed data: positive and negative phrases."""
    good = [
        "great product, works well",
        "love it, excellent",
        "very good value",
        "fantastic and fast",
    ]
    bad = [
        "terrible, broke at once",
        "awful quality, hate it",
        "very bad value",
        "slow and useless",
    ]
    return [
        Example({"text": f"{(good if i % 2 else bad)[i % 4]} #{i}"}, "pos" if i % 2 else "neg")
        for i in range(count)
    ]


@pytest.fixture
def project(db: Database, people: People) -> str:
    """A text project `demo` (labels neg/pos) with seed data; the labeler is a member."""
    spec = projects.ProjectSpec(
        slug="demo",
        labels=["neg", "pos"],
        input_kind="text",
        threshold=0.8,
        audit_rate=0.0,
        promotion_min_holdout=10,
    )
    projects.create_project(db, spec, text_seed())
    projects.add_member(db, "demo", "labeler@test.io")
    return "demo"


@pytest.fixture
def service_token(db: Database, project: str) -> str:
    return users.create_token(db, "test", project, None)


@pytest.fixture
def labeler_token(db: Database, project: str) -> str:
    return users.create_token(db, "test", None, "labeler@test.io")


def login(client: FlaskClient, email: str = "labeler@test.io", password: str = PASSWORD) -> None:
    """Log a test client in through the real form (CSRF token included)."""
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    response = client.post(
        "/login", data={"email": email, "password": password, "csrf_token": token}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
