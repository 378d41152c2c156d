"""Measurement patterns: `measurements = "*"` (every measurement of the source tier) or a regex
between slashes, `measurements = "/^cpu_/"`, as InfluxQL writes one (`FROM /^cpu_/`).

A pattern is resolved per window at run time (`tierflow._wildcards`): the measurements of the
source tier with data in the window are listed on the server, and the pattern is matched here,
in Python, so that both engines (and any to come) select exactly the same names.

The regex is matched as InfluxDB matches one (Go's `regexp`, RE2 syntax, unanchored: `^`/`$`
anchor it), and only what Python's `re` and RE2 read alike is accepted; what one of them lacks
or reads otherwise is refused at load rather than read differently: lookarounds,
backreferences, atomic groups, possessive repeats, conditionals, comment groups, inline flags
other than `m` and `s`, case-insensitive matching (RE2 folds `k` with the Kelvin sign), `\\s`
and `\\S` (RE2's leaves out `\\v`), `\\Z`, `\\u`/`\\U`/`\\N` escapes, `{,n}` (text to RE2), counts
above 1000, POSIX classes and nested sets. `\\d`, `\\w` and `\\b` are ASCII, as in RE2. The
accepted subset is checked against Go's own `regexp` (tests/unit/test_pattern_re2.py).
"""

from __future__ import annotations

import importlib
import re
import warnings
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
    # InfluxQL's regex literal: `\/` stands for a slash, every other escape stays as written.
    source = text[1:-1].replace("\\/", "/")
    if not source:
        raise ValueError('an empty regex "//" matches everything: write "*" for that')
    try:
        with warnings.catch_warnings():
            # Of what it may read as nested sets one day (`[[`, `--`, `&&`…): refused below.
            warnings.simplefilter("ignore", FutureWarning)
            regex = re.compile(source, re.ASCII)
    except re.error as exc:
        raise ValueError(f"regex {text}: {exc}") from None
    problem = _textual_difference(source) or _parsed_difference(source)
    if problem:
        raise ValueError(
            f"regex {text}: {problem}, which InfluxDB's RE2 and Python's re read differently "
            "(or one of them not at all)"
        )
    return MeasurementPattern(text, regex)


# What only the text shows (the parsed form of `x{,2}` and `x{0,2}` is the same, say).
_ESCAPES = {
    "u": "\\u escapes",
    "U": "\\U escapes",
    "N": "\\N{...} escapes",
    "Z": "\\Z (RE2 reads only \\z; write $)",
    "s": "\\s (RE2's leaves out \\v: write the characters, [ \\t])",
    "S": "\\S (RE2's takes \\v: write the characters, [^ \\t])",
}
_NOT_IN_CLASS = {"b": "\\b in a class (a backspace to Python, refused by RE2)"}
_POSIX = re.compile(r"\[:\^?[a-z]+:\]")
_UPTO = re.compile(r"\{,[0-9]*\}")
_REPEAT = re.compile(r"\{([0-9]+)(?:,([0-9]*))?\}")
_GROUP = re.compile(r"\(\?([a-zA-Z-]*)([:)]|.?)")
_MAX_REPEAT = 1000  # RE2's limit on a counted repeat


def _textual_difference(source: str) -> str | None:
    at = 0
    while at < len(source):
        char = source[at]
        if char == "\\":
            escaped = source[at + 1 : at + 2]
            if escaped in _ESCAPES:
                return _ESCAPES[escaped]
            at += 2
        elif char == "[":
            at, problem = _class(source, at)
            if problem:
                return problem
        elif problem := _outside(source, at):
            return problem
        else:
            at += 1
    return None


def _class(source: str, at: int) -> tuple[int, str | None]:
    """Read the character class opening at `at` (well formed: Python compiled it): where it
    ends, and what in it the two read differently."""
    at += 1
    at += source.startswith("^", at)
    if source.startswith("[", at):
        # `[[:alpha:]]` is a POSIX class to RE2; Python warns it may read `[[` as a nested set.
        return at, "a [ first in a set (RE2's POSIX class, a nested set to Python one day)"
    at += source.startswith("]", at)  # a `]` first is a character in both
    while at < len(source) and source[at] != "]":
        if source[at] in "-&~|" and source.startswith(source[at] * 2, at):
            return at, f"{source[at] * 2} in a set (a set operation to Python one day)"
        if source[at] == "\\":
            escaped = source[at + 1 : at + 2]
            if escaped in _ESCAPES:
                return at, _ESCAPES[escaped]
            if escaped in _NOT_IN_CLASS:
                return at, _NOT_IN_CLASS[escaped]
            at += 2
        elif _POSIX.match(source, at):
            return at, "a POSIX class such as [:alpha:] (Python reads its characters)"
        else:
            at += 1
    return at + 1, None


def _outside(source: str, at: int) -> str | None:
    if _UPTO.match(source, at):
        return "{,n} (RE2 reads it as text; write {0,n})"
    repeat = _REPEAT.match(source, at)
    if repeat and any(int(n) > _MAX_REPEAT for n in repeat.groups() if n):
        return f"a repeat count above {_MAX_REPEAT}"
    group = _GROUP.match(source, at)
    if group and group.group(2) in ":)":
        flags = set(group.group(1)) - {"-"}
        if "i" in flags:
            return "case-insensitive matching (RE2 folds K with the Kelvin sign; write [Kk])"
        if flags - {"m", "s"}:
            return "an inline flag other than m or s"
    elif group and group.group(1) == "" and group.group(2) == "#":
        return "a comment group"
    return None


def _parsed_difference(source: str) -> str | None:
    # `re._parser` (3.11+) has no stubs; it is the parser `re.compile` itself uses.
    parser: Any = importlib.import_module("re._parser")
    found = _walk(parser.parse(source, 0), set())
    return next(iter(found.values()), None)


def _walk(node: Any, seen: set[int], found: dict[str, str] | None = None) -> dict[str, str]:
    found = {} if found is None else found
    for op, value in node:
        name = str(op)
        if name in _REFUSED_OPS:
            found.setdefault(name, _REFUSED_OPS[name])
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
