"""Idempotency keys: run a request once per key and replay its answer to every retry.

The in-flight marker is committed in its own short transaction before the work starts, so a
concurrent retry sees it at once; the work records its answer in the marker row inside its
own transaction, so the answer and the change it describes commit together or not at all.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from feedback.db.clock import utcnow
from feedback.db.engine import Database
from feedback.db.models import IdempotencyKey
from feedback.domain.errors import Conflict, FieldError, InvalidInput

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200
WAIT_SECONDS = 5.0  # a retry that finds its key in flight waits this long for the answer
POLL_SECONDS = 0.05
STALE_SECONDS = 600  # a marker this old belongs to a request that died; a retry takes it over
RUNNING, DONE = "running", "done"


class InFlight(Conflict):
    """The first request with this key is still running."""

    code = "in_flight"
    retry_after = 1


@dataclass(frozen=True)
class Keyed:
    """A request that carries an idempotency key: who sent it, the key, and its digest."""

    scope: str
    key: str
    digest: str


@dataclass(frozen=True)
class Claim:
    """The right to do the work for one key; the work completes it in its transaction."""

    id: int


@dataclass(frozen=True)
class Answer:
    body: dict[str, Any]
    replayed: bool


def request_digest(method: str, path: str, body: Any) -> str:
    """Fingerprint a request by method, path and canonical JSON body."""
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def key_problem(key: str) -> str | None:
    """Say what is wrong with an idempotency key, or None if it is usable."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        return f"must have 1 to {MAX_KEY_LENGTH} characters"
    if not all(" " < char < "\x7f" for char in key):
        return "must be printable ASCII without spaces"
    return None


def once(
    db: Database, keyed: Keyed | None, work: Callable[[Claim | None], dict[str, Any]]
) -> Answer:
    """Run `work` once per key; replay its recorded answer to retries of the same request.

    Raises:
        InvalidInput: the key was used before with a different request.
        InFlight: the first request with this key is still running after a short wait.
    """
    if keyed is None:
        return Answer(work(None), replayed=False)
    found = claim(db, keyed)
    if isinstance(found, Answer):
        return found
    try:
        return Answer(work(found), replayed=False)
    except BaseException:
        release(db, found)  # a failed request leaves no trace: its retry runs afresh
        raise


def claim(db: Database, keyed: Keyed, wait_seconds: float | None = None) -> Claim | Answer:
    """Take the key for this request, or wait briefly for the first request's answer."""
    deadline = time.monotonic() + (WAIT_SECONDS if wait_seconds is None else wait_seconds)
    found = _insert_or_look(db, keyed)
    while found is None:
        if time.monotonic() >= deadline:
            raise InFlight(f"a request with this {HEADER} is still being processed; retry soon")
        time.sleep(POLL_SECONDS)
        found = _look(db, keyed)
    return found


def complete(session: Session | Connection, claim: Claim | None, body: dict[str, Any]) -> None:
    """Record the answer in the work's own transaction; refuse if the key was taken over."""
    if claim is None:
        return
    done = session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.id == claim.id, IdempotencyKey.state == RUNNING)
        .values(state=DONE, response_status=200, response_body=body)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise InFlight(f"another request with this {HEADER} took over; retry to get its answer")


def release(db: Database, claim: Claim) -> None:
    """Drop an unfinished claim so that a retry of the request runs again."""
    with db.transaction() as session:
        session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.id == claim.id, IdempotencyKey.state == RUNNING
            )
        )


def purge(db: Database, older_than_seconds: int) -> int:
    """Delete answered keys older than the given age; return how many."""
    with db.transaction() as session:
        result = session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.state == DONE,
                IdempotencyKey.created_at < utcnow(-older_than_seconds),
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def _insert_or_look(db: Database, keyed: Keyed) -> Claim | Answer | None:
    """Insert the in-flight marker in its own transaction; None when another request has it."""
    with db.transaction() as session:
        new_id = session.scalar(_insert_marker(session, keyed))
        if new_id is not None:
            return Claim(new_id)
        row = _row(session, keyed)
        if row is None:
            return None  # released meanwhile: the next look inserts again
        answer = _answer(row, keyed)
        if answer is None and _take_over_stale(session, row.id):
            return Claim(row.id)
        return answer


def _look(db: Database, keyed: Keyed) -> Claim | Answer | None:
    with db.read() as session:
        row = _row(session, keyed)
        answer = None if row is None else _answer(row, keyed)
        if row is not None:
            return answer
    return _insert_or_look(db, keyed)


def _insert_marker(session: Session, keyed: Keyed) -> Any:
    values = {
        "scope": keyed.scope,
        "key": keyed.key,
        "request_digest": keyed.digest,
        "state": RUNNING,
        "created_at": utcnow(),
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(IdempotencyKey).values(**values)
    return statement.on_conflict_do_nothing().returning(IdempotencyKey.id)


def _row(session: Session, keyed: Keyed) -> IdempotencyKey | None:
    return session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.scope == keyed.scope, IdempotencyKey.key == keyed.key
        )
    )


def _answer(row: IdempotencyKey, keyed: Keyed) -> Answer | None:
    """The recorded answer, None while running; a different request with the key is refused."""
    if row.request_digest != keyed.digest:
        raise InvalidInput(
            f"this {HEADER} was used with a different request",
            [FieldError(HEADER, "was already used with a different method, path or body")],
        )
    if row.state == DONE and row.response_body is not None:
        return Answer(dict(row.response_body), replayed=True)
    return None


def _take_over_stale(session: Session, row_id: int) -> bool:
    taken = session.execute(
        update(IdempotencyKey)
        .where(
            IdempotencyKey.id == row_id,
            IdempotencyKey.state == RUNNING,
            IdempotencyKey.created_at < utcnow(-STALE_SECONDS),
        )
        .values(created_at=utcnow())
    )
    return bool(taken.rowcount == 1)  # type: ignore[attr-defined]
