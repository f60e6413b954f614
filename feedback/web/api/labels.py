"""Decided labels for model services: JSON pages, NDJSON, or one CSV file."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from flask import Response, jsonify, request

from feedback.schemas import LabelOut
from feedback.services import labels
from feedback.web.api.common import api_blueprint, principal
from feedback.web.context import db

bp = api_blueprint("api_labels")
NDJSON = "application/x-ndjson"
CSV_ROWS_PER_CHUNK = 500


@bp.get("/api/v1/projects/<slug>/labels")
def get_labels(slug: str) -> Response:
    """List decided labels after a cursor, as JSON or NDJSON (`Accept`)."""
    caller = principal()
    limit = labels.parse_limit(request.args.get("limit"))
    page = labels.labels_page(db(), caller, slug, request.args.get("after"), limit)
    if request.accept_mimetypes.best_match(["application/json", NDJSON]) != NDJSON:
        return jsonify(
            {
                "items": [label.model_dump() for label in page.labels],
                "next_cursor": page.next_cursor,
                "has_more": page.has_more,
            }
        )
    lines = "".join(json.dumps(label.model_dump()) + "\n" for label in page.labels)
    response = Response(lines, mimetype=NDJSON)
    response.headers["X-Has-More"] = "true" if page.has_more else "false"
    if page.next_cursor:
        response.headers["X-Next-Cursor"] = page.next_cursor
    return response


@bp.get("/api/v1/projects/<slug>/labels.csv")
def get_labels_csv(slug: str) -> Response:
    """Stream every decided label after a cursor as CSV (input columns as in seed files)."""
    found = labels.export(db(), principal(), slug, request.args.get("after"))
    text = found.input_kind == "text"
    columns = ["text"] if text else found.features
    response = Response(_csv(text, columns, found.labels), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{slug}-labels.csv"'
    return response


def _csv(text: bool, columns: list[str], rows: Iterator[LabelOut]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    head = ["cursor", "item_id", "external_id", *columns, "label", "source", "holdout"]
    writer.writerow([*head, "decided_at", "previous_label", "corrected_at"])
    for count, row in enumerate(rows, start=1):
        writer.writerow(_csv_row(text, row))
        if count % CSV_ROWS_PER_CHUNK == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _csv_row(text: bool, row: LabelOut) -> list[object]:
    inputs = [row.input.get("text", "")] if text else list(row.input.get("features", []))
    return [
        row.cursor,
        row.item_id,
        row.external_id,
        *inputs,
        row.label,
        row.source,
        "true" if row.holdout else "false",
        row.decided_at,
        row.previous_label or "",
        row.corrected_at or "",
    ]
