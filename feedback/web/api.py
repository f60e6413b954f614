"""The JSON API (`/api/v1`): bearer tokens, or a session plus its CSRF token."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from flask_wtf.csrf import CSRFError
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from feedback.domain.errors import (
    Conflict,
    DomainError,
    FieldError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unavailable,
)
from feedback.schemas import FenceIn, VoteIn
from feedback.services import ingest, models, predict, queue, retrain, users
from feedback.services.users import Principal
from feedback.web.context import csrf, db, session_principal, settings

bp = Blueprint("api", __name__)
STATUS = {InvalidInput: 422, NotFound: 404, Conflict: 409, Forbidden: 403, Unavailable: 503}


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: list[FieldError] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or []


def error_response(
    status: int, code: str, message: str, details: list[FieldError] | None = None
) -> tuple[Response, int]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = [d.as_dict() for d in details]
    return jsonify({"error": body}), status


@bp.errorhandler(ApiError)
def _api_error(error: ApiError) -> tuple[Response, int]:
    return error_response(error.status, error.code, error.message, error.details)


@bp.errorhandler(DomainError)
def _domain_error(error: DomainError) -> tuple[Response, int]:
    details = error.details if isinstance(error, InvalidInput) else None
    return error_response(STATUS.get(type(error), 400), error.code, error.message, details)


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> tuple[Response, int]:
    status = error.code or 500
    return error_response(
        status, (error.name or "error").lower().replace(" ", "_"), error.description or ""
    )


@bp.get("/healthz")
def healthz() -> Response:
    """Report that the app is up and its database answers."""
    with db().read() as session:
        session.connection().exec_driver_sql("SELECT 1")
    return jsonify({"status": "ok"})


def principal() -> Principal:
    """Who is calling: a bearer token, or a logged-in session (which must carry CSRF)."""
    if "api_principal" in g:
        return g.api_principal  # type: ignore[no-any-return]
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        found = (
            users.principal_for_token(db(), token.strip()) if scheme.lower() == "bearer" else None
        )
        if found is None:
            raise ApiError(401, "unauthorized", "the bearer token is missing, unknown or revoked")
    else:
        found = session_principal()
        if found is None:
            raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'")
        if request.method == "POST":
            try:
                csrf.protect()
            except CSRFError as error:
                raise ApiError(400, "csrf", str(error.description)) from error
    g.api_principal = found
    return found


def json_body() -> dict[str, Any]:
    """Parse the JSON object body; 415 for another content type, 400 for malformed JSON."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "malformed_json", "the body is not valid JSON")
    if not isinstance(body, dict):
        raise ApiError(
            422,
            "invalid_input",
            "the body must be a JSON object",
            [FieldError("body", "must be an object")],
        )
    return body


def items_of(body: dict[str, Any]) -> list[Any]:
    """The `items` list of a batch body, within the batch limit."""
    items = body.get("items")
    if not isinstance(items, list) or not items:
        raise ApiError(
            422,
            "invalid_input",
            "the body needs a non-empty 'items' list",
            [FieldError("items", "must be a non-empty list")],
        )
    if len(items) > settings().max_batch:
        raise ApiError(413, "too_many_items", f"at most {settings().max_batch} items per request")
    return items


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


@bp.post("/api/v1/projects/<slug>/queue/claim")
def post_claim(slug: str) -> Response | tuple[str, int]:
    """Lease the next item for the calling labeler; 204 when none is available."""
    claim = queue.claim_next(db(), principal(), slug, settings().lease_seconds)
    if claim is None:
        return "", 204
    return jsonify(
        {
            "item": {
                "id": claim.item_id,
                "input": claim.input,
                "display": claim.display,
                "prediction": claim.prediction,
                "lease": {"expires_at": claim.expires_at.isoformat() + "Z", "fence": claim.fence},
            }
        }
    )


@bp.post("/api/v1/items/<int:item_id>/votes")
def post_vote(item_id: int) -> tuple[Response, int]:
    """Record a vote under the current lease; 409 when the lease is lost or stale."""
    caller = principal()
    vote = _parse(VoteIn, json_body())
    result = queue.cast_vote(db(), caller, item_id, vote.label, vote.fence, vote.seconds)
    return jsonify(
        {"item_id": result.item_id, "outcome": result.outcome, "label": result.label}
    ), 201


@bp.post("/api/v1/items/<int:item_id>/lease")
def post_extend(item_id: int) -> Response:
    """Extend the caller's lease (heartbeat)."""
    caller = principal()
    fence = _parse(FenceIn, json_body()).fence
    expires = queue.extend(db(), caller, item_id, fence, settings().lease_seconds)
    return jsonify({"expires_at": expires.isoformat() + "Z", "fence": fence})


@bp.post("/api/v1/items/<int:item_id>/release")
def post_release(item_id: int) -> Response:
    """Give the item back to the pool (skip)."""
    caller = principal()
    queue.release(db(), caller, item_id, _parse(FenceIn, json_body()).fence)
    return jsonify({"released": item_id})


def _parse(model: Any, body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as error:
        details = [
            FieldError(".".join(map(str, e["loc"])) or "body", e["msg"]) for e in error.errors()
        ]
        raise ApiError(422, "invalid_input", "the body is not valid", details) from error
