"""`feedback projects`: create a project, point its webhook, change how it trains."""

from __future__ import annotations

from pathlib import Path

import click

from feedback.cli.base import ADMIN, Context, guarded, main, pass_context, split
from feedback.services import projects, training_config, webhooks
from feedback.services.seed_files import read_seed_file


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
        labels=split(labels),
        input_kind=input_kind,
        features=split(features) if features else None,
        threshold=threshold,
        strategy=strategy,
        audit_rate=audit_rate,
        overlap=overlap,
        retrain_min_decisions=retrain_after,
        model_spec=model_spec,
        random_share=random_share,
    )
    seed = (
        guarded(lambda: read_seed_file(seed_data, input_kind, spec.features)) if seed_data else []
    )
    guarded(lambda: projects.create_project(ctx.db, spec, seed))
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
    found = guarded(lambda: webhooks.set_webhook(ctx.db, slug, url, secret))
    click.echo(f"webhook of {slug} removed" if found is None else f"webhook set; secret: {found}")


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
    now = guarded(lambda: training_config.configure_training(ctx.db, ADMIN, slug, change))
    for name, value in now.items():
        click.echo(f"{name}: {value}")
