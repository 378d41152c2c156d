"""Measurement patterns: `measurements = "*"` (every measurement of the source tier) or a regex
between slashes, `measurements = "/^cpu_/"`, as InfluxQL writes one (`FROM /^cpu_/`).

A pattern is resolved per window at run time (`tierflow._wildcards`): the measurements of the
source tier with data in the window are listed on the server, and the pattern is matched here,
in Python, so that both engines (and any to come) select exactly the same names.

The regex is matched as InfluxDB matches one (Go's RE2, unanchored: `^`/`$` anchor it), and only
what Python's `re` and RE2 read alike is accepted: a construct one of them lacks (lookaround,
backreferences, atomic groups, possessive repeats, `\\Z`, conditionals, verbose or locale flags)
is refused at load rather than read differently. `\\d`, `\\w`, `\\s` and `\\b` are ASCII, as in
RE2; case-insensitive matching of non-ASCII letters (which the two fold differently) is refused.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

__all__ = ["ALL", "MeasurementPattern", "parse_pattern"]

#: Every measurement.
ALL = "*"

_SHAPE = (
    'write a list of names, "*" for every measurement, or a regex between slashes such as "/^cpu_/"'
)

# Python-only (or RE2-only) constructs, by the opcode Python's parser gives them.
_REFUSED_OPS = {
    "ASSERT": "lookahead/lookbehind assertions",
    "ASSERT_NOT": "negative lookahead/lookbehind assertions",
    "GROUPREF": "backreferences",
    "GROUPREF_EXISTS": "conditional groups",
    "ATOMIC_GROUP": "atomic groups",
    "POSSESSIVE_REPEAT": "possessive repeats",
}
_REFUSED_AT = {"AT_END_STRING": "\\Z (RE2 reads only \\z; write $)"}
# The inline flags both read alike: i, m, s (`re.UNICODE` is Python's default for str).
_SHARED_FLAGS = re.IGNORECASE | re.MULTILINE | re.DOTALL | re.UNICODE


@dataclass(frozen=True, slots=True)
class MeasurementPattern:
    """A validated pattern: its text as written (`*` or `/regex/`) and, for a regex, the
    compiled expression."""

    text: str
    regex: re.Pattern[str] | None

    def matches(self, name: str) -> bool:
        return self.regex is None or self.regex.search(name) is not None

    def select(self, names: list[str]) -> list[str]:
        """The names it matches, sorted and each once."""
        return sorted({name for name in names if self.matches(name)})


@cache
def parse_pattern(text: str) -> MeasurementPattern:
    """The pattern `text` says, or ValueError naming what is wrong with it."""
    if text == ALL:
        return MeasurementPattern(text, None)
    if len(text) < 2 or not (text.startswith("/") and text.endswith("/")):
        raise ValueError(f"{text!r} is not a measurement pattern: {_SHAPE}")
    # InfluxQL's regex literal: `\/` stands for a slash.
    source = text[1:-1].replace("\\/", "/")
    if not source:
        raise ValueError('an empty regex "//" matches everything: write "*" for that')
    try:
        regex = re.compile(source, re.ASCII)
    except re.error as exc:
        raise ValueError(f"regex {text}: {exc}") from None
    problem = _re2_difference(source)
    if problem:
        raise ValueError(
            f"regex {text}: {problem}, which InfluxDB's RE2 and Python's re read differently "
            "(or one of them not at all)"
        )
    return MeasurementPattern(text, regex)


def _re2_difference(source: str) -> str | None:
    # `re._parser` (3.11+) has no stubs; it is the parser `re.compile` itself uses.
    parser: Any = importlib.import_module("re._parser")
    parsed = parser.parse(source, 0)
    flags = parsed.state.flags
    found = _walk(parsed, set())
    if flags & ~_SHARED_FLAGS or found.pop("flags", None):
        return "an inline flag other than i, m or s"
    if flags & re.IGNORECASE and not source.isascii():
        return "case-insensitive matching of non-ASCII letters"
    return next(iter(found.values()), None)


def _walk(node: Any, seen: set[int], found: dict[str, str] | None = None) -> dict[str, str]:
    found = {} if found is None else found
    for op, value in node:
        name = str(op)
        if name in _REFUSED_OPS:
            found.setdefault(name, _REFUSED_OPS[name])
        if name == "AT" and str(value) in _REFUSED_AT:
            found.setdefault(name, _REFUSED_AT[str(value)])
        if name == "SUBPATTERN" and (value[1] | value[2]) & ~_SHARED_FLAGS:
            found.setdefault("flags", "flags")
        for part in value if isinstance(value, (list, tuple)) else ():
            _descend(part, seen, found)
    return found


def _descend(part: Any, seen: set[int], found: dict[str, str]) -> None:
    if isinstance(part, (list, tuple)):
        for item in part:
            _descend(item, seen, found)
    elif type(part).__name__ == "SubPattern" and id(part) not in seen:
        seen.add(id(part))
        _walk(part, seen, found)
