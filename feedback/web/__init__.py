"""The Flask app factory: blueprints per area, security headers, no state at import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, Response
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter, Map

from feedback.config import Settings
from feedback.db.engine import Database, make_database
from feedback.heap import freeze_startup_heap
from feedback.web import admin, api, auth, pages, review
from feedback.web.context import csrf

ROOT = Path(__file__).resolve().parent.parent.parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https: http:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def create_app(settings: Settings | None = None, db: Database | None = None) -> Flask:
    """Build the web app for these settings (read from the environment when not given)."""
    settings = settings or Settings.from_env()
    app = Flask(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(Path(__file__).resolve().parent.parent / "static"),
    )
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        MAX_FORM_MEMORY_SIZE=settings.max_form_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.is_production,
        WTF_CSRF_TIME_LIMIT=None,
    )
    app.extensions["feedback.settings"] = settings
    app.extensions["feedback.db"] = db or make_database(settings.database_url)
    app.url_map.converters["int"] = DatabaseId  # before any rule is added
    csrf.init_app(app)
    for blueprint in api.BLUEPRINTS:
        csrf.exempt(blueprint)  # the API checks bearer tokens, or CSRF itself for session callers
    for blueprint in (auth.bp, pages.bp, review.bp, admin.bp, *api.BLUEPRINTS):
        app.register_blueprint(blueprint)
    app.jinja_env.globals["zip"] = zip
    app.after_request(_security_headers)
    if settings.proxy_hops:  # trust X-Forwarded-* from exactly that many proxies, no more
        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )
    return app


class DatabaseId(IntegerConverter):
    """An `<int:…>` URL part that fits a 64-bit id: a larger one is a 404, not an overflow."""

    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(url_map, *args, **kwargs)


def create_app_from_env() -> Flask:
    """Entry point for gunicorn: `gunicorn 'feedback.web:create_app_from_env()'`."""
    app = create_app(Settings.from_env())
    freeze_startup_heap()
    return app


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response
