"""Migrations run up, down and up again on both databases, and agree with the models."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url

from feedback.db.base import Base
from feedback.db.engine import make_database, make_engine
from feedback.db.migrate import downgrade, upgrade
from feedback.db.models import Item
from feedback.services import projects
from feedback.services.seed_files import Example
from tests.conftest import POSTGRES_URL, need_service


@pytest.fixture
def empty_url(backend: str, tmp_path: object) -> Iterator[str]:
    """An empty database with no tables at all."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/migrations.db"
        return
    base = need_service("postgres", POSTGRES_URL)
    name = f"feedback_mig_{uuid.uuid4().hex[:10]}"
    admin = make_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base.replace("postgresql://", "postgresql+psycopg://", 1)).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    upgrade(empty_url)
    assert _tables(empty_url) == set(Base.metadata.tables)
    downgrade(empty_url)
    assert _tables(empty_url) == set()
    upgrade(empty_url)
    assert _tables(empty_url) == set(Base.metadata.tables)


def test_models_and_migrations_agree(empty_url: str) -> None:
    upgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == [], (
        f"models and migrations disagree; autogenerate a migration: {differences}"
    )


def test_items_get_their_own_random_keys_when_migrated_and_when_inserted(empty_url: str) -> None:
    upgrade(empty_url, "0004_queue_indexes")
    db = make_database(empty_url)
    try:
        spec = projects.ProjectSpec(slug="keys", labels=["neg", "pos"])
        seed = [Example({"text": f"text {n}"}, ("neg", "pos")[n % 2]) for n in range(40)]
        projects.create_project(db, spec, seed)
        upgrade(empty_url)
        projects.create_project(db, projects.ProjectSpec(slug="later", labels=["neg", "pos"]), seed)
        with db.read() as session:
            keys = session.scalars(select(Item.random_key)).all()
    finally:
        db.dispose()
    assert len(keys) == 80
    assert len(set(keys)) == 80
    assert all(0.0 <= key < 1.0 for key in keys)
