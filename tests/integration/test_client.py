"""The Python client against a real server on 127.0.0.1: batching, retries, downloads, labels."""

from __future__ import annotations

import hashlib
import threading
import urllib.error
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from feedback.client import FeedbackClient, FeedbackError, QueueFullError
from feedback.config import Settings
from feedback.db.engine import Database
from feedback.db.models import Item, Project
from feedback.services import retrain
from tests.conftest import People
from tests.live import serve_app

pytestmark = pytest.mark.usefixtures("backend")
Start = Callable[[str, list[tuple[str, str]]], Any]


@dataclass
class Recorder:
    """WSGI middleware: records each request; can swallow the app's answer and send another."""

    app: Callable[..., Iterable[bytes]]
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)
    rewrite: Callable[[bytes], bytes] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Start) -> Iterable[bytes]:
        with self.lock:
            self.seen.append(
                (
                    environ["REQUEST_METHOD"],
                    environ["PATH_INFO"],
                    environ.get("HTTP_IDEMPOTENCY_KEY"),
                )
            )
            status = self.fail_next.pop(0) if self.fail_next else None
        if status is None and self.rewrite is None:
            return self.app(environ, start_response)
        captured: list[Any] = []
        body = b"".join(self.app(environ, lambda s, h, *a: captured.append((s, h))))
        if status is not None:  # the work was done, but its answer is lost on the way back
            start_response(f"{status} Oops", [("Content-Type", "text/plain")])
            return [b"upstream trouble"]
        assert self.rewrite is not None
        start_response(
            captured[0][0], [(k, v) for k, v in captured[0][1] if k.lower() != "content-length"]
        )
        return [self.rewrite(body)]


@pytest.fixture
def served(app: Flask) -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder(app.wsgi_app)
    app.wsgi_app = recorder  # type: ignore[method-assign]
    with serve_app(app) as base:
        yield base, recorder


def prediction(i: int, pos: float = 0.5) -> dict[str, Any]:
    return {
        "external_id": f"p{i}",
        "input": {"text": f"text {i}"},
        "probabilities": {"neg": 1 - pos, "pos": pos},
    }


def stored(db: Database) -> int:
    with db.read() as session:
        return session.scalar(select(func.count(Item.id)).where(Item.route != "seed")) or 0


def test_submit_batches_with_a_key_per_batch_and_learns_its_project(
    served: tuple[str, Recorder], db: Database, service_token: str
) -> None:
    base, recorder = served
    client = FeedbackClient(base, service_token, batch_size=3)
    results = client.submit(prediction(i) for i in range(7))
    assert [r["external_id"] for r in results] == [f"p{i}" for i in range(7)]
    assert client.project == "demo"
    posts = [s for s in recorder.seen if s[0] == "POST"]
    assert len(posts) == 3
    assert len({key for _, _, key in posts}) == 3
    assert all(posts[i][2] for i in range(3))
    assert stored(db) == 7


def test_a_lost_answer_is_retried_with_the_same_key_and_replayed(
    served: tuple[str, Recorder], db: Database, service_token: str
) -> None:
    base, recorder = served
    client = FeedbackClient(base, service_token, project="demo", backoff=0.01)
    recorder.fail_next = [502, 503]
    results = client.submit([prediction(1), prediction(2)])
    assert [r["duplicate"] for r in results] == [False, False]  # the replay of the first answer
    posts = [s for s in recorder.seen if s[0] == "POST"]
    assert len(posts) == 3
    assert len({key for _, _, key in posts}) == 1
    assert stored(db) == 2


