"""The OpenAPI 3.1 document, built from the pydantic models that validate the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from feedback import schemas
from feedback.services import idempotency, labels

REF = "#/components/schemas/{model}"
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1  # model version numbers
PROJECT = "/api/v1/projects/{slug}"
WRITE_ERRORS = (400, 401, 403, 404, 409, 415, 422)  # a JSON body, a role, a lease or a race
ERRORS = {
    400: "Malformed JSON, or a session caller without its CSRF token.",
    401: "No bearer token, or an unknown or revoked one.",
    403: "The caller may see the project but not do this.",
    404: "No such project, or the token belongs to another project (no existence leak).",
    409: "A conflict: the first request with this Idempotency-Key is still running (retry "
    "soon), the lease was lost or its fence is stale, or the champion changed meanwhile.",
    413: "The body is over the size limit, or the batch has too many items.",
    415: "The body is not `Content-Type: application/json`.",
    422: "Invalid input: `details` names every bad item (`index`) and `field`; nothing stored.",
    429: "The review queue is full and the project rejects (`queue_full: reject`).",
    503: "The project has no champion model yet.",
}


@dataclass(frozen=True)
class Operation:
    """One route of the API and the models it takes and returns."""

    op_id: str
    method: str
    path: str
    summary: str
    tag: str
    ok: tuple[int, type[BaseModel] | None]
    errors: tuple[int, ...]
    request: type[BaseModel] | None = None
    params: tuple[dict[str, Any], ...] = ()
    media: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    public: bool = False


def _slug() -> dict[str, Any]:
    pattern = "^[a-z0-9_-]{1,64}$"
    return {
        "name": "slug",
        "in": "path",
        "required": True,
        "schema": {"pattern": pattern, "type": "string"},
    }


def _idempotency_key() -> dict[str, Any]:
    return {
        "name": idempotency.HEADER,
        "in": "header",
        "required": False,
        "description": "Replays the first answer for the same key and body (scoped to the token).",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": idempotency.MAX_KEY_LENGTH,
            "pattern": "^[!-~]+$",
        },
    }


def _int_path(name: str, maximum: int = INT64_MAX) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 0, "maximum": maximum},
    }


def _cursor_params() -> tuple[dict[str, Any], ...]:
    after = {
        "name": "after",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "A cursor from a previous page (`next_cursor` or an item's `cursor`).",
    }
    limit = {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": labels.MAX_LIMIT,
            "default": labels.DEFAULT_LIMIT,
        },
    }
    return after, limit


OPERATIONS = (
    Operation(
        "post_predictions",
        "post",
        f"{PROJECT}/predictions",
        "Post uncertain predictions",
        "model service",
        (200, schemas.PredictionsOut),
        (400, 401, 404, 409, 413, 415, 422, 429),
        schemas.PredictionsIn,
        (_slug(), _idempotency_key()),
        description="Validate every item, then store and route them all, or none. An "
        "`external_id` already in the project comes back with `duplicate: true`.",
    ),
    Operation(
        "post_predict",
        "post",
        f"{PROJECT}/predict",
        "Let the champion predict, then route",
        "model service",
        (200, schemas.PredictOut),
        (400, 401, 404, 409, 413, 415, 422, 429, 503),
        schemas.PredictIn,
        (_slug(), _idempotency_key()),
    ),
    Operation(
        "get_model",
        "get",
        f"{PROJECT}/model",
        "Describe the champion model",
        "model",
        (200, schemas.ModelOut),
        (401, 404, 503),
        params=(_slug(),),
    ),
    Operation(
        "get_model_artifact",
        "get",
        f"{PROJECT}/model/artifact",
        "Download the champion's skops file",
        "model",
        (200, None),
        (401, 404, 503),
        params=(_slug(),),
        media={"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        description="The `ETag` is the file's sha256; `If-None-Match` gives 304.",
    ),
    Operation(
        "get_labels",
        "get",
        f"{PROJECT}/labels",
        "List decided labels after a cursor",
        "labels",
        (200, schemas.LabelsOut),
        (401, 404, 422),
        params=(_slug(), *_cursor_params()),
        media={"application/x-ndjson": {"schema": {"type": "string"}}},
        description="Oldest decision first. `Accept: application/x-ndjson` gives one label "
        "per line, with `X-Next-Cursor` and `X-Has-More` headers.",
    ),
    Operation(
        "get_labels_csv",
        "get",
        f"{PROJECT}/labels.csv",
        "Export decided labels as CSV",
        "labels",
        (200, None),
        (401, 404, 422),
        params=(_slug(), _cursor_params()[0]),
        media={"text/csv": {"schema": {"type": "string"}}},
    ),
    Operation(
        "post_retrain",
        "post",
        f"{PROJECT}/retrain",
        "Request a retrain now",
        "model",
        (202, schemas.RetrainOut),
        (400, 401, 403, 404),
        params=(_slug(),),
    ),
    Operation(
        "get_run",
        "get",
        f"{PROJECT}/runs/{{run_id}}",
        "Follow a retrain run",
        "model",
        (200, schemas.RunOut),
        (401, 404),
        params=(_slug(), _int_path("run_id")),
    ),
    Operation(
        "get_models",
        "get",
        f"{PROJECT}/models",
        "List model versions",
        "model",
        (200, schemas.ModelsOut),
        (401, 404),
        params=(_slug(),),
        description="Newest first, each with its holdout scores, decision and reasons; "
        "`champion` marks the version serving now.",
    ),
    Operation(
        "get_version",
        "get",
        f"{PROJECT}/models/{{version}}",
        "Describe one model version and its lineage",
        "model",
        (200, schemas.VersionDetailOut),
        (401, 404, 422),
        params=(_slug(), _int_path("version", INT32_MAX)),
        description="The parent version, the run that made it and that run's report "
        "(training-data summary, timings, decision).",
    ),
    Operation(
        "get_changes",
        "get",
        f"{PROJECT}/models/{{version}}/changes",
        "Say what changed since a version",
        "model",
        (200, schemas.ChangesOut),
        (401, 404, 422),
        params=(
            _slug(),
            _int_path("version", INT32_MAX),
            {
                "name": "until",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": INT32_MAX},
                "description": "A later version; without it, up to the newest decision.",
            },
        ),
        description="New labels by class, corrections of already-trained labels, the "
        "versions in between and how the metrics moved.",
    ),
    Operation(
        "post_champion",
        "post",
        f"{PROJECT}/champion",
        "Roll back to an earlier version (admins)",
        "model",
        (200, schemas.RollbackOut),
        WRITE_ERRORS,
        schemas.ChampionIn,
        (_slug(),),
        description="Serves an earlier promoted version again, restores the routing "
        "settings saved with it, audits the change and re-scores the queue.",
    ),
    Operation(
        "post_claim",
        "post",
        f"{PROJECT}/queue/claim",
        "Lease the next item (labelers)",
        "labeler",
        (200, schemas.ClaimOut),
        (400, 401, 403, 404),
        params=(_slug(),),
        media={},
        description="204 when nothing is waiting. The lease's `fence` must come with the vote.",
    ),
    Operation(
        "post_vote",
        "post",
        "/api/v1/items/{item_id}/votes",
        "Vote under the current lease",
        "labeler",
        (201, schemas.VoteOut),
        WRITE_ERRORS,
        schemas.VoteIn,
        (_int_path("item_id"),),
        description="409 when the lease was lost or the fence is stale.",
    ),
    Operation(
        "post_extend",
        "post",
        "/api/v1/items/{item_id}/lease",
        "Extend the lease (heartbeat)",
        "labeler",
        (200, schemas.LeaseOut),
        WRITE_ERRORS,
        schemas.FenceIn,
        (_int_path("item_id"),),
    ),
    Operation(
        "post_release",
        "post",
        "/api/v1/items/{item_id}/release",
        "Give the item back (skip)",
        "labeler",
        (200, schemas.ReleaseOut),
        WRITE_ERRORS,
        schemas.FenceIn,
        (_int_path("item_id"),),
    ),
    Operation(
        "get_me",
        "get",
        "/api/v1/me",
        "Say who the token speaks for",
        "model service",
        (200, schemas.MeOut),
        (401,),
        description="A service token names the one project it may use.",
    ),
    Operation(
        "healthz",
        "get",
        "/healthz",
        "Check that the app and its database answer",
        "health",
        (200, schemas.HealthOut),
        (),
        public=True,
    ),
)


def build(max_batch: int) -> dict[str, Any]:
    """The OpenAPI document for this server's limits."""
    requests = {op.request for op in OPERATIONS if op.request is not None}
    answers = {op.ok[1] for op in OPERATIONS if op.ok[1] is not None}
    answers |= {schemas.ErrorOut, schemas.WebhookEvent}
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((m, "validation") for m in sorted(requests, key=lambda m: m.__name__)),
        *((m, "serialization") for m in sorted(answers, key=lambda m: m.__name__)),
    ]
    refs, top = models_json_schema(pairs, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, refs, max_batch)
    return {
        "openapi": "3.1.0",
        "info": {"title": "feedback API", "version": "1", "description": _INTRO},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _operation(op: Operation, refs: dict[Any, Any], max_batch: int) -> dict[str, Any]:
    status, model = op.ok
    content = {"application/json": {"schema": refs[(model, "serialization")]}} if model else {}
    out: dict[str, Any] = {
        "summary": op.summary,
        "description": op.description,
        "tags": [op.tag],
        "operationId": op.op_id,
        "parameters": list(op.params),
        "responses": {str(status): {"description": "OK", "content": content | op.media}},
    }
    if op.public:
        out["security"] = []
    if op.request is not None:
        schema: dict[str, Any] = {"allOf": [refs[(op.request, "validation")]]}
        if "items" in op.request.model_fields:
            schema["properties"] = {"items": {"maxItems": max_batch}}
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    for code in op.errors:
        out["responses"][str(code)] = _error(code)
    if op.path.endswith("/artifact"):
        out["responses"]["304"] = {"description": "Not modified (the ETag matches)."}
    if op.path.endswith("/queue/claim"):
        out["responses"]["204"] = {"description": "Nothing is waiting for this labeler."}
    return out


def _error(code: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": ERRORS[code],
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorOut")}}},
    }
    if code in (409, 429):
        response["headers"] = {
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}
        }
    return response


_INTRO = (
    "The model-service API of feedback: post the predictions you are unsure about, let the "
    "champion predict, fetch the current model and the decided labels. Send "
    '`Authorization: Bearer <token>`; errors are `{"error": {"code", "message", '
    '"details"}}`. Webhook events have the shape of the `WebhookEvent` schema.'
)
