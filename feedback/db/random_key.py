"""A uniform random number in [0, 1) drawn by the database for every new row."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import Float


class random_key(FunctionElement[float]):  # noqa: N801 - reads like the SQL function it stands for
    """`random()` scaled to [0, 1) on every database (a column default, evaluated per row)."""

    type = Float()
    inherit_cache = True


@compiles(random_key, "postgresql")
def _pg_random_key(element: random_key, compiler: Any, **kw: Any) -> str:
    return "random()"


@compiles(random_key, "sqlite")
def _sqlite_random_key(element: random_key, compiler: Any, **kw: Any) -> str:
    # random() is a signed 64-bit integer: keep 53 bits, the precision of a double.
    return "((random() & 9007199254740991) / 9007199254740992.0)"
