"""Quoting filters for InfluxQL: every value a template puts into an InfluxQL query passes one
of them.

Each returns a `QueryLiteral`, the only kind of text (besides ints) the template environment's
`finalize` lets through. Identifiers are double-quoted and strings single-quoted, with the
escapes InfluxQL's scanner undoes (`\\\\ \\" \\' \\n`); a value no escape can say (a carriage
return, a NUL) is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from tierflow._config import AGGREGATES
from tierflow._errors import TemplateError
from tierflow._templates import QueryLiteral, number_literal
from tierflow._windows import ensure_utc, isoformat

__all__ = [
    "INFLUXQL_FILTERS",
    "influxql_duration",
    "influxql_function",
    "influxql_ident",
    "influxql_number",
    "influxql_string",
    "influxql_time",
]

_INFLUXQL_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "'": "\\'", "\n": "\\n"})


def influxql_ident(name: object) -> QueryLiteral:
    """A double-quoted InfluxQL identifier (the scanner unescapes `\\\\ \\" \\' \\n`)."""
    text = _text(name, "identifier")
    if not text:
        raise TemplateError("an InfluxQL identifier cannot be empty")
    return QueryLiteral('"' + text.translate(_INFLUXQL_ESCAPES) + '"')


def influxql_string(value: object) -> QueryLiteral:
    """A single-quoted InfluxQL string literal."""
    return QueryLiteral("'" + _text(value, "string").translate(_INFLUXQL_ESCAPES) + "'")


def influxql_time(moment: object) -> QueryLiteral:
    """An RFC 3339 UTC time literal, e.g. `'2026-11-01T00:00:00Z'`."""
    if not isinstance(moment, datetime):
        raise TemplateError(f"influxql_time needs a datetime, got {type(moment).__name__}")
    try:
        return QueryLiteral(f"'{isoformat(ensure_utc(moment))}'")
    except ValueError as exc:
        raise TemplateError(f"influxql_time: {exc}") from None


_INFLUXQL_UNITS = (
    ("w", 604_800_000_000),
    ("d", 86_400_000_000),
    ("h", 3_600_000_000),
    ("m", 60_000_000),
    ("s", 1_000_000),
    ("ms", 1000),
    ("u", 1),
)


def influxql_duration(delta: object) -> QueryLiteral:
    """An InfluxQL duration literal: one integer and one unit (InfluxQL has no `1h30m`)."""
    if not isinstance(delta, timedelta):
        raise TemplateError(f"influxql_duration needs a timedelta, got {type(delta).__name__}")
    micros = delta // timedelta(microseconds=1)
    if micros == 0:
        return QueryLiteral("0s")
    for unit, size in _INFLUXQL_UNITS:
        if micros % size == 0:
            return QueryLiteral(f"{micros // size}{unit}")
    raise AssertionError("unreachable: every duration is a whole number of microseconds")


def influxql_function(name: object) -> QueryLiteral:
    """An aggregate function name from the known set (they cannot be quoted, so they are vetted)."""
    text = _text(name, "function")
    if text not in AGGREGATES:
        raise TemplateError(f"unknown aggregate function {text!r}")
    return QueryLiteral(text)


def influxql_number(value: object) -> QueryLiteral:
    """A finite int or float as an InfluxQL number literal."""
    return QueryLiteral(number_literal(value, "influxql_number"))


def _text(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TemplateError(f"cannot quote a {type(value).__name__} as an InfluxQL {what}")
    text = str(value)
    # InfluxQL's reader turns CR into a newline and takes NUL for the end of input; no escape
    # spells either, so such a value cannot be written in a query at all.
    if "\r" in text or "\x00" in text:
        raise TemplateError(
            f"the InfluxQL {what} {text[:40]!r} holds a carriage return or NUL, "
            "which InfluxQL cannot quote"
        )
    return text


INFLUXQL_FILTERS: dict[str, Callable[[Any], QueryLiteral]] = {
    "influxql_ident": influxql_ident,
    "influxql_string": influxql_string,
    "influxql_time": influxql_time,
    "influxql_duration": influxql_duration,
    "influxql_function": influxql_function,
    "influxql_number": influxql_number,
}
