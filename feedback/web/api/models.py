"""The champion model, its file, and retrain runs."""

from __future__ import annotations

from flask import Response, jsonify, request

from feedback.domain.errors import Forbidden
from feedback.services import models, retrain
from feedback.web.api.common import api_blueprint, principal
from feedback.web.context import db

bp = api_blueprint("api_models")


@bp.get("/api/v1/projects/<slug>/model")
def get_model(slug: str) -> Response:
    """Describe the champion model."""
    return jsonify(models.champion_metadata(db(), principal(), slug))


@bp.get("/api/v1/projects/<slug>/model/artifact")
def get_model_artifact(slug: str) -> Response:
    """Download the champion's skops file; the ETag is its sha256."""
    data, sha256 = models.champion_artifact(db(), principal(), slug)
    response = Response(data, mimetype="application/octet-stream")
    response.set_etag(sha256)
    response.headers["Content-Disposition"] = f'attachment; filename="{slug}-{sha256[:12]}.skops"'
    return response.make_conditional(request)  # type: ignore[return-value]


@bp.post("/api/v1/projects/<slug>/retrain")
def post_retrain(slug: str) -> tuple[Response, int]:
    """Request a retrain (admins and service tokens); coalesces with a run in progress."""
    caller = principal()
    if caller.role not in ("admin", "service"):
        raise Forbidden("only admins and the project's service token may request a retrain")
    return jsonify({"run": retrain.request_retrain(db(), caller, slug)}), 202


@bp.get("/api/v1/projects/<slug>/runs/<int:run_id>")
def get_run(slug: str, run_id: int) -> Response:
    """Report a retrain run's status and stage."""
    run = retrain.run_status(db(), principal(), slug, run_id)
    return jsonify(
        {
            "id": run.id,
            "status": run.status,
            "stage": run.stage,
            "trigger": run.trigger,
            "attempts": run.attempts,
            "error": run.error,
            "model_version_id": run.model_version_id,
        }
    )
