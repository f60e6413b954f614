"""Webhooks: signed events from the outbox to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from feedback.config import Settings
from feedback.db.clock import utcnow
from feedback.db.engine import Database
from feedback.db.models import OutboxMessage
from feedback.domain.errors import InvalidInput, NotFound
from feedback.services import gold, ingest, queue, retrain, review, users, webhooks
from feedback.services import outbox as outbox_service
from feedback.services.webhook_http import is_public
from tests.conftest import REDIS_URL, People, need_service
from tests.live import Received, Receiver, webhook_receiver
from tests.processes import clean_environment, redis_database, start, supervised, wait_until

pytestmark = pytest.mark.usefixtures("backend")
REDIS_TEST_DB = 10


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as found:
        yield found


@pytest.fixture
def allowed(settings: Settings) -> Settings:
    """Settings that let webhooks reach 127.0.0.1, as an admin would for a local receiver."""
    return settings.with_overrides(allow_private_webhooks=True)


def decide(db: Database, people: People, external_id: str = "a", label: str = "pos") -> int:
    """Queue one item and vote on it (overlap 1): it is decided, an outbox row is written."""
    ingest.submit_predictions(
        db,
        users.Principal(user_id=None, role="admin"),
        "demo",
        [
            {
                "external_id": external_id,
                "input": {"text": "t"},
                "probabilities": {"neg": 0.5, "pos": 0.5},
            }
        ],
    )
    claim = queue.claim_next(db, people.labeler, "demo", 300)
    assert claim is not None
    queue.cast_vote(db, people.labeler, claim.item_id, label, claim.fence, 1.0)
    return claim.item_id


def outbox(db: Database, kind: str) -> OutboxMessage:
    with db.read() as session:
        return session.scalars(select(OutboxMessage).where(OutboxMessage.kind == kind)).one()


def test_a_decided_label_is_posted_with_a_valid_signature(
    db: Database, project: str, people: People, allowed: Settings, receiver: Receiver
) -> None:
    secret = webhooks.set_webhook(db, project, receiver.url)
    assert secret
    assert secret.startswith("whsec_")
    item_id = decide(db, people)
    result = webhooks.deliver(db, allowed, "label_decided", {"item_id": item_id, "label": "pos"})
    assert result.outcome == "delivered"
    [got] = receiver.requests
    expected = "sha256=" + hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Feedback-Signature"] == expected
    assert webhooks.verify(secret, got.body, expected)
    assert not webhooks.verify("wrong" * 4, got.body, expected)
    event = json.loads(got.body)
    assert (got.path, event["type"], event["project"]) == ("/hook", "label_decided", "demo")
    assert event["data"] | {"decided_at": None} == {
        "item_id": item_id,
        "external_id": "a",
        "label": "pos",
        "current_label": "pos",
        "previous_label": None,
        "corrected_at": None,
        "source": "consensus",
        "decided_at": None,
        "route": "review",
        "holdout": False,
    }
    assert got.headers["X-Feedback-Delivery"] == event["id"] == f"evt_{result.outbox_id}"
    message = outbox(db, "label_decided")
    assert (message.attempts, message.last_error) == (1, None)
    again = webhooks.deliver(db, allowed, "label_decided", {"item_id": item_id, "label": "pos"})
    assert again.outcome == "skipped"
    assert len(receiver.requests) == 1


def test_a_correction_is_its_own_event(
    db: Database, project: str, people: People, allowed: Settings, receiver: Receiver
) -> None:
    from feedback.services import review

    webhooks.set_webhook(db, project, receiver.url)
    item_id = decide(db, people, label="pos")
    assert review.correct_decision(db, people.admin, project, item_id, "neg")
    first = webhooks.deliver(db, allowed, "label_decided", {"item_id": item_id, "label": "pos"})
    second = webhooks.deliver(db, allowed, "label_decided", {"item_id": item_id, "label": "neg"})
    assert first.outcome == second.outcome == "delivered"
    assert first.outbox_id != second.outbox_id
    events = [json.loads(r.body)["data"] for r in receiver.requests]
    summary = [(e["label"], e["current_label"], e["previous_label"]) for e in events]
    assert summary == [("pos", "neg", None), ("neg", "neg", "pos")]
    assert events[1]["corrected_at"] is not None


def test_failures_are_recorded_and_retried_with_growing_backoff(
    db: Database, project: str, people: People, allowed: Settings, receiver: Receiver
) -> None:
    webhooks.set_webhook(db, project, receiver.url)
    receiver.answers = [(500, {}), (503, {})]
    item_id = decide(db, people)
    first = webhooks.deliver(db, allowed, "label_decided", {"item_id": item_id, "label": "pos"})
    assert first.outcome == "retry"
    assert first.retry_in is not None
    assert 1.5 <= first.retry_in <= 2.5
    message = outbox(db, "label_decided")
    assert (message.attempts, message.last_error) == (1, "HTTP 500 Internal Server Error")
    second = webhooks.deliver(db, allowed, "label_decided", outbox_id=first.outbox_id)
    assert second.outcome == "retry"
    assert second.retry_in is not None
    assert 3.0 <= second.retry_in <= 5.0
    third = webhooks.deliver(db, allowed, "label_decided", outbox_id=first.outbox_id)
    assert third.outcome == "delivered"
    assert (outbox(db, "label_decided").attempts, outbox(db, "label_decided").last_error) == (
        3,
        None,
    )
    assert len({r.body for r in receiver.requests}) == 1
    assert len(receiver.requests) == 3


def test_a_failed_event_waits_in_the_outbox_until_its_next_attempt_is_due(
    db: Database,
    project: str,
    people: People,
    allowed: Settings,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    webhooks.set_webhook(db, project, receiver.url)
    receiver.answers = [(500, {})]
    item_id = decide(db, people)
    message = outbox(db, "label_decided")
    outbox_service.mark_dispatched(db, [message.id])  # beat handed it to a worker
    monkeypatch.setattr(webhooks, "BASE_DELAY_SECONDS", 1.0)
    failed = webhooks.deliver(db, allowed, "label_decided", outbox_id=message.id)
    assert failed.outcome == "retry"
    assert failed.retry_in is not None
    assert message.id not in [m.id for m in outbox_service.pending(db)]  # not yet due
    due = outbox(db, "label_decided")
    assert due.dispatched_at is None
    assert due.next_attempt_at is not None
    time.sleep(failed.retry_in + 0.1)
    assert message.id in [m.id for m in outbox_service.pending(db)]
    assert webhooks.deliver(db, allowed, "label_decided", outbox_id=message.id).outcome == (
        "delivered"
    )
    assert item_id


def test_it_gives_up_after_the_last_attempt(
    db: Database,
    project: str,
    people: People,
    allowed: Settings,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhooks, "MAX_ATTEMPTS", 2)
    webhooks.set_webhook(db, project, receiver.url)
    receiver.answers = [(500, {}), (500, {})]
    item_id = decide(db, people)
    assert webhooks.deliver(db, allowed, "label_decided", {"item_id": item_id}).outcome == "retry"
    last = webhooks.deliver(db, allowed, "label_decided", {"item_id": item_id})
    assert (last.outcome, last.retry_in) == ("failed", None)
    assert webhooks.deliver(db, allowed, "label_decided", {"item_id": item_id}).outcome == "failed"
    assert len(receiver.requests) == 2


def test_redirects_are_not_followed(
    db: Database, project: str, people: People, allowed: Settings, receiver: Receiver
) -> None:
    with webhook_receiver() as elsewhere:
        webhooks.set_webhook(db, project, receiver.url)
        receiver.answers = [(302, {"Location": elsewhere.url})]
        result = webhooks.deliver(db, allowed, "label_decided", {"item_id": decide(db, people)})
        assert result.outcome == "retry"
        assert "redirects are not followed" in (result.error or "")
        assert len(receiver.requests) == 1
        assert elsewhere.requests == []


def test_loopback_targets_are_refused_unless_allowed(
    db: Database, project: str, people: People, settings: Settings, receiver: Receiver
) -> None:
    assert settings.allow_private_webhooks is False
    webhooks.set_webhook(db, project, receiver.url)
    result = webhooks.deliver(db, settings, "label_decided", {"item_id": decide(db, people)})
    assert result.outcome == "retry"
    assert (result.error or "").startswith("refused")
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),  # noqa: S104 - an address to classify, not to bind
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("fe80::1%eth0", False),
        ("224.0.0.1", False),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_which_addresses_count_as_public(address: str, public: bool) -> None:
    assert is_public(address) is public


def test_an_event_whose_webhook_was_removed_meanwhile_is_not_sent(
    db: Database, project: str, people: People, allowed: Settings, receiver: Receiver
) -> None:
    webhooks.set_webhook(db, project, receiver.url)
    item_id = decide(db, people)  # the event is queued while the webhook is set...
    webhooks.set_webhook(db, project, None)  # ...and the webhook goes before it is sent
    result = webhooks.deliver(db, allowed, "label_decided", {"item_id": item_id})
    assert (result.outcome, result.error) == ("skipped", "the project has no webhook")
    assert outbox(db, "label_decided").attempts == 0
    assert receiver.requests == []


def test_setting_a_webhook_checks_the_url(db: Database, project: str) -> None:
    for url in (
        "ftp://example.com/x",
        "file:///etc/passwd",
        "http://user:pw@example.com/",
        "https:///nohost",
        "https://example.com/" + "x" * 500,
    ):
        with pytest.raises(InvalidInput) as caught:
            webhooks.set_webhook(db, project, url)
        assert caught.value.details[0].field == "url"
    with pytest.raises(InvalidInput):
        webhooks.set_webhook(db, project, "https://example.com/hook", secret="short")
    assert (
        webhooks.set_webhook(db, project, "https://example.com/hook", secret="s" * 20) == "s" * 20
    )
    assert webhooks.set_webhook(db, project, None) is None
    with pytest.raises(NotFound):
        webhooks.set_webhook(db, "nope", "https://example.com/hook")


def test_a_promotion_is_posted(
    db: Database, project: str, people: People, allowed: Settings, receiver: Receiver
) -> None:
    secret = webhooks.set_webhook(db, project, receiver.url)
    assert (
        retrain.execute_retrain(db, allowed, retrain.request_retrain(db, people.admin, project))
        == "succeeded"
    )
    message = outbox(db, "promoted")
    assert webhooks.deliver(db, allowed, "promoted", dict(message.payload)).outcome == "delivered"
    [got] = receiver.requests
    assert secret
    assert webhooks.verify(secret, got.body, got.headers["X-Feedback-Signature"])
    event = json.loads(got.body)
    assert event["type"] == "promoted"
    assert event["data"]["version"] == 1
    assert len(event["data"]["sha256"]) == 64
    assert "macro_f1" in event["data"]["metrics"]


@pytest.fixture
def broker_url(backend: str) -> Iterator[str]:
    """`filesystem://` beside SQLite; with PostgreSQL, this test file's own Redis database."""
    if backend == "sqlite":
        yield "filesystem://"
        return
    with redis_database(need_service("redis", REDIS_URL), REDIS_TEST_DB) as url:
        yield url


