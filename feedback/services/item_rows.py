"""Write new item rows at the driver: the hot path of ingest.

Binding 14 columns a row through SQLAlchemy costs several times what the database does, so
the rows go to the driver as tuples with their JSON already encoded (text that SQLAlchemy's
JSON type reads back as it reads its own), inside the caller's transaction. The unique index
skips external ids the project has already (`ON CONFLICT DO NOTHING`): a batch of new items
needs no lookup first, and a concurrent request storing the same id makes ours a duplicate.

- SQLite: multi-row `INSERT ... VALUES (...), (...) RETURNING`, 1,000 rows a statement;
- PostgreSQL: psycopg's pipelined `executemany(..., returning=True)`, which beats one
  multi-row statement with thousands of parameters by about half.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, String, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError

from feedback.db.models import Item, naive_utcnow

COLUMNS = (
    *("project_id", "external_id", "input", "display", "probabilities", "model_version"),
    *("uncertainty", "priority", "route", "status", "is_holdout", "deferred", "fence"),
    "created_at",
)
SQLITE_ROWS_PER_STATEMENT = 1000
LOOKUP_CHUNK = 500  # 14 parameters a row: within SQLite's 32,766
_json_string = json.encoder.encode_basestring_ascii
json_key = _json_string  # a label as a JSON object key, for json_numbers
_SKIP_KNOWN = " ON CONFLICT (project_id, external_id) DO NOTHING RETURNING id, external_id"
_FOUND = (Item.id, Item.external_id, Item.route, Item.uncertainty, Item.status, Item.deferred)
_WANTED = func.unnest(bindparam("ids", type_=ARRAY(String))).table_valued("external_id")
_GIVEN = _WANTED.render_derived()
_FOUND_POSTGRES = select(*_FOUND).join_from(
    _GIVEN,
    Item,
    (Item.project_id == bindparam("project_id")) & (Item.external_id == _GIVEN.c.external_id),
)
_FOUND_SQLITE = select(*_FOUND).where(
    Item.project_id == bindparam("project_id"),
    Item.external_id.in_(bindparam("ids", expanding=True)),
)


def insert_items(connection: Connection, rows: list[dict[str, Any]]) -> list[str]:
    """Insert routed item rows and set each new row's `id`; skip external ids the project has.

    Returns:
        The external ids that were skipped: stored before, perhaps by a concurrent request.
    """
    if not rows:
        return []
    sqlite = connection.dialect.name == "sqlite"
    now = naive_utcnow()
    created: Any = now.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else now  # SQLAlchemy's form
    values = _values(rows, created)
    head = f"INSERT INTO {Item.__tablename__} ({', '.join(COLUMNS)}) VALUES "  # noqa: S608
    returned = _sqlite(connection, head, values) if sqlite else _postgres(connection, head, values)
    ids = {external_id: item_id for item_id, external_id in returned}
    for row in rows:
        if row["external_id"] in ids:
            row["id"] = ids[row["external_id"]]
    return [row["external_id"] for row in rows if row["external_id"] not in ids]


def existing_items(
    connection: Connection, project_id: int, external_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """The project's items with these external ids, by external id.

    On PostgreSQL the ids are joined from an array: an `IN` list of hundreds is planned as a
    sequential scan until the table has statistics, which a fast-growing table lacks.
    """
    if connection.dialect.name == "postgresql":
        found = connection.execute(
            _FOUND_POSTGRES, {"project_id": project_id, "ids": external_ids}
        ).all()
    else:
        found = []
        for start in range(0, len(external_ids), LOOKUP_CHUNK):
            chunk = external_ids[start : start + LOOKUP_CHUNK]
            found += connection.execute(_FOUND_SQLITE, {"project_id": project_id, "ids": chunk})
    return {row.external_id: row._asdict() for row in found}


def _values(rows: list[dict[str, Any]], created: Any) -> list[tuple[Any, ...]]:
    keys = [json_key(label) for label in rows[0]["probabilities"]]
    return [
        (
            *(r["project_id"], r["external_id"], _json_input(r["input"])),
            None if r["display"] is None else json.dumps(r["display"]),
            *(json_numbers(keys, r["probabilities"].values()), r["model_version"]),
            *(r["uncertainty"], r["priority"], r["route"], r["status"], r["is_holdout"]),
            *(r["deferred"], 0, created),
        )
        for r in rows
    ]


def _sqlite(connection: Connection, head: str, values: list[tuple[Any, ...]]) -> list[Any]:
    marks = "(" + ", ".join("?" * len(COLUMNS)) + ")"
    returned: list[Any] = []
    for start in range(0, len(values), SQLITE_ROWS_PER_STATEMENT):
        chunk = values[start : start + SQLITE_ROWS_PER_STATEMENT]
        statement = head + ", ".join([marks] * len(chunk)) + _SKIP_KNOWN
        flat = tuple(value for row in chunk for value in row)
        returned += connection.exec_driver_sql(statement, flat).all()
    return returned


def _postgres(connection: Connection, head: str, values: list[tuple[Any, ...]]) -> list[Any]:
    statement = head + "(" + ", ".join(["%s"] * len(COLUMNS)) + ")" + _SKIP_KNOWN
    driver: Any = connection.connection.driver_connection  # psycopg, in this transaction
    returned: list[Any] = []
    try:
        with driver.cursor() as cursor:
            if len(values) == 1:  # one round trip without entering pipeline mode
                returned += cursor.execute(statement, values[0]).fetchall()
                return returned
            cursor.executemany(statement, values, returning=True)
            while True:
                returned += cursor.fetchall()
                if not cursor.nextset():
                    return returned
    except connection.dialect.loaded_dbapi.IntegrityError as error:  # as SQLAlchemy would
        raise IntegrityError(statement, None, error) from error


def _json_input(given: dict[str, Any]) -> str:
    """JSON of a stored input, a text one without the general encoder's overhead."""
    text = given.get("text")
    return '{"text": ' + _json_string(text) + "}" if isinstance(text, str) else json.dumps(given)


def json_numbers(keys: list[str], values: Iterable[float]) -> str:
    """JSON of {label: probability}; the floats are finite (validated), `repr` is JSON's form."""
    pairs = zip(keys, values, strict=True)
    return "{" + ", ".join(f"{key}: {value!r}" for key, value in pairs) + "}"
