"""The database clock, as SQL, so lease expiry never depends on a web server's clock."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import DateTime


class utcnow(FunctionElement[Any]):  # noqa: N801 - reads like the SQL function it stands for
    """The database's current UTC time, plus an optional number of seconds."""

    type = DateTime()
    inherit_cache = True
    _traverse_internals = [
        *FunctionElement._traverse_internals,
        ("seconds", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        self.seconds = float(seconds)


@compiles(utcnow, "postgresql")
def _pg_utcnow(element: utcnow, compiler: Any, **kw: Any) -> str:
    base = "(statement_timestamp() AT TIME ZONE 'utc')"
    if element.seconds:
        return f"({base} + make_interval(secs => {element.seconds!r}))"
    return base


@compiles(utcnow, "sqlite")
def _sqlite_utcnow(element: utcnow, compiler: Any, **kw: Any) -> str:
    if element.seconds:
        return f"strftime('%Y-%m-%d %H:%M:%f', 'now', '{element.seconds:+.3f} seconds')"
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"
