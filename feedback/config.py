"""Settings: read once from the environment, typed, and passed around.

This is the only module that reads environment variables.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

WEAK_SECRETS = frozenset({"", "secret", "changeme", "change-me", "dev", "development", "feedback"})
MIN_SECRET_LENGTH = 32
# Worker timings a deployment may tune (seconds); read by feedback/services/runs.py.
TUNABLES = ("retrain_heartbeat_seconds", "retrain_stale_seconds", "retrain_redispatch_seconds")


MAX_PROXY_HOPS = 5
MAX_INTERVAL_SECONDS = 86_400.0


class ConfigError(ValueError):
    """A setting is missing or unsafe."""


@dataclass(frozen=True)
class Settings:
    """Everything the web app, the workers and the CLI need to know about their setting."""

    instance_path: Path
    database_url: str
    broker_url: str
    secret_key: str
    env: str = "development"
    port: int = 5000
    host: str = "127.0.0.1"
    tick_seconds: float = 5.0
    dispatch_seconds: float = 0.05  # how often beat hands the outbox to the broker
    lease_seconds: int = 300
    max_batch: int = 1000
    max_body_bytes: int = 8 * 1024 * 1024
    max_form_bytes: int = 64 * 1024
    retrain_max_attempts: int = 3
    retrain_soft_time_limit: int = 1800
    login_max_failures: int = 10
    login_window_seconds: int = 300
    allow_private_webhooks: bool = False
    proxy_hops: int = 0  # reverse proxies in front that set X-Forwarded-For/-Proto/-Host
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        """Folder the service writes model files into (shared by web and workers)."""
        return self.instance_path / "models"

    @property
    def broker_folder(self) -> Path:
        """Folder used by the serverless `filesystem://` Celery transport."""
        return self.instance_path / "broker"

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    def with_overrides(self, **changes: object) -> Settings:
        """Return a copy with some fields replaced (tests and the CLI use this)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `FEEDBACK_*` variables, with safe embedded defaults."""
        env = dict(os.environ if environ is None else environ)
        instance = Path(env.get("FEEDBACK_INSTANCE_PATH", "instance")).resolve()
        mode = env.get("FEEDBACK_ENV", "development")
        database_url = env.get("FEEDBACK_DATABASE_URL") or f"sqlite:///{instance / 'feedback.db'}"
        return cls(
            instance_path=instance,
            database_url=database_url,
            broker_url=env.get("FEEDBACK_BROKER_URL", "filesystem://"),
            secret_key=_secret_key(env.get("FEEDBACK_SECRET_KEY"), mode, instance),
            env=mode,
            port=int(env.get("PORT", env.get("FEEDBACK_PORT", "5000"))),
            host=env.get("FEEDBACK_HOST", "127.0.0.1"),
            tick_seconds=_seconds(env, "FEEDBACK_TICK_SECONDS", "5"),
            dispatch_seconds=_seconds(env, "FEEDBACK_DISPATCH_SECONDS", "0.05"),
            lease_seconds=int(env.get("FEEDBACK_LEASE_SECONDS", "300")),
            max_batch=int(env.get("FEEDBACK_MAX_BATCH", "1000")),
            max_body_bytes=int(env.get("FEEDBACK_MAX_BODY_BYTES", str(8 * 1024 * 1024))),
            allow_private_webhooks=env.get("FEEDBACK_ALLOW_PRIVATE_WEBHOOKS", "") == "1",
            proxy_hops=_proxy_hops(env.get("FEEDBACK_PROXY_HOPS", "0")),
            retrain_max_attempts=int(env.get("FEEDBACK_RETRAIN_MAX_ATTEMPTS", "3")),
            retrain_soft_time_limit=int(env.get("FEEDBACK_RETRAIN_SOFT_TIME_LIMIT", "1800")),
            extra={
                name: env[f"FEEDBACK_{name.upper()}"]
                for name in TUNABLES
                if f"FEEDBACK_{name.upper()}" in env
            },
        )


def _seconds(env: Mapping[str, str], name: str, default: str) -> float:
    raw = env.get(name, default)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= MAX_INTERVAL_SECONDS:  # NaN fails too
        raise ConfigError(
            f"{name} must be a number of seconds above 0 and at most {MAX_INTERVAL_SECONDS}, "
            f"got {raw!r}"
        )
    return value


def _proxy_hops(raw: str) -> int:
    if not raw.isdigit() or int(raw) > MAX_PROXY_HOPS:
        raise ConfigError(
            f"FEEDBACK_PROXY_HOPS must be a whole number from 0 to {MAX_PROXY_HOPS}, got {raw!r}"
        )
    return int(raw)


def _secret_key(given: str | None, mode: str, instance: Path) -> str:
    """Use the given key; in production refuse a weak one, elsewhere generate one once."""
    if given is not None:
        if mode == "production" and (
            given.lower() in WEAK_SECRETS or len(given) < MIN_SECRET_LENGTH
        ):
            raise ConfigError(
                "FEEDBACK_SECRET_KEY is too weak: "
                f"use at least {MIN_SECRET_LENGTH} random characters"
            )
        return given
    if mode == "production":
        raise ConfigError("FEEDBACK_SECRET_KEY is required when FEEDBACK_ENV=production")
    return _instance_secret(instance)


def _instance_secret(instance: Path) -> str:
    """Read the generated key from the instance folder, creating it on first use."""
    path = instance / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race; use its key
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key