def test_connection_errors_are_retried(
    served: tuple[str, Recorder], service_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = served
    client = FeedbackClient(base, service_token, project="demo", backoff=0.01)
    real, failures = (
        client._opener.open,
        [urllib.error.URLError("connection refused"), ConnectionResetError()],
    )

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop(0)
        return real(*args, **kwargs)

    monkeypatch.setattr(client._opener, "open", flaky)
    assert len(client.submit([prediction(1)])) == 1
    assert failures == []


def test_retries_are_bounded(served: tuple[str, Recorder], service_token: str) -> None:
    base, recorder = served
    client = FeedbackClient(base, service_token, project="demo", retries=2, backoff=0.01)
    recorder.fail_next = [500, 500, 500]
    with pytest.raises(FeedbackError) as caught:
        client.submit([prediction(1)])
    assert caught.value.status == 500
    assert len(recorder.seen) == 3


def test_client_errors_are_raised_at_once_with_details(
    served: tuple[str, Recorder], db: Database, service_token: str
) -> None:
    base, recorder = served
    client = FeedbackClient(base, service_token, project="demo")
    with pytest.raises(FeedbackError) as caught:
        client.submit([prediction(1), {"external_id": "bad"}])
    assert (caught.value.status, caught.value.code) == (422, "invalid_input")
    assert {d["index"] for d in caught.value.details} == {1}
    assert len(recorder.seen) == 1
    with db.transaction() as session:
        session.execute(update(Project).values(max_queue=0, queue_full="reject"))
    with pytest.raises(QueueFullError) as full:
        client.submit([prediction(2)])
    assert full.value.status == 429
    assert full.value.retry_after
    assert full.value.retry_after > 0
    with pytest.raises(FeedbackError) as missing:
        FeedbackClient(base, service_token, project="nope").current_model()
    assert missing.value.status == 404


def test_predict_model_and_verified_download(
    served: tuple[str, Recorder],
    db: Database,
    settings: Settings,
    people: People,
    service_token: str,
    tmp_path: Path,
) -> None:
    base, recorder = served
    client = FeedbackClient(base, service_token, backoff=0.01)
    with pytest.raises(FeedbackError) as unavailable:
        client.current_model()
    assert unavailable.value.status == 503
    assert len(recorder.seen) == 2
    retrain.execute_retrain(db, settings, retrain.request_retrain(db, people.admin, "demo"))
    predicted = client.predict([{"external_id": "n1", "input": {"text": "love it, excellent"}}])
    assert predicted[0]["label"] == "pos"
    assert predicted[0]["route"] in ("review", "auto", "audit")
    target = tmp_path / "downloads" / "champion.skops"
    meta = client.download_model(target)
    assert (
        hashlib.sha256(target.read_bytes()).hexdigest()
        == meta["sha256"]
        == client.current_model()["sha256"]
    )
    recorder.rewrite = lambda body: body[:-1] + bytes([body[-1] ^ 1]) if len(body) > 1000 else body
    tampered = target.parent / "tampered.skops"
    with pytest.raises(FeedbackError) as caught:
        client.download_model(tampered)
    assert caught.value.code == "digest_mismatch"
    assert sorted(p.name for p in target.parent.iterdir()) == ["champion.skops"]  # no partial file


def test_labels_iterate_every_page_and_resume_from_a_cursor(
    served: tuple[str, Recorder], service_token: str
) -> None:
    base, recorder = served
    client = FeedbackClient(base, service_token, project="demo")
    every = list(client.labels(page_size=25))
    assert len(every) == 80
    assert len([s for s in recorder.seen if "labels" in s[1]]) == 4
    assert [label["external_id"] for label in client.labels(after=every[76]["cursor"])] == [
        label["external_id"] for label in every[77:]
    ]


def test_redirects_are_not_followed(
    app: Flask, served: tuple[str, Recorder], service_token: str
) -> None:
    base, recorder = served

    @app.before_request
    def bounce() -> Any:
        from flask import redirect

        return redirect("http://127.0.0.1:9/elsewhere", code=307)

    with pytest.raises(FeedbackError) as caught:
        FeedbackClient(base, service_token, project="demo").current_model()
    assert caught.value.status == 307
    assert len(recorder.seen) == 1


def test_a_user_token_needs_a_project(served: tuple[str, Recorder], labeler_token: str) -> None:
    base, _ = served
    with pytest.raises(FeedbackError) as caught:
        FeedbackClient(base, labeler_token).current_model()
    assert caught.value.code == "no_project"
    assert (
        FeedbackClient(base, labeler_token, project="demo").labels().__next__()["source"] == "seed"
    )
