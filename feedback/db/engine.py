"""Engines and sessions: SQLite tuned for several processes, PostgreSQL in UTC."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

READONLY = "feedback_readonly"
STATEMENTS = "feedback_statements"  # each statement on its own: no BEGIN
SQLITE_BUSY_TIMEOUT_MS = 30_000


@dataclass
class Database:
    """One engine and its session factories; services open their own transactions on it."""

    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    statement_engine: Engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Open a write transaction, commit when the block ends, roll back on any error."""
        with self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Open a read-only session (on SQLite it does not take the write lock)."""
        with self.read_sessions() as session, session.begin():
            yield session

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """Open a Core write transaction (no ORM, for hot paths); commit or roll back as above."""
        with self.engine.begin() as connection:
            yield connection

    @contextmanager
    def read_statements(self) -> Iterator[Connection]:
        """A Core connection for reads that need no snapshot across statements (hot paths).

        Each statement runs on its own, seeing what was committed when it started (as every
        statement of a READ COMMITTED transaction does): no BEGIN, no COMMIT, which saves
        PostgreSQL two round trips. For reads only: a write through it would commit at once.
        """
        with self.statement_engine.connect() as connection:
            yield connection

    def dispose(self) -> None:
        """Drop pooled connections (after a fork, or at shutdown)."""
        self.engine.dispose()


def make_database(url: str, **engine_options: Any) -> Database:
    """Build the engine for `url` with the settings each backend needs."""
    engine = make_engine(url, **engine_options)
    read_engine = engine.execution_options(**{READONLY: True})
    statements = read_engine.execution_options(**{STATEMENTS: True})
    if engine.dialect.name == "postgresql":
        statements = statements.execution_options(isolation_level="AUTOCOMMIT")
    return Database(
        engine=engine,
        sessions=sessionmaker(engine, expire_on_commit=False),
        read_sessions=sessionmaker(read_engine, expire_on_commit=False),
        statement_engine=statements,
    )


def make_engine(url: str, foreign_keys: bool = True, **options: Any) -> Engine:
    """Create an engine: SQLite in WAL mode with a busy timeout, PostgreSQL pinned to UTC.

    Migrations pass `foreign_keys=False`: SQLite's batch mode copies tables, which must not
    cascade deletes into the tables that point at them.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **options
        )
        _tune_sqlite(engine, foreign_keys)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    options.setdefault("pool_pre_ping", True)
    return create_engine(url, connect_args={"options": "-c timezone=utc"}, **options)


def _tune_sqlite(engine: Engine, foreign_keys: bool) -> None:
    """Let SQLAlchemy, not pysqlite, start transactions, and take the write lock up front.

    A deferred transaction that reads and then writes can fail with SQLITE_BUSY when another
    process committed in between; `BEGIN IMMEDIATE` waits for the lock instead.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        options = connection.get_execution_options()
        if options.get(STATEMENTS, False):
            return  # pysqlite runs each statement in its own implicit transaction
        connection.exec_driver_sql("BEGIN" if options.get(READONLY, False) else "BEGIN IMMEDIATE")
