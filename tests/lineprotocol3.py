"""Line protocol as InfluxDB 3.x parses it: a port of `influxdb_line_protocol` (the Rust crate in
`influxdata/influxdb`, `core/influxdb_line_protocol/src/lib.rs`), for the 3.x stand-in.

The port follows the crate's grammar rule for rule, so the stand-in refuses what 3.x refuses and
keeps what 3.x keeps: lines are split like Go's `scanLine` (a newline inside a quoted string
does not end a line), leading whitespace and `#` comment lines are skipped, names unescape
`\\,` `\\=` `\\ ` `\\\\` (the measurement `\\,` `\\ ` `\\\\`) and keep any other backslash with the
character after it, a name that ends in a backslash is refused, string values unescape only
`\\"` and `\\\\`, integers are `-?\\d+i` (i64), unsigned `\\d+u` (u64), floats
`-?\\d+[.\\d+][e[+-]\\d+]` (an overflowing exponent reads as infinity, as Rust's `f64` parse
does), booleans `t T true True TRUE f F false False FALSE`, the timestamp `-?\\d+` (optional).

`tests/integration/test_influx3_standin.py` checks it against the real influxd 1.x on the shapes
both accept, and names where the two grammars differ.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = [
    "FIELD_KINDS",
    "LineError",
    "ParsedLine",
    "UInt",
    "display",
    "parse_lines",
    "raw_lines",
    "split_lines",
]

I64 = (-(2**63), 2**63 - 1)
U64_MAX = 2**64 - 1
STRING_LIMIT = 65_536
#: The field kinds, as 3.x names its column types (`iox::column_type::field::<kind>`).
FIELD_KINDS = ("float", "integer", "uinteger", "string", "boolean")
_BOOLEANS = (
    ("true", True),
    ("True", True),
    ("TRUE", True),
    ("t", True),
    ("T", True),
    ("false", False),
    ("False", False),
    ("FALSE", False),
    ("f", False),
    ("F", False),
)
_BOUNDARY = " \t\n"
_DIGITS = re.compile("[0-9]*")
_RUNS: dict[str, re.Pattern[str]] = {}


class UInt(int):
    """An unsigned field value (`1u`): an int that remembers it was written as uint64."""


@dataclass(frozen=True)
class ParsedLine:
    measurement: str
    #: Tags in the order the line gives them.
    tags: tuple[tuple[str, str], ...]
    #: (field key, kind, value) in the order the line gives them.
    fields: tuple[tuple[str, str, Any], ...]
    timestamp: int | None
    line: str


class LineError(Exception):
    """A line 3.x would refuse; the message is the crate's, `line` the line."""

    line: str = ""


class _NoMatch(Exception):
    pass


_SPECIAL = re.compile(r'[\\ =,"\n]')


def split_lines(body: str) -> list[str]:
    """The crate's `split_lines` (Go's `scanLine`): a newline ends a line unless it is escaped
    or inside a quoted string value. (Only the characters that change its state are visited.)"""
    if "\\" not in body and '"' not in body:
        return body.split("\n")
    lines: list[str] = []
    start = 0
    quoted = fields = False
    equals = commas = 0
    skip_to = -1
    for match in _SPECIAL.finditer(body):
        index = match.start()
        if index < skip_to:
            continue
        c = body[index]
        if c == "\\":
            skip_to = index + 2
            continue
        if c == " ":
            fields = True
            continue
        if fields:
            if not quoted and c == "=":
                equals += 1
                continue
            if not quoted and c == ",":
                commas += 1
                continue
            if c == '"' and equals > commas:
                quoted = not quoted
                continue
        if c == "\n" and not quoted:
            lines.append(body[start:index])
            start = index + 1
            quoted = fields = False
            equals = commas = 0
    lines.append(body[start:])
    return lines


