"""SQL kept by name in `.sql` files (`sql/<dialect>/queries.sql`), as procrastinate keeps it.

Each query starts at a `-- name: <name>` line and runs to the next; comment lines are kept, a
trailing `;` is not. The files are package data, read once per dialect.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from types import MappingProxyType

from tierflow._errors import StateError

__all__ = ["parse_queries", "queries"]

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """The queries of a `.sql` file's text, by name."""
    parts = _HEADER.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise StateError(f"query {name!r} is defined twice")
        found[name] = body.strip().removesuffix(";").strip()
    return found


@cache
def queries(dialect: str) -> Mapping[str, str]:
    """The queries shipped for `dialect` (e.g. "sqlite"), by name."""
    source = resources.files("tierflow._state") / "sql" / dialect / "queries.sql"
    return MappingProxyType(parse_queries(source.read_text(encoding="utf-8")))
