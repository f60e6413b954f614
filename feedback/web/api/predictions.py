"""Ingest and predict: where model services post what they are unsure about."""

from __future__ import annotations

from flask import Response, jsonify

from feedback.services import ingest, predict
from feedback.web.api.common import api_blueprint, items_of, json_body, principal
from feedback.web.context import db

bp = api_blueprint("api_predictions")


@bp.get("/healthz")
def healthz() -> Response:
    """Report that the app is up and its database answers."""
    with db().read() as session:
        session.connection().exec_driver_sql("SELECT 1")
    return jsonify({"status": "ok"})


@bp.post("/api/v1/projects/<slug>/predictions")
def post_predictions(slug: str) -> Response:
    """Store and route a batch of uncertain predictions (all or nothing)."""
    caller = principal()
    results = ingest.submit_predictions(db(), caller, slug, items_of(json_body()))
    return jsonify({"items": [r.model_dump() for r in results]})


@bp.post("/api/v1/projects/<slug>/predict")
def post_predict(slug: str) -> Response:
    """Predict with the champion, then store and route like posted predictions."""
    caller = principal()
    return jsonify(predict.predict_and_route(db(), caller, slug, items_of(json_body())))
