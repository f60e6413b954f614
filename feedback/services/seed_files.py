"""Reading seed data (CSV or JSONL with a `label` column) into labelled examples."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedback.domain.errors import FieldError, InvalidInput


@dataclass(frozen=True)
class Example:
    input: dict[str, Any]
    label: str


def read_seed_file(path: Path, input_kind: str, features: list[str] | None) -> list[Example]:
    """Parse a `.csv` or `.jsonl` seed file for a project of the given input kind."""
    text = path.read_text(encoding="utf-8")
    rows = _jsonl_rows(text) if path.suffix in {".jsonl", ".ndjson"} else _csv_rows(text)
    examples, problems = [], []
    for index, row in enumerate(rows):
        try:
            examples.append(_example(row, input_kind, features))
        except ValueError as error:
            problems.append(FieldError(field="row", message=str(error), index=index))
    if problems:
        raise InvalidInput(f"{len(problems)} seed rows are not valid", problems[:50])
    return examples


def _csv_rows(text: str) -> list[dict[str, Any]]:
    return list(csv.DictReader(io.StringIO(text)))


def _jsonl_rows(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _example(row: dict[str, Any], input_kind: str, features: list[str] | None) -> Example:
    if "label" not in row or str(row["label"]).strip() == "":
        raise ValueError("has no label")
    label = str(row["label"]).strip()
    if input_kind == "text":
        if not isinstance(row.get("text"), str):
            raise ValueError("has no text")
        return Example({"text": row["text"]}, label)
    names = features or []
    missing = [name for name in names if name not in row]
    if missing:
        raise ValueError(f"misses features {missing[:5]}")
    return Example({"features": [float(row[name]) for name in names]}, label)
