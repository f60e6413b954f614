"""Login and logout pages."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from feedback.domain.errors import Forbidden
from feedback.services import users
from feedback.web.context import db, settings

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    """Show the login form; on success rotate the session and go where the user was headed."""
    if request.method == "GET":
        return render_template("auth/login.html", error=None, email="")
    email = request.form.get("email", "")
    try:
        token = users.login(
            db(),
            email,
            request.form.get("password", ""),
            settings().login_max_failures,
            settings().login_window_seconds,
        )
    except Forbidden as error:
        return render_template("auth/login.html", error=error.message, email=email), 401  # type: ignore[return-value]
    _end_session()
    session["token"] = token  # a fresh server-side session: the old id is never reused
    return redirect(safe_next(request.args.get("next", "")) or url_for("pages.index"))


def safe_next(target: str) -> str | None:
    """Return `target` only if it is a path on this site (no scheme, no host, no tricks).

    Browsers drop tabs and newlines and read a backslash as a slash, so `/\t/evil.test`
    would leave the site: clean the same way before checking.
    """
    cleaned = target.replace("\t", "").replace("\r", "").replace("\n", "").replace("\\", "/")
    parts = urlsplit(cleaned)
    if parts.scheme or parts.netloc or not cleaned.startswith("/") or cleaned.startswith("//"):
        return None
    return cleaned


@bp.post("/logout")
def logout() -> Response:
    """End the session on the server and in the cookie."""
    _end_session()
    return redirect(url_for("auth.login"))


def _end_session() -> None:
    token = session.get("token")
    if isinstance(token, str):
        users.logout(db(), token)
    session.clear()
