"""The app the systems benchmark serves: the product's own app plus a no-op endpoint.

`gunicorn 'benchmarks.apps:create_bench_app()'` serves exactly what `feedback run` serves
(same factory, same settings from the environment) with one extra route, `POST /bench/noop`,
so a request that does nothing is measured by the same server, workers and middleware as the
product's endpoints. Nothing in the product changes.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

from feedback.heap import freeze_startup_heap
from feedback.web import create_app
from feedback.web.context import csrf


def create_bench_app() -> Flask:
    """The product app (settings from the environment) with `POST /bench/noop` added.

    Built like `create_app_from_env()`, the product's gunicorn entry point: the startup heap
    is frozen once the app exists.
    """
    app = create_app()
    app.add_url_rule("/bench/noop", "bench_noop", noop, methods=["POST"])
    csrf.exempt(noop)  # like the API: no CSRF token on a bearer-style JSON call
    freeze_startup_heap()
    return app


def noop() -> Response:
    """Read the body and answer a constant: the floor under every JSON endpoint."""
    request.get_data()
    return jsonify({"ok": True})
