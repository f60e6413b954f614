"""The `feedback` command group, its lazily built context, and the error translation."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from feedback.config import ConfigError, Settings
from feedback.db.engine import Database, make_database
from feedback.domain.errors import DomainError, InvalidInput
from feedback.services import users

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


def split(value: str) -> list[str]:
    """The non-empty parts of a comma-separated option."""
    return [part.strip() for part in value.split(",") if part.strip()]


def guarded(action: Callable[[], T]) -> T:
    """Run a service call; its domain errors become a clean CLI error naming each field."""
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
