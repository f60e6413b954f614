"""Webhooks: POST each decided label and promotion to the project's URL, signed, with retries.

Delivery state lives on the outbox row: `attempts` counts attempts made, `last_error` is NULL
once one succeeded, the reason of the last failure otherwise ("delivering" while one is under
way). Each attempt claims its number by compare-and-swap, so a task delivered twice never
sends the same attempt twice.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from feedback.config import Settings
from feedback.db.clock import utcnow
from feedback.db.engine import Database
from feedback.db.models import AuditEvent, OutboxMessage, Project
from feedback.domain.errors import FieldError, InvalidInput, NotFound
from feedback.services import webhook_events
from feedback.services.webhook_http import post

SIGNATURE_HEADER = "X-Feedback-Signature"
KINDS = ("label_decided", "promoted")
MAX_ATTEMPTS = 8
BASE_DELAY_SECONDS = 2.0
MAX_DELAY_SECONDS = 300.0
LOOKUP_WINDOW_SECONDS = 86_400
DELIVERING = "delivering"
MAX_URL = 500


@dataclass(frozen=True)
class Delivery:
    """What one delivery attempt did, and when to try again (None: do not)."""

    outbox_id: int | None
    outcome: str  # delivered | retry | failed | skipped
    retry_in: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class _Attempt:
    outbox_id: int
    number: int
    url: str
    headers: dict[str, str]
    body: bytes


def sign(secret: str, body: bytes) -> str:
    """The `X-Feedback-Signature` value for a body: `sha256=` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """Check a received signature in constant time (what a receiver does)."""
    return hmac.compare_digest(sign(secret, body), signature)


def url_problem(url: str) -> str | None:
    """Say what is wrong with a webhook URL's form, or None (addresses are checked on send)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username or parts.password or parts.fragment:
        return "must not carry credentials or a #fragment"
    if len(url) > MAX_URL:
        return f"must have at most {MAX_URL} characters"
    return None


def set_webhook(db: Database, slug: str, url: str | None, secret: str | None = None) -> str | None:
    """Point a project's webhook at `url` (None removes it); return the signing secret."""
    problem = None if url is None else url_problem(url)
    if problem is None and secret is not None and not 16 <= len(secret) <= 100:
        raise InvalidInput("the secret is not valid", [FieldError("secret", "use 16-100 chars")])
    if problem is not None:
        raise InvalidInput("the webhook URL is not valid", [FieldError("url", problem)])
    secret = None if url is None else secret or "whsec_" + secrets.token_urlsafe(32)
    with db.transaction() as session:
        project = session.scalar(select(Project).where(Project.slug == slug))
        if project is None:
            raise NotFound(f"no project '{slug}'")
        project.webhook_url, project.webhook_secret = url, secret
        detail = {"url": url}
        session.add(AuditEvent(project_id=project.id, action="webhook_set", detail=detail))
    return secret


def deliver(
    db: Database,
    settings: Settings,
    kind: str,
    payload: dict[str, Any] | None = None,
    outbox_id: int | None = None,
) -> Delivery:
    """Attempt one delivery of an outbox event (found by id, or by its kind and payload)."""
    with db.transaction() as session:
        message = _message(session, kind, payload or {}, outbox_id)
        if message is None:
            return Delivery(outbox_id, "skipped", error="no such event")
        attempt = _start(session, message)
    if isinstance(attempt, Delivery):
        return attempt
    error = post(attempt.url, attempt.headers, attempt.body, settings.allow_private_webhooks)
    retry_in = None if error is None or attempt.number >= MAX_ATTEMPTS else backoff(attempt.number)
    values: dict[str, Any] = {"last_error": error}
    if retry_in is not None:  # back in the outbox: beat sends it again once due
        values.update(dispatched_at=None, next_attempt_at=utcnow(retry_in))
    with db.transaction() as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == attempt.outbox_id, OutboxMessage.attempts == attempt.number)
            .values(**values)
        )
    if error is None:
        return Delivery(attempt.outbox_id, "delivered")
    if retry_in is None:
        return Delivery(attempt.outbox_id, "failed", error=error)
    return Delivery(attempt.outbox_id, "retry", retry_in, error)


def backoff(attempt: int) -> float:
    """Seconds to wait after the given failed attempt: doubling, capped, with jitter."""
    delay = min(MAX_DELAY_SECONDS, BASE_DELAY_SECONDS * 2 ** (attempt - 1))
    return float(delay * random.uniform(0.8, 1.2))


def _message(
    session: Session, kind: str, payload: dict[str, Any], outbox_id: int | None
) -> OutboxMessage | None:
    if outbox_id is not None:
        found = session.get(OutboxMessage, outbox_id)
        return found if found is not None and found.kind in KINDS else None
    if kind not in KINDS:
        return None
    column = OutboxMessage.payload
    keys = ("item_id",) if kind == "label_decided" else ("project_id", "version")
    if not all(isinstance(payload.get(key), int) for key in keys):
        return None
    matches = [column[key].as_integer() == payload[key] for key in keys]
    if kind == "label_decided" and isinstance(payload.get("label"), str):  # a correction is
        matches.append(column["label"].as_string() == payload["label"])  # another event
    recent = or_(
        OutboxMessage.dispatched_at.is_(None),
        OutboxMessage.dispatched_at > utcnow(-LOOKUP_WINDOW_SECONDS),
    )
    return session.scalar(
        select(OutboxMessage)
        .where(OutboxMessage.kind == kind, recent, *matches)
        .order_by(OutboxMessage.id.desc())
        .limit(1)
    )


def _start(session: Session, message: OutboxMessage) -> _Attempt | Delivery:
    """Claim the next attempt number, or say why there is nothing to do."""
    if message.attempts > 0 and message.last_error is None:
        return Delivery(message.id, "skipped", error="already delivered")
    if message.attempts >= MAX_ATTEMPTS:
        return Delivery(message.id, "failed", error=message.last_error)
    event = webhook_events.build(session, message)
    if event is None:
        return Delivery(message.id, "skipped", error="the project has no webhook")
    project, body = event
    number = message.attempts + 1
    claimed = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message.id, OutboxMessage.attempts == number - 1)
        .values(attempts=number, last_error=DELIVERING)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return Delivery(message.id, "skipped", error="another worker is delivering it")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "feedback-webhooks/1",
        "X-Feedback-Event": message.kind,
        "X-Feedback-Delivery": f"evt_{message.id}",
        SIGNATURE_HEADER: sign(project.webhook_secret or "", body),
    }
    return _Attempt(message.id, number, project.webhook_url or "", headers, body)
