"""The API's own documentation: the OpenAPI document and a human page, both served locally."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask import Response, jsonify, render_template

from feedback.web.api.common import api_blueprint
from feedback.web.api.spec import REF, build
from feedback.web.context import settings

bp = api_blueprint("api_docs")


@bp.get("/api/v1/openapi.json")
def openapi() -> Response:
    """Serve the OpenAPI 3.1 document (public: it holds no data)."""
    return jsonify(build(settings().max_batch))


@bp.get("/api/docs")
def docs_page() -> str:
    """Show the API reference, rendered on the server from the OpenAPI document."""
    document = build(settings().max_batch)
    groups, schemas = outline(document)
    return render_template("api/docs.html", document=document, groups=groups, schemas=schemas)


@dataclass(frozen=True)
class Entry:
    """One operation as the human docs page shows it."""

    method: str
    path: str
    summary: str
    description: str
    params: list[dict[str, Any]]
    request: str | None
    responses: list[tuple[str, str, list[str]]]


def outline(document: dict[str, Any]) -> tuple[list[tuple[str, list[Entry]]], dict[str, str]]:
    """Group the document's operations by tag and pretty-print its schemas for the docs page."""
    groups: dict[str, list[Entry]] = {}
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            request = op.get("requestBody", {}).get("content", {}).get("application/json")
            entry = Entry(
                method.upper(),
                path,
                op["summary"],
                op["description"],
                op["parameters"],
                _names(request["schema"])[0] if request else None,
                [(code, r["description"], _media(r)) for code, r in op["responses"].items()],
            )
            groups.setdefault(op["tags"][0], []).append(entry)
    pretty = {
        name: json.dumps(schema, indent=2, sort_keys=True)
        for name, schema in sorted(document["components"]["schemas"].items())
    }
    return list(groups.items()), pretty


def _media(response: dict[str, Any]) -> list[str]:
    content = response.get("content", {})
    return [
        f"{kind} {' '.join(_names(body.get('schema', {})))}".strip()
        for kind, body in content.items()
    ]


def _names(schema: dict[str, Any]) -> list[str]:
    text = json.dumps(schema)
    marker = REF.split("{", 1)[0]
    return [part.split('"', 1)[0] for part in text.split(marker)[1:]]
