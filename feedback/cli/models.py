"""`feedback retrain`, `rollback` and `changes`: the model lifecycle from the shell."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from feedback.cli.base import ADMIN, Context, guarded, main, pass_context
from feedback.services import lineage, retrain, rollback, run_report

VERSION = click.IntRange(min=1, max=2**31 - 1)  # version numbers are 32-bit in the database


@main.command("retrain")
@click.argument("slug")
@click.option("--wait", is_flag=True, help="Wait until a worker finishes the run.")
@click.option("--timeout", type=float, default=1800.0, show_default=True)
@pass_context
def retrain_command(ctx: Context, slug: str, wait: bool, timeout: float) -> None:
    """Request a retrain; beat hands it to a worker within FEEDBACK_DISPATCH_SECONDS."""
    run_id = guarded(lambda: retrain.request_retrain(ctx.db, ADMIN, slug))
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
@click.argument("version", type=VERSION)
@pass_context
def rollback_command(ctx: Context, slug: str, version: int) -> None:
    """Serve an earlier promoted VERSION again, with its routing settings; audited."""
    done = guarded(lambda: rollback.rollback(ctx.db, ADMIN, slug, version))
    if not done.changed:
        click.echo(f"v{version} is already the champion of {slug}")
        return
    routing = ", ".join(f"{k}={v}" for k, v in done.routing.items())
    click.echo(f"{slug}: champion v{done.previous} -> v{done.current} ({routing}); re-score queued")


@main.command("changes")
@click.argument("slug")
@click.argument("since", type=VERSION)
@click.option("--until", type=VERSION, default=None, help="A later version.")
@pass_context
def changes_command(ctx: Context, slug: str, since: int, until: int | None) -> None:
    """Say what changed since version SINCE (up to now, or to --until), as JSON."""
    found = guarded(lambda: lineage.changes_since(ctx.db, ADMIN, slug, since, until))
    click.echo(json.dumps(found, indent=2, default=str))
