"""`feedback db`, `users`, `tokens` and `run`: the schema, people, API tokens, the service."""

from __future__ import annotations

import sys

import click

from feedback.cli.base import Context, guarded, main, pass_context
from feedback.db.migrate import downgrade, upgrade
from feedback.services import projects, users


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_context
def db_upgrade(ctx: Context) -> None:
    """Apply all migrations."""
    upgrade(ctx.settings.database_url)
    click.echo("database is up to date")


@db.command("downgrade")
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_context
def db_downgrade(ctx: Context, revision: str, yes: bool) -> None:
    """Undo migrations down to REVISION (`base` drops every table): back up first."""
    if not yes:
        click.confirm(
            f"Undo migrations down to {revision}? Data in dropped tables and columns is lost",
            abort=True,
        )
    downgrade(ctx.settings.database_url, revision)
    click.echo(f"database is at {revision}")


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
    guarded(lambda: users.create_user(ctx.db, email, password, role))
    for slug in project_slugs:
        guarded(lambda slug=slug: projects.add_member(ctx.db, slug, email))  # type: ignore[misc]
    click.echo(f"created {role} {email}")


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
    click.echo(guarded(lambda: users.create_token(ctx.db, name, project_slug, email)))


@main.command("run")
@click.option("--no-demo", is_flag=True, help="Do not create the digits demo project.")
@pass_context
def run_command(ctx: Context, no_demo: bool) -> None:
    """Migrate, create the demo, and run web + worker + beat until Ctrl-C."""
    from feedback.runner import run_all

    sys.exit(run_all(ctx.settings, ctx.db, demo=not no_demo))