def decided(receiver: Receiver) -> list[Received]:
    return [r for r in list(receiver.requests) if r.headers["X-Feedback-Event"] == "label_decided"]


@pytest.mark.services
def test_a_worker_delivers_and_retries_from_the_outbox(
    db: Database,
    project: str,
    people: People,
    tmp_path: Path,
    database_url: str,
    broker_url: str,
    receiver: Receiver,
) -> None:
    secret = webhooks.set_webhook(db, project, receiver.url)
    # The first label_decided attempt fails; the worker tries again after ~2 s. (The beat may
    # also train the seed data and post a promotion: that one is answered 200.)
    receiver.answer = lambda got: (503, {}) if len(decided(receiver)) == 1 else None
    env = clean_environment(
        FEEDBACK_INSTANCE_PATH=str(tmp_path / "instance"),
        FEEDBACK_DATABASE_URL=database_url,
        FEEDBACK_BROKER_URL=broker_url,
        FEEDBACK_TICK_SECONDS="0.5",
        FEEDBACK_ALLOW_PRIVATE_WEBHOOKS="1",
    )
    worker = [
        sys.executable,
        "-m",
        "workers",
        "worker",
        "--concurrency=1",
        "--without-mingle",
        "--without-gossip",
        "--hostname=webhook-worker@%h",
    ]
    logs = tmp_path / "logs"
    with supervised(
        [
            start("worker", worker, env, logs),
            start("beat", [sys.executable, "-m", "workers", "beat"], env, logs),
        ]
    ) as processes:
        decide(db, people)
        wait_until("two deliveries", lambda: len(decided(receiver)) >= 2, 90, processes)
        wait_until(
            "the outbox to record success",
            lambda: outbox(db, "label_decided").last_error is None,
            30,
            processes,
        )
    first, second = decided(receiver)
    assert first.body == second.body
    assert secret
    assert webhooks.verify(secret, second.body, second.headers["X-Feedback-Signature"])
    assert outbox(db, "label_decided").attempts == 2


