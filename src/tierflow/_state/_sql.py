"""SQL kept by name in `.sql` files (`sql/<dialect>/queries.sql`), as procrastinate keeps it,
and the schema migrations (`migrations/<dialect>/NNNN_*.sql`).

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

__all__ = ["parse_queries", "queries", "shipped_migrations"]

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


def shipped_migrations(dialect: str, label: str) -> list[tuple[int, str]]:
    """The schema migrations shipped for `dialect`, as (version, SQL), in order; `label` names
    the dialect in the error raised if they are not numbered 1, 2, 3, …"""
    folder = resources.files("tierflow._state") / "migrations" / dialect
    found = sorted(
        (int(item.name.split("_", 1)[0]), item.read_text(encoding="utf-8"))
        for item in folder.iterdir()
        if item.name.endswith(".sql")
    )
    if [version for version, _ in found] != list(range(1, len(found) + 1)):
        raise StateError(f"the shipped {label} migrations are not numbered 1, 2, 3, …")
    return found