def raw_lines(body: str) -> list[str]:
    """Rust's `str::lines` (a newline ends a line, a `\\r` before it is dropped, no empty last
    line): 3.x names a line it cannot parse by the n-th of these, whatever the n-th parsed line
    was (`v1_parse_lines_and_catalog_updates` walks both in step)."""
    lines = body.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _escape(value: str, specials: str) -> str:
    for char in specials:
        value = value.replace(char, "\\" + char)
    return value


def _rust_float(value: float) -> str:
    """Rust's `{}` of an f64: the shortest digits that read back, never an exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = format(Decimal(repr(value)), "f")
    return text.removesuffix(".0") if "." in text and text.endswith(".0") else text


def display(line: ParsedLine) -> str:
    """The crate's `Display` of a parsed line (which 3.x puts in a refused line's
    `original_line`): names escaped again, floats as Rust prints them, strings without their
    quotes (only `"` escaped), booleans `true`/`false`."""
    text = _escape(line.measurement, ", ")
    text += "".join(f",{_escape(k, ',= ')}={_escape(v, ',= ')}" for k, v in line.tags)
    values = []
    for key, kind, value in line.fields:
        if kind == "float":
            shown = _rust_float(value)
        elif kind == "integer":
            shown = f"{value}i"
        elif kind == "uinteger":
            shown = f"{value}u"
        elif kind == "string":
            shown = _escape(value, '"')
        else:
            shown = "true" if value else "false"
        values.append(f"{_escape(key, ',= ')}={shown}")
    if values:
        text += " " + ",".join(values)
    if line.timestamp is not None:
        text += f" {line.timestamp}"
    return text


def _trim_leading(text: str) -> str:
    while True:
        text = text.lstrip(_BOUNDARY)
        if text.startswith("#"):
            cut = text.find("\n")
            text = "" if cut < 0 else text[cut:]
        else:
            return text


def parse_lines(body: str) -> list[ParsedLine | LineError]:
    """Every non-blank, non-comment line of `body`, parsed or refused (with the crate's
    message), in order."""
    out: list[ParsedLine | LineError] = []
    for raw in split_lines(body):
        text = _trim_leading(raw)
        if not text:
            continue
        fast = _fast(text)
        if fast is not None:
            out.append(fast)
            continue
        try:
            out.append(_Parser(text).line())
        except LineError as exc:
            exc.line = text
            out.append(exc)
    return out


# A line with no escape, no quote and single spaces: split, not scanned. What this cannot read
# exactly as the grammar does (any escape or quote, a value it does not know, an integer out of
# range) goes to `_Parser`, which also words the errors.
_SIMPLE = re.compile(
    r"([^ ,\t\n\\\"\0]+)((?:,[^ ,=\t\n\\\"]+=[^ ,\t\n\\\"]+)*)"
    r" ([^ ,=\t\n\\\"]+=[^ ,\t\n\\\"=]+(?:,[^ ,=\t\n\\\"]+=[^ ,\t\n\\\"=]+)*)"
    r"(?: (-?[0-9]+))?"
)
_FLOAT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"-?[0-9]+i")
_UNSIGNED = re.compile(r"[0-9]+u")
_BOOLEAN = dict(_BOOLEANS)


def _fast(text: str) -> ParsedLine | None:
    match = _SIMPLE.fullmatch(text)
    if match is None:
        return None
    measurement, tag_text, field_text, stamp = match.groups()
    tags = tuple(
        (key, value) for key, _, value in (t.partition("=") for t in tag_text.split(",")[1:])
    )
    fields: list[tuple[str, str, Any]] = []
    for pair in field_text.split(","):
        key, _, token = pair.partition("=")
        if token in _BOOLEAN:
            fields.append((key, "boolean", _BOOLEAN[token]))
        elif _FLOAT.fullmatch(token):
            fields.append((key, "float", float(token)))
        elif _INTEGER.fullmatch(token) and I64[0] <= int(token[:-1]) <= I64[1]:
            fields.append((key, "integer", int(token[:-1])))
        elif _UNSIGNED.fullmatch(token) and int(token[:-1]) <= U64_MAX:
            fields.append((key, "uinteger", UInt(int(token[:-1]))))
        else:
            return None
    timestamp = None
    if stamp is not None:
        timestamp = int(stamp)
        if not I64[0] <= timestamp <= I64[1]:
            return None
    return ParsedLine(measurement, tags, tuple(fields), timestamp, text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def line(self) -> ParsedLine:
        measurement = self._measurement()
        tags = self._tags()
        self._spaces()
        fields = self._fields()
        timestamp = self._timestamp()
        if self.i < len(self.s):
            rest = self.s[self.i :]
            shown = rest[:10] + "..." if len(rest) > 10 else rest
            raise LineError(f"Could not parse entire line. Found trailing content: `{shown}`")
        return ParsedLine(measurement, tags, fields, timestamp, self.s)

    # -- names -----------------------------------------------------------------------------------

    def _escaped(self, stops: str, escapable: str) -> str:
        """`escape_or_fallback`: runs of normal characters (none of `stops`, no backslash),
        `\\x` for x in `escapable` → x, any other backslash kept with the character after it."""
        s, start = self.s, self.i
        parts: list[str] = []
        normal = _RUNS.get(stops) or _RUNS.setdefault(
            stops, re.compile("[^" + re.escape(stops + "\\") + "]*")
        )
        while True:
            run = normal.match(s, self.i)
            j = run.end() if run else self.i
            if j > self.i:
                parts.append(s[self.i : j])
                self.i = j
                continue
            if self.i < len(s) and s[self.i] == "\\":
                after = self.i + 1
                if after < len(s) and s[after] in escapable:
                    parts.append(s[after])
                    self.i = after + 1
                    continue
                parts.append("\\")
                self.i = after
                if after < len(s):
                    parts.append(s[after])
                    self.i = after + 1
                    continue
                break
            if self.i == start:
                raise _NoMatch
            break
        value = "".join(parts)
        if value.endswith("\\"):
            raise LineError(
                "Measurements, tag keys and values, and field keys may not end with a backslash"
            )
        if len(value.encode()) > STRING_LIMIT:
            raise LineError("String is greater than 64KB")
        return value

    def _measurement(self) -> str:
        try:
            return self._escaped(_BOUNDARY + "\0,", ", \\")
        except _NoMatch:
            raise LineError("Invalid measurement was provided") from None

    def _tags(self) -> tuple[tuple[str, str], ...]:
        if not self.s.startswith(",", self.i):
            return ()
        self.i += 1
        tags: list[tuple[str, str]] = []
        while True:
            try:
                key = self._escaped(_BOUNDARY + "=", "\\,= ")
            except _NoMatch:
                raise LineError("Tag set malformed") from None
            if not self.s.startswith("=", self.i):
                rest = self.s[self.i :]
                shown = rest[:10] + "..." if len(rest) > 10 else rest
                raise LineError(f"Tag set malformed: could not find equals sign in `{shown}`")
            self.i += 1
            try:
                value = self._escaped(_BOUNDARY + ",", "\\,= ")
            except _NoMatch:
                raise LineError("Tag set malformed") from None
            tags.append((key, value))
            if not self.s.startswith(",", self.i):
                return tuple(tags)
            self.i += 1

    def _spaces(self) -> None:
        j = self.i
        while j < len(self.s) and self.s[j] == " ":
            j += 1
        if j == self.i:
            got = "nothing" if self.i >= len(self.s) else f"`{self.s[self.i : self.i + 10]}`"
            raise LineError(f"Expected at least one space character, got {got}")
        self.i = j

    # -- fields ----------------------------------------------------------------------------------

    def _fields(self) -> tuple[tuple[str, str, Any], ...]:
        fields: list[tuple[str, str, Any]] = []
        while True:
            mark = self.i
            try:
                key = self._escaped(_BOUNDARY + "=", "\\,= ")
            except _NoMatch:
                key = None
            if key is None or not self.s.startswith("=", self.i):
                if not fields:
                    raise LineError("No fields were provided")
                # The list ends before a separator it cannot continue from.
                self.i = mark - 1
                return tuple(fields)
            self.i += 1
            value = self._value()
            if value is None:
                if not fields:
                    raise LineError("No fields were provided")
                self.i = mark - 1
                return tuple(fields)
            fields.append((key, *value))
            if not self.s.startswith(",", self.i):
                return tuple(fields)
            self.i += 1

    def _digits(self, at: int) -> int:
        match = _DIGITS.match(self.s, at)
        return match.end() if match else at

    def _signed(self, at: int) -> int:
        """End of `-?\\d+` from `at`, or `at` if there is none."""
        j = at + 1 if self.s.startswith("-", at) else at
        end = self._digits(j)
        return end if end > j else at

    def _exponent(self, at: int) -> int:
        """End of `\\d+[eE][+-]?\\d+` from `at`, or `at`."""
        digits = self._digits(at)
        if digits == at or not self.s.startswith(("e", "E"), digits):
            return at
        j = digits + 1
        if self.s.startswith(("-", "+"), j):
            j += 1
        end = self._digits(j)
        return end if end > j else at

    def _value(self) -> tuple[str, Any] | None:
        s, i = self.s, self.i
        signed = self._signed(i)
        if signed > i and s.startswith("i", signed):
            text = s[i:signed]
            number = int(text)
            if not I64[0] <= number <= I64[1]:
                raise LineError(f"Unable to parse integer value `{text}`")
            self.i = signed + 1
            return "integer", number
        digits = self._digits(i)
        if digits > i and s.startswith("u", digits):
            text = s[i:digits]
            if int(text) > U64_MAX:
                raise LineError(f"Unable to parse unsigned integer value `{text}`")
            self.i = digits + 1
            return "uinteger", UInt(int(text))
        end = self._float(i)
        if end > i:
            self.i = end
            return "float", float(s[i:end])
        if s.startswith('"', i):
            string = self._string()
            if string is not None:
                return string
        for text, flag in _BOOLEANS:
            if s.startswith(text, i):
                self.i = i + len(text)
                return "boolean", flag
        return None

    def _float(self, i: int) -> int:
        s = self.s
        signed = self._signed(i)
        if signed > i and s.startswith(".", signed):
            exponent = self._exponent(signed + 1)
            if exponent > signed + 1:
                return exponent
        start = i + 1 if s.startswith("-", i) else i
        exponent = self._exponent(start)
        if exponent > start:
            return exponent
        if signed > i and s.startswith(".", signed):
            digits = self._digits(signed + 1)
            if digits > signed + 1:
                return digits
        return signed

    def _string(self) -> tuple[str, Any] | None:
        s = self.s
        j = self.i + 1
        parts: list[str] = []
        while j < len(s):
            c = s[j]
            if c == '"':
                value = "".join(parts)
                if len(value.encode()) > STRING_LIMIT:
                    raise LineError("String is greater than 64KB")
                self.i = j + 1
                return "string", value
            if c == "\\" and s.startswith(('\\"', "\\\\"), j):
                parts.append(s[j + 1])
                j += 2
                continue
            parts.append(c)
            j += 1
        return None

    def _timestamp(self) -> int | None:
        j = self.i
        while j < len(self.s) and self.s[j] == " ":
            j += 1
        if j == self.i:
            return None
        end = self._signed(j)
        if end == j:
            return None
        text = self.s[j:end]
        value = int(text)
        if not I64[0] <= value <= I64[1]:
            raise LineError(f"Unable to parse timestamp value `{text}`")
        k = end
        while k < len(self.s) and self.s[k] == " ":
            k += 1
        self.i = k
        return value