def test_an_event_put_back_for_a_later_attempt_is_not_marked_sent_by_a_late_relay(
    db: Database,
    project: str,
    people: People,
    allowed: Settings,
    receiver: Receiver,
) -> None:
    """Beat sends a message, a worker fails it and puts it back before beat marks it sent:
    the mark must not swallow the retry."""
    webhooks.set_webhook(db, project, receiver.url)
    receiver.answers = [(500, {})]
    decide(db, people)
    message = outbox(db, "label_decided")
    assert message.id in [m.id for m in outbox_service.pending(db)]  # beat reads it, sends it
    failed = webhooks.deliver(db, allowed, "label_decided", outbox_id=message.id)
    assert failed.outcome == "retry"
    outbox_service.mark_dispatched(db, [message.id])  # ...and marks it only now
    waiting = outbox(db, "label_decided")
    assert (waiting.dispatched_at, waiting.attempts) == (None, 1)
    assert waiting.next_attempt_at is not None


def test_handed_over_messages_are_purged_after_their_age_but_failures_and_waiting_ones_stay(
    db: Database,
) -> None:
    day = 86_400
    rows: dict[str, dict[str, Any]] = {
        "old, done": {"dispatched_at": utcnow(-8 * day)},
        "old, delivery failed": {"dispatched_at": utcnow(-8 * day), "last_error": "HTTP 500"},
        "recent, done": {"dispatched_at": utcnow(-day)},
        "never handed over": {},
        "waiting for a retry": {"next_attempt_at": utcnow(day), "last_error": "timeout"},
    }
    with db.transaction() as session:
        for name, values in rows.items():
            session.add(OutboxMessage(kind="promoted", payload={"name": name}, **values))
    assert outbox_service.purge(db, 7 * 86_400) == 1
    with db.read() as session:
        left = {m.payload["name"] for m in session.scalars(select(OutboxMessage))}
    assert left == set(rows) - {"old, done"}


def test_without_a_webhook_a_decision_or_correction_queues_no_event(
    db: Database, project: str, people: People
) -> None:
    item_id = decide(db, people)
    assert review.correct_decision(db, people.admin, project, item_id, "neg")
    with db.read() as session:
        kinds = list(session.scalars(select(OutboxMessage.kind)))
    assert "label_decided" not in kinds


def test_a_gold_answer_that_corrects_a_decision_is_an_event_like_a_reviewers_correction(
    db: Database, project: str, people: People
) -> None:
    webhooks.set_webhook(db, project, "https://example.com/hook")
    item_id = decide(db, people, label="pos")
    gold.set_gold(db, people.admin, project, item_id, "neg")
    with db.read() as session:
        events = session.scalars(
            select(OutboxMessage.payload)
            .where(OutboxMessage.kind == "label_decided")
            .order_by(OutboxMessage.id)
        ).all()
    assert events == [{"item_id": item_id, "label": "pos"}, {"item_id": item_id, "label": "neg"}]
