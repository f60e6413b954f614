"""What every adapter needs: the database, the settings, and who is calling."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import current_app, g, redirect, request, session, url_for
from flask_wtf.csrf import CSRFProtect

from feedback.config import Settings
from feedback.db.engine import Database
from feedback.services import users
from feedback.services.users import Principal

csrf = CSRFProtect()
View = TypeVar("View", bound=Callable[..., Any])


def db() -> Database:
    return cast(Database, current_app.extensions["feedback.db"])


def settings() -> Settings:
    return cast(Settings, current_app.extensions["feedback.settings"])


def session_principal() -> Principal | None:
    """The logged-in user of this request, looked up once."""
    if "principal" not in g:
        token = session.get("token")
        g.principal = users.principal_for_session(db(), token) if isinstance(token, str) else None
    return cast(Principal | None, g.principal)


def login_required(view: View) -> View:
    """Send anonymous visitors to the login page."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if session_principal() is None:
            return redirect(url_for("auth.login", next=request.path))
        return view(*args, **kwargs)

    return cast(View, wrapped)
