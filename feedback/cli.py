"""The `feedback` command: database, users, projects, tokens, retrains, and `run`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from feedback.config import ConfigError, Settings
from feedback.db.engine import Database, make_database
from feedback.db.migrate import upgrade
from feedback.domain.errors import DomainError, InvalidInput
from feedback.services import (
    lineage,
    projects,
    retrain,
    rollback,
    run_report,
    training_config,
    users,
    webhooks,
)
from feedback.services.seed_files import read_seed_file

ADMIN = users.Principal(user_id=None, role="admin")
T = TypeVar("T")


class Context:
    """Settings and database, built on first use so `--help` never touches either."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._db: Database | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = Settings.from_env()
            except ConfigError as error:
                raise click.ClickException(str(error)) from error
        return self._settings

    def close(self) -> None:
        """Release the database connections when the command ends."""
        if self._db is not None:
            self._db.dispose()

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = make_database(self.settings.database_url)
        return self._db


pass_context = click.make_pass_decorator(Context, ensure=True)


@click.group()
@click.pass_context
def main(click_context: click.Context) -> None:
    """Run and administer a feedback service."""
    click_context.call_on_close(click_context.ensure_object(Context).close)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_context
def db_upgrade(ctx: Context) -> None:
    """Apply all migrations."""
    upgrade(ctx.settings.database_url)
    click.echo("database is up to date")


@main.group("users")
def users_group() -> None:
    """Users and roles."""


@users_group.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(users.ROLES), default="labeler", show_default=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option(
    "--project", "project_slugs", multiple=True, help="Give access to this project (repeatable)."
)
@pass_context
def users_create(
    ctx: Context, email: str, role: str, password: str, project_slugs: tuple[str, ...]
) -> None:
    """Create a user (argon2id password hash)."""
    _run(lambda: users.create_user(ctx.db, email, password, role))
    for slug in project_slugs:
        _run(lambda slug=slug: projects.add_member(ctx.db, slug, email))  # type: ignore[misc]
    click.echo(f"created {role} {email}")


@main.group("projects")
def projects_group() -> None:
    """Projects."""


@projects_group.command("create")
@click.argument("slug")
@click.option("--labels", required=True, help="Comma-separated label classes, in order.")
@click.option(
    "--input",
    "input_kind",
    type=click.Choice(["text", "features"]),
    default="text",
    show_default=True,
)
@click.option("--features", default=None, help="Comma-separated feature names (input=features).")
@click.option(
    "--seed-data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV or JSONL with a `label` column/field.",
)
@click.option("--threshold", type=float, default=0.8, show_default=True)
@click.option("--strategy", default=projects.ProjectSpec.strategy, show_default=True)
@click.option("--audit-rate", type=float, default=0.05, show_default=True)
@click.option("--overlap", type=int, default=1, show_default=True)
@click.option(
    "--retrain-after",
    type=int,
    default=20,
    show_default=True,
    help="New decisions that trigger a retrain.",
)
@click.option("--model-spec", default="auto", show_default=True)
@click.option(
    "--random-share",
    type=click.FloatRange(0.0, 1.0),
    default=projects.ProjectSpec.random_share,
    show_default=True,
    help="Share of claims served a uniformly random queued item instead of the top.",
)
@pass_context
def projects_create(
    ctx: Context,
    slug: str,
    labels: str,
    input_kind: str,
    features: str | None,
    seed_data: Path | None,
    threshold: float,
    strategy: str,
    audit_rate: float,
    overlap: int,
    retrain_after: int,
    model_spec: str,
    random_share: float,
) -> None:
    """Create a project, optionally with seed data (a slice of it becomes holdout)."""
    spec = projects.ProjectSpec(
        slug=slug,
        labels=_split(labels),
        input_kind=input_kind,
        features=_split(features) if features else None,
        threshold=threshold,
        strategy=strategy,
        audit_rate=audit_rate,
        overlap=overlap,
        retrain_min_decisions=retrain_after,
        model_spec=model_spec,
        random_share=random_share,
    )
    seed = _run(lambda: read_seed_file(seed_data, input_kind, spec.features)) if seed_data else []
    _run(lambda: projects.create_project(ctx.db, spec, seed))
    click.echo(f"created project {slug} with {len(seed)} seed examples")


@projects_group.command("webhook")
@click.argument("slug")
@click.argument("url", required=False)
@click.option(
    "--secret", default=None, help="Signing secret (16-100 chars); generated if left out."
)
@click.option("--clear", is_flag=True, help="Remove the project's webhook.")
@pass_context
def projects_webhook(
    ctx: Context, slug: str, url: str | None, secret: str | None, clear: bool
) -> None:
    """Send signed events for SLUG to URL (the secret is printed once), or --clear it."""
    if clear == (url is not None):
        raise click.UsageError("give a URL, or --clear")
    found = _run(lambda: webhooks.set_webhook(ctx.db, slug, url, secret))
    click.echo(f"webhook of {slug} removed" if found is None else f"webhook set; secret: {found}")


