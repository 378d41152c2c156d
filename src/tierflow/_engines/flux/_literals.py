"""Quoting filters for Flux: every value a template puts into a Flux script passes one of them.

Each returns a `QueryLiteral`, the only kind of text (besides ints) the template environment's
`finalize` lets through. The escapes follow the Flux spec's lexical rules (string literals:
`\\\\ \\" \\n \\r \\t \\xNN`); `$` is always written `\\x24`, so it never opens a `${`
interpolation. `tests/unit/test_flux_templates.py` checks them against the official parser
(`flux-lsp-node`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from tierflow._config import AGGREGATES
from tierflow._errors import TemplateError
from tierflow._templates import DeleteRange, QueryLiteral, number_literal
from tierflow._windows import ensure_utc, isoformat

__all__ = [
    "FLUX_AGGREGATES",
    "FLUX_FILTERS",
    "FLUX_KEYWORDS",
    "delete_predicate",
    "flux_aggregate",
    "flux_duration",
    "flux_ident",
    "flux_number",
    "flux_string",
    "flux_time",
]

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def flux_string(value: object) -> QueryLiteral:
    """A double-quoted Flux string literal holding exactly `value`."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TemplateError(f"cannot quote a {type(value).__name__} as a Flux string")
    text = str(value)
    out: list[str] = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char == "$":
            # `${` opens an interpolation, and libflux also refuses `$` before an escape
            # (`"$\\""`, seen with flux-lsp-node 0.8.40): a hex escape says `$` in every context.
            out.append("\\x24")
        elif ord(char) < 0x20 or char == "\x7f":
            out.append(f"\\x{ord(char):02x}")  # control bytes: one hex escape each
        else:
            out.append(char)
    return QueryLiteral('"' + "".join(out) + '"')


def flux_time(moment: object) -> QueryLiteral:
    """An absolute RFC 3339 UTC time literal, e.g. `2026-11-01T00:00:00Z` (unquoted in Flux)."""
    if not isinstance(moment, datetime):
        raise TemplateError(f"flux_time needs a datetime, got {type(moment).__name__}")
    try:
        return QueryLiteral(isoformat(ensure_utc(moment)))
    except ValueError as exc:
        raise TemplateError(f"flux_time: {exc}") from None


_UNITS = (("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000), ("ms", 1000), ("us", 1))


def flux_duration(delta: object) -> QueryLiteral:
    """A Flux duration literal such as `1h30m`. Only fixed-length units (h and below): `d` and
    `w` are fixed in Flux too, but hours leave no doubt that windows stay epoch-aligned."""
    if not isinstance(delta, timedelta):
        raise TemplateError(f"flux_duration needs a timedelta, got {type(delta).__name__}")
    micros = delta // timedelta(microseconds=1)
    if micros < 0:
        raise TemplateError(f"flux_duration: {delta} is negative")
    if micros == 0:
        return QueryLiteral("0s")
    parts = []
    for unit, size in _UNITS:
        count, micros = divmod(micros, size)
        if count:
            parts.append(f"{count}{unit}")
    return QueryLiteral("".join(parts))


FLUX_KEYWORDS = frozenset(
    {
        "and",
        "builtin",
        "else",
        "empty",
        "exists",
        "if",
        "import",
        "in",
        "not",
        "option",
        "or",
        "package",
        "return",
        "test",
        "testcase",
        "then",
    }
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def flux_ident(name: object) -> QueryLiteral:
    """A bare Flux identifier. Flux cannot quote identifiers, so anything but letters, digits
    and `_` (or a keyword) is refused: use `r[{{ key | flux_string }}]` for odd column names."""
    if not isinstance(name, str) or not _IDENT.fullmatch(name) or name in FLUX_KEYWORDS:
        raise TemplateError(
            f"{str(name)[:40]!r} is not a plain Flux identifier (letters, digits, '_', not a "
            "keyword); quote column names with flux_string inside r[...]"
        )
    return QueryLiteral(name)


def flux_number(value: object) -> QueryLiteral:
    """A finite int (64-bit) or float as a Flux number literal; floats keep their point."""
    return QueryLiteral(number_literal(value, "flux_number"))


# InfluxQL's aggregates as Flux functions with the same results. MEDIAN averages the two middle
# values; Flux's default median is an estimate (t-digest), "exact_mean" is InfluxQL's rule.
# MODE has no exact counterpart (InfluxQL picks one of tied values, Flux returns them all), so
# it is refused for 2.x at validation.
FLUX_AGGREGATES: dict[str, str] = {
    "count": "count",
    "first": "first",
    "last": "last",
    "max": "max",
    "mean": "mean",
    "median": '(column, tables=<-) => tables |> median(column: column, method: "exact_mean")',
    "min": "min",
    "spread": "spread",
    "stddev": "stddev",
    "sum": "sum",
}
assert set(FLUX_AGGREGATES) <= AGGREGATES


def flux_aggregate(name: object) -> QueryLiteral:
    """The Flux function (for `aggregateWindow(fn: …)`) that computes an InfluxQL aggregate."""
    if not isinstance(name, str) or name not in FLUX_AGGREGATES:
        raise TemplateError(f"no Flux counterpart for the aggregate {str(name)[:40]!r}")
    return QueryLiteral(FLUX_AGGREGATES[name])


FLUX_FILTERS: dict[str, Callable[[Any], QueryLiteral]] = {
    "flux_string": flux_string,
    "flux_time": flux_time,
    "flux_duration": flux_duration,
    "flux_ident": flux_ident,
    "flux_number": flux_number,
    "flux_aggregate": flux_aggregate,
}


def delete_predicate(target: DeleteRange) -> str:
    """`_measurement="m" AND "tag"="value"`: the delete API's InfluxQL-like predicate (only `=`
    and `AND`). Its quoting rules are thinly documented, so a name or value that would need an
    escape (a double quote, a backslash, a line break) is refused rather than guessed at."""
    pairs = [("_measurement", target.measurement), *target.tags]
    for key, value in pairs:
        for text in (key, value):
            if any(char in text for char in '"\\\n\r'):
                raise TemplateError(
                    f"replace: cannot delete by {key}={value!r}: the delete API's predicate "
                    "cannot safely quote double quotes, backslashes or line breaks"
                )
    return " AND ".join(
        (key if key == "_measurement" else f'"{key}"') + f'="{value}"' for key, value in pairs
    )
