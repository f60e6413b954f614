"""Export decided labels in a stable order, page by page, resumable from a cursor."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from feedback.db.engine import Database
from feedback.db.models import Decision, Item, Project
from feedback.domain.errors import FieldError, InvalidInput
from feedback.schemas import LabelOut
from feedback.services.projects import visible_project
from feedback.services.users import Principal

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
EXPORT_PAGE = 1000
_CURSOR_PREFIX = "decision:"


@dataclass(frozen=True)
class Page:
    """One page of labels; `next_cursor` resumes right after the last one."""

    labels: list[LabelOut]
    next_cursor: str | None
    has_more: bool


@dataclass(frozen=True)
class Export:
    """Everything after a cursor: the project's input shape and the labels, fetched lazily."""

    input_kind: str
    features: list[str]
    labels: Iterator[LabelOut]


def encode_cursor(decision_id: int) -> str:
    """An opaque cursor for the position right after this decision."""
    raw = f"{_CURSOR_PREFIX}{decision_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The decision id a cursor stands for (0 for none); InvalidInput names `after`."""
    if cursor is None or cursor == "":
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    number = raw.removeprefix(_CURSOR_PREFIX)
    if not raw.startswith(_CURSOR_PREFIX) or not number.isdigit() or len(number) > 18:
        raise InvalidInput("the cursor is not valid", [FieldError("after", "is not a cursor")])
    return int(number)


def parse_limit(value: str | None) -> int:
    """The page size asked for, within bounds; InvalidInput names `limit`."""
    if value is None:
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise InvalidInput(
            "the limit is not valid",
            [FieldError("limit", f"must be a whole number from 1 to {MAX_LIMIT}")],
        )
    return int(value)


def labels_page(
    db: Database, principal: Principal, slug: str, after: str | None, limit: int
) -> Page:
    """Decided labels after the cursor, oldest decision first, at most `limit` of them."""
    start = decode_cursor(after)
    with db.read() as session:
        project = visible_project(session, principal, slug)
        rows = _fetch(session, project.id, start, limit + 1)
    labels = [_label(row) for row in rows[:limit]]
    next_cursor = labels[-1].cursor if labels else (after or None)
    return Page(labels, next_cursor, has_more=len(rows) > limit)


def export(db: Database, principal: Principal, slug: str, after: str | None) -> Export:
    """Every label after the cursor; the project is checked now, pages are read on demand."""
    start = decode_cursor(after)
    with db.read() as session:
        project = visible_project(session, principal, slug)
        first = _fetch(session, project.id, start, EXPORT_PAGE)
    return Export(project.input_kind, list(project.features or []), _pages(db, project, first))


def _pages(db: Database, project: Project, rows: list[Any]) -> Iterator[LabelOut]:
    while rows:
        yield from (_label(row) for row in rows)
        if len(rows) < EXPORT_PAGE:
            return
        with db.read() as session:  # a short read per page: the export may be slow to consume
            rows = _fetch(session, project.id, rows[-1].id, EXPORT_PAGE)


def _fetch(session: Session, project_id: int, after_id: int, limit: int) -> list[Any]:
    return list(
        session.execute(
            select(
                Decision.id,
                Decision.item_id,
                Decision.label,
                Decision.source,
                Decision.decided_at,
                Decision.previous_label,
                Decision.corrected_at,
                Item.external_id,
                Item.is_holdout,
                Item.input,
            )
            .join(Item, Item.id == Decision.item_id)
            .where(Decision.project_id == project_id, Decision.id > after_id)
            .order_by(Decision.id)
            .limit(limit)
        )
    )


def _label(row: Any) -> LabelOut:
    return LabelOut.model_construct(
        cursor=encode_cursor(row.id),
        item_id=row.item_id,
        external_id=row.external_id,
        label=row.label,
        source=row.source,
        holdout=bool(row.is_holdout),
        input=row.input,
        decided_at=_iso(row.decided_at),
        previous_label=row.previous_label,
        corrected_at=_iso(row.corrected_at) if row.corrected_at else None,
    )


def _iso(moment: datetime) -> str:
    return moment.isoformat() + "Z"
