"""Idempotency keys under real concurrency: a threaded server, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from feedback.db.engine import Database
from feedback.db.models import IdempotencyKey, Item
from feedback.domain.errors import Conflict, InvalidInput
from feedback.services import idempotency
from tests.live import serve_app

pytestmark = pytest.mark.usefixtures("backend")
REQUESTS = 16


def post(url: str, token: str, body: bytes, key: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": key,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_sixteen_concurrent_identical_requests_store_once_and_answer_alike(
    app: Flask, db: Database, service_token: str
) -> None:
    items = [
        {
            "external_id": f"e{i}",
            "input": {"text": f"t{i}"},
            "probabilities": {"neg": 0.5, "pos": 0.5},
        }
        for i in range(50)
    ]
    body = json.dumps({"items": items}).encode()
    start = threading.Barrier(REQUESTS)

    def one(url: str) -> tuple[int, bytes]:
        start.wait(timeout=60)
        return post(url, service_token, body, "the-one-key")

    with serve_app(app) as base, ThreadPoolExecutor(REQUESTS) as pool:
        replies = list(pool.map(one, [f"{base}/api/v1/projects/demo/predictions"] * REQUESTS))
    assert {status for status, _ in replies} == {200}
    assert len({reply for _, reply in replies}) == 1  # identical bodies
    answer = json.loads(replies[0][1])
    assert [i["duplicate"] for i in answer["items"]] == [False] * 50
    with db.read() as session:
        assert session.scalar(select(func.count(IdempotencyKey.id))) == 1
        assert session.scalar(select(func.count(Item.id)).where(Item.route != "seed")) == 50
        assert session.scalars(select(IdempotencyKey.state)).one() == "done"


def keyed(key: str = "k", body: object = "body") -> idempotency.Keyed:
    return idempotency.Keyed("token:test", key, idempotency.request_digest("POST", "/x", body))


def test_a_retry_waits_for_the_first_answer_then_replays_it(db: Database) -> None:
    started, finish = threading.Event(), threading.Event()

    def slow(claim: idempotency.Claim | None) -> dict[str, object]:
        started.set()
        assert finish.wait(timeout=60)
        with db.transaction() as session:
            idempotency.complete(session, claim, {"answer": 42})
        return {"answer": 42}

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(idempotency.once, db, keyed(), slow)
        assert started.wait(timeout=60)
        with pytest.raises(Conflict):  # still running after a short wait: 409
            idempotency.claim(db, keyed(), wait_seconds=0.1)
        finish.set()
        assert first.result(timeout=60) == idempotency.Answer({"answer": 42}, replayed=False)
    assert idempotency.once(db, keyed(), slow) == idempotency.Answer({"answer": 42}, replayed=True)
    with pytest.raises(InvalidInput) as caught:
        idempotency.once(db, keyed(body="another body"), slow)
    assert caught.value.details[0].field == "Idempotency-Key"


def test_a_failed_request_releases_its_key(db: Database) -> None:
    def boom(claim: idempotency.Claim | None) -> dict[str, object]:
        raise RuntimeError("the work failed")

    with pytest.raises(RuntimeError):
        idempotency.once(db, keyed(), boom)
    with db.read() as session:
        assert session.scalar(select(func.count(IdempotencyKey.id))) == 0


def test_a_dead_requests_marker_is_taken_over_and_the_late_one_cannot_complete(
    db: Database,
) -> None:
    dead = idempotency.claim(db, keyed())
    assert isinstance(dead, idempotency.Claim)
    with db.transaction() as session:  # the marker is older than any live request could be
        session.execute(update(IdempotencyKey).values(created_at=datetime(2000, 1, 1)))
    taker = idempotency.claim(db, keyed())
    assert taker == dead  # the same row, taken over
    with db.transaction() as session:
        idempotency.complete(session, taker, {"by": "taker"})
    with pytest.raises(Conflict), db.transaction() as session:
        idempotency.complete(session, dead, {"by": "late"})
    assert idempotency.once(db, keyed(), lambda c: {}) == idempotency.Answer({"by": "taker"}, True)


def test_concurrent_batches_sharing_external_ids_store_each_once(
    db: Database, service_token: str
) -> None:
    from feedback.services import ingest, users

    caller = users.principal_for_token(db, service_token)
    assert caller is not None
    batches = [
        [
            {
                "external_id": f"shared-{i}",
                "input": {"text": "t"},
                "probabilities": {"neg": 0.5, "pos": 0.5},
            }
            for i in range(start, start + 300)
        ]
        for start in (0, 100, 200, 0)
    ]
    start = threading.Barrier(len(batches))

    def one(batch: list[dict[str, object]]) -> list[object]:
        start.wait(timeout=60)
        return list(ingest.submit_predictions(db, caller, "demo", batch))

    with ThreadPoolExecutor(len(batches)) as pool:
        answers = list(pool.map(one, batches))
    ids: dict[str, int] = {}
    for answer in answers:
        for result in answer:
            assert ids.setdefault(result.external_id, result.id) == result.id  # one row per id
    assert sum(not r.duplicate for answer in answers for r in answer) == 500
    with db.read() as session:
        assert session.scalar(select(func.count(Item.id)).where(Item.route != "seed")) == 500
