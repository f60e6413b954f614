"""The JSON API (`/api/v1`): bearer tokens, or a session plus its CSRF token."""

from __future__ import annotations

import hashlib
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
from feedback.services import idempotency, users
from feedback.services.ingest import QueueFull
from feedback.services.users import Principal
from feedback.web.context import csrf, db, session_principal, settings

STATUS = {
    QueueFull: 429,
    InvalidInput: 422,
    NotFound: 404,
    Conflict: 409,
    Forbidden: 403,
    Unavailable: 503,
}


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: list[FieldError] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or []


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[FieldError] | None = None,
    **extra: Any,
) -> tuple[Response, int]:
    body: dict[str, Any] = {"code": code, "message": message, **extra}
    if details is not None:
        body["details"] = [d.as_dict() for d in details]
    return jsonify({"error": body}), status


def api_blueprint(name: str) -> Blueprint:
    """A blueprint whose errors are all JSON: `{"error": {"code", "message", "details"}}`."""
    bp = Blueprint(name, __name__)
    bp.register_error_handler(ApiError, _api_error)
    bp.register_error_handler(DomainError, _domain_error)
    bp.register_error_handler(HTTPException, _http_error)
    return bp


def _api_error(error: ApiError) -> tuple[Response, int]:
    return error_response(error.status, error.code, error.message, error.details)


def _domain_error(error: DomainError) -> tuple[Response, int]:
    details = error.details if isinstance(error, InvalidInput) else None
    status = next((STATUS[kind] for kind in type(error).__mro__ if kind in STATUS), 400)
    extra: dict[str, Any] = {}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        extra["retry_after"] = retry_after
    if isinstance(error, QueueFull):
        extra["queue_full"] = "reject"
    response, status = error_response(status, error.code, error.message, details, **extra)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response, status


def _http_error(error: HTTPException) -> tuple[Response, int]:
    name = (error.name or "error").lower().replace(" ", "_")
    return error_response(error.code or 500, name, error.description or "")


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
        g.api_scope = (
            "token:" + hashlib.sha256(b"idempotency:" + token.strip().encode()).hexdigest()
        )
    else:
        found = session_principal()
        if found is None:
            raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'")
        if request.method == "POST":
            try:
                csrf.protect()
            except CSRFError as error:
                raise ApiError(400, "csrf", str(error.description)) from error
        g.api_scope = f"user:{found.user_id}"
    g.api_principal = found
    return found


def keyed(body: Any) -> idempotency.Keyed | None:
    """The caller's Idempotency-Key for this request, scoped to its token; None without one."""
    key = request.headers.get(idempotency.HEADER)
    if key is None:
        return None
    problem = idempotency.key_problem(key)
    if problem is not None:
        raise ApiError(
            422,
            "invalid_input",
            f"bad {idempotency.HEADER}",
            [FieldError(idempotency.HEADER, problem)],
        )
    principal()
    digest = idempotency.request_digest(request.method, request.path, body)
    return idempotency.Keyed(scope=g.api_scope, key=key, digest=digest)


def answer_response(answer: idempotency.Answer) -> Response:
    """The JSON answer; a replay says so in `Idempotent-Replayed: true`."""
    response = jsonify(answer.body)
    if answer.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


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
    unknown = sorted(set(body) - {"items"})
    if unknown:
        raise ApiError(
            422,
            "invalid_input",
            "the body has unknown fields",
            [FieldError(name[:100], "is not a known field") for name in unknown[:20]],
        )
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


def parse(model: Any, body: dict[str, Any]) -> Any:
    """Validate a body with a pydantic model; 422 naming each bad field."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        details = [
            FieldError(".".join(map(str, e["loc"])) or "body", e["msg"]) for e in error.errors()
        ]
        raise ApiError(422, "invalid_input", "the body is not valid", details) from error
