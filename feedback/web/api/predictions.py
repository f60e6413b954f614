"""Ingest and predict: where model services post what they are unsure about."""

from __future__ import annotations

from flask import Response, jsonify

from feedback.services import caller as callers
from feedback.services import idempotency, ingest, predict
from feedback.web.api.common import (
    answer_response,
    api_blueprint,
    items_of,
    json_body,
    keyed,
    principal,
)
from feedback.web.context import db

bp = api_blueprint("api_predictions")


@bp.get("/healthz")
def healthz() -> Response:
    """Report that the app is up and its database answers."""
    with db().read() as session:
        session.connection().exec_driver_sql("SELECT 1")
    return jsonify({"status": "ok"})


@bp.get("/api/v1/me")
def get_me() -> Response:
    """Say who the token speaks for (a service token: its project)."""
    return jsonify(callers.describe(db(), principal()).model_dump())


@bp.post("/api/v1/projects/<slug>/predictions")
def post_predictions(slug: str) -> Response:
    """Store and route a batch of uncertain predictions (all or nothing, idempotent)."""
    caller, body = principal(), json_body()
    items = items_of(body)
    answer = idempotency.once(
        db(),
        keyed(body),
        lambda claim: ingest.submit_batch(db(), caller, slug, items, claim).model_dump(mode="json"),
    )
    return answer_response(answer)


@bp.post("/api/v1/projects/<slug>/predict")
def post_predict(slug: str) -> Response:
    """Predict with the champion, then store and route like posted predictions."""
    caller, body = principal(), json_body()
    items = items_of(body)
    answer = idempotency.once(
        db(),
        keyed(body),
        lambda claim: predict.predict_and_route(db(), caller, slug, items, claim).model_dump(
            mode="json"
        ),
    )
    return answer_response(answer)