@main.group("tokens")
def tokens_group() -> None:
    """API tokens."""


@tokens_group.command("create")
@click.option("--project", "project_slug", default=None, help="A service token for this project.")
@click.option("--user", "email", default=None, help="A personal token for this user.")
@click.option("--name", default="cli", show_default=True)
@pass_context
def tokens_create(ctx: Context, project_slug: str | None, email: str | None, name: str) -> None:
    """Create a token; it is printed once and stored only as a hash."""
    click.echo(_run(lambda: users.create_token(ctx.db, name, project_slug, email)))


@projects_group.command("training")
@click.argument("slug")
@click.option("--model-spec", default=None, help="A built-in, or 'package.module:function'.")
@click.option(
    "--trust",
    "trusted",
    multiple=True,
    help="A type the model loader may build for this project (repeatable; replaces the list).",
)
@click.option("--clear-trust", is_flag=True, help="Trust no extra types.")
@click.option("--incremental/--no-incremental", default=None, help="Fold in only new labels.")
@click.option("--full-refit-every", type=int, default=None, help="Refit in full every N runs.")
@pass_context
def projects_training(
    ctx: Context,
    slug: str,
    model_spec: str | None,
    trusted: tuple[str, ...],
    clear_trust: bool,
    incremental: bool | None,
    full_refit_every: int | None,
) -> None:
    """Change how a project trains: model spec, trusted types, incremental mode."""
    change = training_config.TrainingChange(
        model_spec=model_spec,
        trusted_types=[] if clear_trust else (list(trusted) if trusted else None),
        incremental=incremental,
        full_refit_every=full_refit_every,
    )
    now = _run(lambda: training_config.configure_training(ctx.db, ADMIN, slug, change))
    for name, value in now.items():
        click.echo(f"{name}: {value}")


@main.command("retrain")
@click.argument("slug")
@click.option("--wait", is_flag=True, help="Wait until a worker finishes the run.")
@click.option("--timeout", type=float, default=1800.0, show_default=True)
@pass_context
def retrain_command(ctx: Context, slug: str, wait: bool, timeout: float) -> None:
    """Request a retrain; the next beat tick hands it to a worker."""
    run_id = _run(lambda: retrain.request_retrain(ctx.db, ADMIN, slug))
    click.echo(f"run {run_id} requested")
    deadline = time.monotonic() + timeout
    while wait:
        run = run_report.describe_run(ctx.db, ADMIN, slug, run_id)
        if run["status"] not in retrain.ACTIVE:
            _echo_outcome(run)
            sys.exit(0 if run["status"] in ("succeeded", "rejected") else 1)
        if time.monotonic() > deadline:
            raise click.ClickException(f"run {run_id} still {run['status']} after {timeout:.0f}s")
        time.sleep(1.0)


def _echo_outcome(run: dict[str, Any]) -> None:
    decision = run["report"].get("decision") or {}
    reason = run["error"] or decision.get("reason") or ""
    version = f" (v{run['model_version']})" if run["model_version"] else ""
    click.echo(f"run {run['id']} {run['status']}{version}{': ' + reason if reason else ''}")


@main.command("rollback")
@click.argument("slug")
@click.argument("version", type=click.IntRange(min=1))
@pass_context
def rollback_command(ctx: Context, slug: str, version: int) -> None:
    """Serve an earlier promoted VERSION again, with its routing settings; audited."""
    done = _run(lambda: rollback.rollback(ctx.db, ADMIN, slug, version))
    if not done.changed:
        click.echo(f"v{version} is already the champion of {slug}")
        return
    routing = ", ".join(f"{k}={v}" for k, v in done.routing.items())
    click.echo(f"{slug}: champion v{done.previous} -> v{done.current} ({routing}); re-score queued")


@main.command("changes")
@click.argument("slug")
@click.argument("since", type=click.IntRange(min=1))
@click.option("--until", type=click.IntRange(min=1), default=None, help="A later version.")
@pass_context
def changes_command(ctx: Context, slug: str, since: int, until: int | None) -> None:
    """Say what changed since version SINCE (up to now, or to --until), as JSON."""
    found = _run(lambda: lineage.changes_since(ctx.db, ADMIN, slug, since, until))
    click.echo(json.dumps(found, indent=2, default=str))


@main.command("run")
@click.option("--no-demo", is_flag=True, help="Do not create the digits demo project.")
@pass_context
def run_command(ctx: Context, no_demo: bool) -> None:
    """Migrate, create the demo, and run web + worker + beat until Ctrl-C."""
    from feedback.runner import run_all

    sys.exit(run_all(ctx.settings, ctx.db, demo=not no_demo))


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _run(action: Callable[[], T]) -> T:
    try:
        return action()
    except InvalidInput as error:
        lines = [
            error.message,
            *(
                f"  {d.field}: {d.message}" + (f" (row {d.index})" if d.index is not None else "")
                for d in error.details
            ),
        ]
        raise click.ClickException("\n".join(lines)) from error
    except DomainError as error:
        raise click.ClickException(error.message) from error
