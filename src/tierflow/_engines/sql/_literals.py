"""Quoting filters for SQL (DataFusion's dialect, as InfluxDB 3 speaks it): every value a
template puts into a query passes one of them, and each returns a `QueryLiteral`.

- `sql_ident`: a double-quoted identifier, `"` doubled (`"a""b"`); DataFusion folds unquoted
  names to lower case, so every name is quoted, always.
- `sql_literal`: a single-quoted string with `'` doubled, a plain number, `TRUE`/`FALSE`.
- `sql_time`: `TIMESTAMP '2026-01-01T00:00:00Z'` (RFC 3339, UTC, nanoseconds when needed).
- `sql_interval`: `INTERVAL '300000000000 nanoseconds'` (exact: no month or day arithmetic).
A NUL byte cannot be said in a SQL string or name: refused. `tests/unit/test_sql_templates.py`
checks them against DataFusion itself.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from tierflow._errors import TemplateError
from tierflow._templates import QueryLiteral, number_literal
from tierflow._windows import EPOCH, ensure_utc, isoformat

__all__ = [
    "SQL_FILTERS",
    "export_query",
    "sql_ident",
    "sql_interval",
    "sql_literal",
    "sql_origin",
    "sql_time",
    "tag_filters",
]


def _text(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TemplateError(f"cannot quote a {type(value).__name__} as a SQL {what}")
    text = str(value)
    if "\x00" in text:
        raise TemplateError(f"a SQL {what} cannot hold a NUL byte: {text[:40]!r}")
    return text


def sql_ident(value: object) -> QueryLiteral:
    """A double-quoted SQL identifier naming exactly `value` (case kept)."""
    text = _text(value, "name")
    if not text:
        raise TemplateError("a SQL name cannot be empty")
    return QueryLiteral('"' + text.replace('"', '""') + '"')


def sql_literal(value: object) -> QueryLiteral:
    """A SQL literal of `value`: a string in single quotes (`'` doubled), a number as plain
    digits (floats keep a decimal point), a boolean as `TRUE`/`FALSE`."""
    if isinstance(value, bool):
        return QueryLiteral("TRUE" if value else "FALSE")
    if isinstance(value, int | float):
        return QueryLiteral(number_literal(value, "sql_literal"))
    return QueryLiteral("'" + _text(value, "string").replace("'", "''") + "'")


def sql_time(moment: object) -> QueryLiteral:
    """A timestamp literal, `TIMESTAMP '2026-01-01T00:00:00Z'` (UTC)."""
    if not isinstance(moment, datetime):
        raise TemplateError(f"sql_time needs a datetime, got {type(moment).__name__}")
    try:
        return QueryLiteral(f"TIMESTAMP '{isoformat(ensure_utc(moment))}'")
    except ValueError as exc:
        raise TemplateError(f"sql_time: {exc}") from None


def sql_interval(delta: object) -> QueryLiteral:
    """An interval literal of exactly `delta`, in nanoseconds (no calendar units)."""
    if not isinstance(delta, timedelta):
        raise TemplateError(f"sql_interval needs a timedelta, got {type(delta).__name__}")
    micros = delta // timedelta(microseconds=1)
    if micros < 0:
        raise TemplateError(f"sql_interval: {delta} is negative")
    return QueryLiteral(f"INTERVAL '{micros * 1000} nanoseconds'")


def tag_filters(
    tags: Mapping[str, str], columns: Collection[str] | None = None
) -> list[str] | None:
    """The WHERE conditions that select the series `tags` names, as InfluxQL reads them: a value
    `""` selects the points without the tag (3.x stores an absent tag as null; a table with no
    such column at all: every point), any other value its exact equal. `columns` are the table's
    tag columns when known (None: every tag named is one). None when no point can match (a
    value other than `""` of a tag the table lacks)."""
    where: list[str] = []
    for key, value in sorted(tags.items()):
        if columns is not None and key not in columns:
            if value:
                return None
            continue
        where.append(
            f"{sql_ident(key)} IS NULL"
            if value == ""
            else f"{sql_ident(key)} = {sql_literal(value)}"
        )
    return where


def export_query(
    measurement: str,
    start: datetime,
    stop: datetime,
    tags: Mapping[str, str],
    columns: Collection[str] | None = None,
) -> str:
    """Every point of one table in `[start, stop)`, narrowed by exact tag values (`tag_filters`;
    `columns`: the table's tag columns, when known), in time order: what an archive job reads
    of a 3.x tier."""
    where = [f'"time" >= {sql_time(start)}', f'"time" < {sql_time(stop)}']
    where += tag_filters(tags, columns) or []
    return f'SELECT * FROM {sql_ident(measurement)} WHERE {" AND ".join(where)} ORDER BY "time"'


def sql_origin(offset: object) -> QueryLiteral:
    """`date_bin`'s origin for a job's `offset`: the epoch moved by it, so that buckets start
    at epoch + offset + k × every, as InfluxQL's `GROUP BY time(every, offset)`."""
    if not isinstance(offset, timedelta):
        raise TemplateError(f"sql_origin needs a timedelta, got {type(offset).__name__}")
    return sql_time(EPOCH + offset)


def _aggregate(aggregate: object) -> QueryLiteral:
    from tierflow._engines.sql._aggregates import sql_aggregate

    return sql_aggregate(aggregate)


#: The filters the template environment registers for SQL.
SQL_FILTERS: Mapping[str, Callable[..., Any]] = {
    "sql_aggregate": _aggregate,
    "sql_origin": sql_origin,
    "sql_ident": sql_ident,
    "sql_literal": sql_literal,
    "sql_time": sql_time,
    "sql_interval": sql_interval,
}
