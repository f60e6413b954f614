"""The tables, one class per word of the vocabulary in DESIGN.md."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from feedback.db.base import Base
from feedback.db.random_key import random_key

Id = BigInteger().with_variant(Integer(), "sqlite")
ACTIVE_RUN = "status IN ('requested', 'running')"


def naive_utcnow() -> datetime:
    """Now in UTC without a zone, as every DateTime column stores it."""
    return datetime.now(UTC).replace(tzinfo=None)


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(), default=naive_utcnow, nullable=False)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = _created()


class UserSession(Base):
    """A server-side login session; the cookie carries the token, the table its hash."""

    __tablename__ = "user_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime())
    created_at: Mapped[datetime] = _created()


class LoginFailure(Base):
    """One failed login, counted across processes to rate-limit guessing."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), index=True)
    created_at: Mapped[datetime] = _created()


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    input_kind: Mapped[str] = mapped_column(String(16))
    labels: Mapped[list[Any]] = mapped_column()
    features: Mapped[list[Any] | None] = mapped_column(nullable=True)
    threshold: Mapped[float] = mapped_column(Float, default=0.8)
    strategy: Mapped[str] = mapped_column(String(32), default="margin")
    audit_rate: Mapped[float] = mapped_column(Float, default=0.05)
    overlap: Mapped[int] = mapped_column(Integer, default=1)
    show_prediction: Mapped[bool] = mapped_column(Boolean, default=False)
    retrain_min_decisions: Mapped[int] = mapped_column(Integer, default=20)
    retrain_interval_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    promotion_metric: Mapped[str] = mapped_column(String(16), default="macro_f1")
    promotion_min_gain: Mapped[float] = mapped_column(Float, default=0.0)
    promotion_min_holdout: Mapped[int] = mapped_column(Integer, default=20)
    promotion_class_tolerance: Mapped[float] = mapped_column(Float, default=0.10)
    model_spec: Mapped[str] = mapped_column(String(200), default="auto")
    trusted_types: Mapped[list[Any] | None] = mapped_column(nullable=True)
    max_queue: Mapped[int | None] = mapped_column(Integer, nullable=True)
    queue_full: Mapped[str] = mapped_column(String(8), default="reject")
    random_share: Mapped[float] = mapped_column(Float, default=0.0)
    gold_rate: Mapped[float] = mapped_column(Float, default=0.0)
    incremental: Mapped[bool] = mapped_column(Boolean, default=False)
    full_refit_every: Mapped[int] = mapped_column(Integer, default=5)
    webhook_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(String(100), nullable=True)
    champion_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", use_alter=True, ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = _created()


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )


class ApiToken(Base):
    """A bearer token: a service token scoped to one project, or a user's personal token."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), nullable=True, index=True
    )
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True
    )
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    created_at: Mapped[datetime] = _created()


# Review items a full queue deferred (stored as auto) that have not gone back into it yet.
DEFERRED_WAITING = "deferred AND status = 'auto'"


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("project_id", "external_id", name="uq_items_project_id_external_id"),
        Index("ix_items_queue", "project_id", "status", "priority", "id"),
        Index("ix_items_random", "project_id", "status", "random_key", "id"),
        Index("ix_items_status_id", "project_id", "status", "id"),  # re-scoring walks it
        Index(
            "ix_items_deferred",
            "project_id",
            "uncertainty",
            sqlite_where=text(DEFERRED_WAITING),
            postgresql_where=text(DEFERRED_WAITING),
        ),
        Index(
            "ix_items_gold",
            "project_id",
            sqlite_where=text("gold_label IS NOT NULL"),
            postgresql_where=text("gold_label IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(200))
    input: Mapped[dict[str, Any]] = mapped_column()
    display: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    probabilities: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    uncertainty: Mapped[float] = mapped_column(Float, default=0.0)
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    # Drawn once per row by the database; random picks walk the queue in this order.
    random_key: Mapped[float] = mapped_column(Float, server_default=random_key())
    route: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(12))
    is_holdout: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_label: Mapped[str | None] = mapped_column(String(100), nullable=True)
    deferred: Mapped[bool] = mapped_column(Boolean, default=False)
    fence: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = _created()


class Lease(Base):
    """A labeler's time-limited claim on an item; every vote must present its fence."""

    __tablename__ = "leases"
    __table_args__ = (
        Index("ix_leases_item_state", "item_id", "state"),
        Index("ix_leases_user_state", "user_id", "state"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    fence: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(10), default="active")
    expires_at: Mapped[datetime] = mapped_column(DateTime())
    created_at: Mapped[datetime] = _created()


class Vote(Base):
    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("item_id", "user_id", name="uq_votes_item_id_user_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    answer: Mapped[str] = mapped_column(String(100))
    fence: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = _created()


class Decision(Base):
    """The final label of an item; the id is the watermark a training snapshot stops at."""

    __tablename__ = "decisions"
    __table_args__ = (Index("ix_decisions_project_id_id", "project_id", "id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(16))
    previous_label: Mapped[str | None] = mapped_column(String(100), nullable=True)
    corrected_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    corrected_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    decided_at: Mapped[datetime] = _created()


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("project_id", "version", name="uq_model_versions_project_id_version"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[str] = mapped_column(String(200))
    artifact_path: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column()
    per_class: Mapped[dict[str, Any]] = mapped_column()
    baseline_metrics: Mapped[dict[str, Any]] = mapped_column()
    champion_metrics: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    decision: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(Text)
    watermark: Mapped[int] = mapped_column(BigInteger)
    train_size: Mapped[int] = mapped_column(Integer)
    holdout_size: Mapped[int] = mapped_column(Integer)
    snapshot_digest: Mapped[str] = mapped_column(String(64))
    library_versions: Mapped[dict[str, Any]] = mapped_column()
    timings: Mapped[dict[str, Any]] = mapped_column()
    routing: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    incremental: Mapped[bool] = mapped_column(Boolean, default=False)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = _created()


class RetrainRun(Base):
    """One retrain of one project; at most one is requested or running per project."""

    __tablename__ = "retrain_runs"
    __table_args__ = (
        Index(
            "uq_retrain_runs_one_active",
            "project_id",
            unique=True,
            sqlite_where=text(ACTIVE_RUN),
            postgresql_where=text(ACTIVE_RUN),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(10))
    trigger: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str | None] = mapped_column(String(16), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    fence: Mapped[int] = mapped_column(Integer, default=0)
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), nullable=True
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    report: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    requested_at: Mapped[datetime] = _created()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)


class OutboxMessage(Base):
    """Work for the workers, written in the same transaction as the change that causes it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column()
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True, index=True)
    # Not before this time (a webhook retry's backoff); the tick skips the message until then.
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = _created()


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    actor_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), nullable=True, index=True
    )
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = _created()


class IdempotencyKey(Base):
    """The first response to an `Idempotency-Key`, replayed for retries of the same request."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "key", name="uq_idempotency_keys_scope_key"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    scope: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(200))
    request_digest: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(10))
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_body: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = _created()
