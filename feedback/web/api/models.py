"""The champion model, its file, every version's lineage, rollback, and retrain runs."""

from __future__ import annotations

from dataclasses import asdict

from flask import Response, jsonify, request

from feedback.domain.errors import FieldError, Forbidden, InvalidInput
from feedback.schemas import ChampionIn
from feedback.services import lineage, models, retrain, rollback, run_report
from feedback.web.api.common import api_blueprint, json_body, parse, principal
from feedback.web.context import db

bp = api_blueprint("api_models")
VERSION_MAX = 2**31 - 1  # version numbers are 32-bit integers in the database


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


@bp.get("/api/v1/projects/<slug>/models")
def get_models(slug: str) -> Response:
    """List every model version, newest first, with its decision and metrics."""
    return jsonify({"items": lineage.list_versions(db(), principal(), slug)})


@bp.get(f"/api/v1/projects/<slug>/models/<int(max={VERSION_MAX}):version>")
def get_version(slug: str, version: int) -> Response:
    """Describe one version with its lineage and the report of the run that made it."""
    return jsonify(lineage.version_detail(db(), principal(), slug, version))


@bp.get(f"/api/v1/projects/<slug>/models/<int(max={VERSION_MAX}):version>/changes")
def get_changes(slug: str, version: int) -> Response:
    """Say what changed since `version`: new and corrected labels, versions, metrics."""
    until = _int_arg("until")
    return jsonify(lineage.changes_since(db(), principal(), slug, version, until))


@bp.post("/api/v1/projects/<slug>/champion")
def post_champion(slug: str) -> Response:
    """Roll back: serve an earlier promoted version again (admins only); audited."""
    caller = principal()
    body = parse(ChampionIn, json_body())
    return jsonify(asdict(rollback.rollback(db(), caller, slug, body.version)))


@bp.post("/api/v1/projects/<slug>/retrain")
def post_retrain(slug: str) -> tuple[Response, int]:
    """Request a retrain (admins and service tokens); coalesces with a run in progress."""
    caller = principal()
    if caller.role not in ("admin", "service"):
        raise Forbidden("only admins and the project's service token may request a retrain")
    return jsonify({"run": retrain.request_retrain(db(), caller, slug)}), 202


@bp.get("/api/v1/projects/<slug>/runs/<int:run_id>")
def get_run(slug: str, run_id: int) -> Response:
    """Report a retrain run: status, progress by stage, timings and decision."""
    return jsonify(run_report.describe_run(db(), principal(), slug, run_id))


def _int_arg(name: str) -> int | None:
    """An optional positive integer query argument; 422 naming it when malformed."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= VERSION_MAX:
        message = f"'{name}' must be a version number"
        raise InvalidInput(message, [FieldError(name, message)])
    return int(raw)
