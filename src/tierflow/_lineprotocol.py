"""Line protocol from Arrow record batches, vectorised.

The official client's `Point` encodes ~170k points/s per core and a Python f-string loop ~1.4M/s;
here every column is escaped, formatted and joined by Arrow compute kernels, and the body is
taken straight from the result's data buffer (each line ends in a newline), so no Python object
is made per point.

Escaping follows the line-protocol rules exactly: in measurements, commas and spaces; in tag keys,
tag values and field keys, commas, equals signs and spaces; in string field values, double quotes
and backslashes. A string field value may hold newlines and carriage returns as they are (the
server's parser reads a quoted value past them); names and tag values may not (nothing can escape
one there): they are refused, naming the column and the first point that holds one. Null tags are
left out of their line; null fields too; a line whose fields are all null is dropped, and counted.
A float line protocol cannot spell (NaN; ±inf for 1.x and 2.x, while 3.x reads an overflowing
exponent as infinity, so `V3` writes ±inf) is refused, naming the field and point: left out, the
value would be lost silently.

Two servers read backslashes in names and tag values differently, so the encoder has two
flavours (`encode_batch(flavour=…)`, chosen by the dest's dialect, `Dialect.line_protocol`):

- `V1`, InfluxDB 1.x and 2.x (Go's `models/points.go`): only `\\,` `\\=` `\\ ` (and `\\"` in
  measurements and field keys) are unescaped; any other backslash is kept as it is, so a
  backslash is written as it is, and one that the server would read as an escape (at the end,
  or before one of those characters) is refused.
- `V3`, InfluxDB 3.x (the Rust `influxdb_line_protocol` crate): `\\\\` is one backslash too, and
  a name or tag value may not end in a backslash; so every backslash is doubled (`a\\\\b` would
  otherwise be stored as `a\\b`), and only a trailing one is refused. Its parser also reads a
  tab as whitespace, as it reads a space, and no escape spells one (it skips a line's leading
  tabs, so a measurement starting with a tab would be stored without it, or read as a comment
  line and dropped): a tab in a name or tag value is refused.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from tierflow._errors import LineProtocolError

__all__ = [
    "V1",
    "V3",
    "Encoded",
    "LineProtocolError",
    "Piece",
    "check_tag_values",
    "encode_batch",
    "escape_key",
    "escape_measurement",
    "ns_isoformat",
    "point_ns",
]

T = TypeVar("T")

#: The line-protocol flavours (see the module's docstring): how a server reads backslashes.
V1 = "v1"
V3 = "v3"


@dataclass(frozen=True, slots=True)
class Piece:
    """Whole lines of an encoded batch, as one body, and the batch row each line came from."""

    body: bytes
    rows: pa.Array


@dataclass(frozen=True, slots=True)
class Encoded:
    """An encoded batch: the body (newline-terminated lines) and how many points it holds.

    A line ends at a newline, but not every newline ends a line: a string field value may hold
    one. So `split` cuts at the recorded line ends, never by looking for newlines."""

    body: bytes
    points: int
    dropped: int
    #: The batch row of each line, in line order.
    rows: pa.Array = field(repr=False)
    #: Where each line ends in `body` (exclusive byte offsets, ascending).
    ends: Sequence[int] = field(repr=False)

    def split(self, limit: int) -> Iterator[Piece]:
        """Bodies of at most `limit` bytes, each of whole lines, in order."""
        start = line = 0
        while start < len(self.body):
            stop_line = bisect_right(self.ends, start + limit, lo=line)
            if stop_line == line:
                raise LineProtocolError(
                    f"one line of line protocol is {self.ends[line] - start} bytes, longer than "
                    f"the {limit} a body may be",
                    row=self.rows[line].as_py(),
                )
            end = self.ends[stop_line - 1]
            yield Piece(self.body[start:end], self.rows.slice(line, stop_line - line))
            start, line = end, stop_line


# A backslash escapes the next byte in line protocol, and the server unescapes it before a few
# characters only: `\,` `\=` `\ ` in tag keys and values, and those and `\"` in measurements and
# field keys (InfluxDB's `pkg/escape`; seen: a measurement `\=` was stored as `=`, a field key
# `\"` as `"`). So a backslash at the end of a name, or right before one of those characters,
# can never be read back as written. Such names are refused rather than silently changed.
_STRANDED_IN_TAG = re.compile(r"\\([ ,=]|$)")
_STRANDED_IN_NAME = re.compile(r'\\([ ,="]|$)')
# InfluxDB 3 reads `\\` as one backslash, so any backslash can be written doubled, but a name or
# tag value ending in one is refused (`influxdb_line_protocol`, "may not end with a backslash").
_TRAILING = re.compile(r"\\$")


def escape_measurement(name: str, *, flavour: str = V1) -> str:
    """The measurement as line protocol spells it; refused if it cannot be read back as written."""
    _no_newline(name, "measurement")
    if flavour == V3:
        _no_tab(name, "measurement")
        if name.endswith("\\"):
            raise LineProtocolError(_trailing("measurement", name))
        name = name.replace("\\", "\\\\")
    elif _STRANDED_IN_NAME.search(name):
        raise LineProtocolError(_stranded("measurement", name))
    if name.startswith("#"):
        # A line that starts with '#' is a comment, and no escape spells the '#'.
        raise LineProtocolError(
            f"line protocol cannot carry a measurement starting with '#': {name[:40]!r}"
        )
    return name.replace(",", "\\,").replace(" ", "\\ ")


def escape_key(name: str, *, field: bool = False, flavour: str = V1) -> str:
    """A tag key, or a field key with `field` (tag values go through `_tag_part`)."""
    _no_newline(name, "key", column=name)
    what = "field key" if field else "key"
    if flavour == V3:
        _no_tab(name, what, column=name)
        if name.endswith("\\"):
            raise LineProtocolError(_trailing(what, name), column=name)
        name = name.replace("\\", "\\\\")
    elif (_STRANDED_IN_NAME if field else _STRANDED_IN_TAG).search(name):
        raise LineProtocolError(_stranded(what, name), column=name)
    return name.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def check_tag_values(key: str, values: pa.Array, *, flavour: str = V1) -> None:
    """Raise LineProtocolError if some value of tag `key` cannot be written back through
    line protocol of `flavour` (a newline; in V1 a backslash the parser would read as an
    escape, in V3 a trailing one). Cheap when no value holds a backslash or a line break: only
    then are the distinct values checked, as the encoder checks them."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary
    text = pc.cast(values, pa.string())
    if pc.any(pc.match_substring_regex(text, r"[\\\r\n\t]")).as_py():
        _tag_part(key, pc.unique(text), flavour)


def _no_tab(text: str, what: str, *, column: str | None = None) -> None:
    # influxdb_line_protocol's is_whitespace_boundary_char: ' ', '\t', '\n'; its escapes are
    # `\,` `\=` `\ ` `\\` only, and trim_leading skips a line's leading tabs.
    if "\t" in text:
        raise LineProtocolError(
            f"line protocol cannot carry a tab in a {what}: {text[:40]!r} (InfluxDB 3 reads a "
            "tab as whitespace and no escape spells one)",
            column=column,
        )


def _trailing(what: str, text: str) -> str:
    return (
        f"line protocol cannot carry the {what} {text[:40]!r}: InfluxDB 3 refuses a name or tag "
        "value that ends in a backslash"
    )


def _stranded(what: str, text: str) -> str:
    return (
        f"line protocol cannot carry the {what} {text[:40]!r}: a backslash at its end or before "
        "a character it escapes (space, comma, equals sign; in measurements and field keys also "
        "a double quote) cannot be read back as written"
    )


def _no_newline(text: str, what: str, *, column: str | None = None) -> None:
    if "\n" in text or "\r" in text:
        raise LineProtocolError(
            f"line protocol cannot carry a newline in a {what}: {text[:40]!r}", column=column
        )


def _tag_part(key: str, values: pa.Array, flavour: str = V1) -> pa.Array:
    """`,key=value` per row, or "" where the tag is absent. Tags repeat a lot, so the escaping is
    done once per distinct value (on the dictionary) and spread to the rows with `take`."""
    escaped = _named(key, values, lambda: escape_key(key, flavour=flavour))
    if not pa.types.is_dictionary(values.type):
        values = pc.dictionary_encode(values)
    distinct = pc.cast(values.dictionary, pa.string())
    newline = pc.match_substring_regex(distinct, "[\r\n]")
    if pc.any(newline).as_py():
        raise LineProtocolError(
            f"line protocol cannot carry a newline in a value of tag {key!r}",
            column=key,
            row=_first_row(values, newline),
        )
    if flavour == V3:
        tab = pc.match_substring(distinct, "\t")
        if pc.any(tab).as_py():
            raise LineProtocolError(
                f"line protocol cannot carry a tab in a value of tag {key!r} (InfluxDB 3 reads a "
                "tab as whitespace and no escape spells one)",
                column=key,
                row=_first_row(values, tab),
            )
    refused = _TRAILING if flavour == V3 else _STRANDED_IN_TAG
    stranded = pc.match_substring_regex(distinct, refused.pattern)
    if pc.any(stranded).as_py():
        bad = pc.filter(distinct, stranded)[0].as_py()
        message = _trailing if flavour == V3 else _stranded
        raise LineProtocolError(
            message(f"value of tag {key!r}", bad), column=key, row=_first_row(values, stranded)
        )
    for char in ("\\", ",", "=", " ") if flavour == V3 else (",", "=", " "):
        distinct = pc.replace_substring(distinct, char, "\\" + char)
    parts = pc.binary_join_element_wise("," + escaped, distinct, "=")
    # An empty tag value is not allowed: it is left out, as InfluxDB itself does.
    parts = pc.if_else(pc.equal(distinct, ""), "", parts)
    return pc.fill_null(pc.take(parts, values.indices), "")


def _first_row(values: pa.DictionaryArray, bad: pa.Array) -> int:
    """The first row whose dictionary entry is marked in `bad`."""
    rows = pc.fill_null(pc.take(bad, values.indices), False)
    return int(pc.index(rows, True).as_py())


def _field_text(values: pa.Array, flavour: str = V1) -> pa.Array:
    """Each value as line protocol writes it (null stays null). A float line protocol cannot
    spell is refused, naming the first row that holds one: NaN anywhere, ±inf for 1.x and 2.x
    (their parsers refuse them; they reach tierflow only from a 3.x source). Leaving the value
    out of its point would lose it silently."""
    kind = values.type
    if pa.types.is_floating(kind):
        text = pc.cast(values, pa.string())
        if flavour == V3:
            # 3.x parses a float with Rust's `str::parse::<f64>`, which reads an exponent
            # beyond the largest double as infinity (influxdb_line_protocol's field_float_value;
            # nothing refuses it after), so 3.x holds ±inf and they are written back as it
            # reads them. NaN has no spelling there either.
            text = pc.replace_substring(text, "inf", "1e999")
            unspelled = pc.is_nan(values)
            what = "NaN"
        else:
            unspelled = pc.invert(pc.is_finite(values))
            what = "NaN or an infinity (InfluxDB 1.x and 2.x store neither)"
        unspelled = pc.fill_null(unspelled, False)
        if pc.any(unspelled).as_py():
            raise LineProtocolError(
                f"line protocol cannot carry {what}",
                row=int(pc.index(unspelled, True).as_py()),
            )
        return text
    if pa.types.is_signed_integer(kind):
        return pc.binary_join_element_wise(pc.cast(values, pa.string()), "i", "")
    if pa.types.is_unsigned_integer(kind):
        return pc.binary_join_element_wise(pc.cast(values, pa.string()), "u", "")
    if pa.types.is_boolean(kind):
        return pc.if_else(values, "true", "false")
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        # Only `\\` and `\"` are escapes inside a quoted value (1.x models/points.go,
        # unescapeStringField). Newlines and carriage returns are written as they are: the
        # server's scanLine ends a line only at a newline outside double quotes, and stores them
        # (seen on 1.6.7, and checked by the round-trip tests).
        text = pc.replace_substring(pc.cast(values, pa.string()), "\\", "\\\\")
        text = pc.replace_substring(text, '"', '\\"')
        return pc.binary_join_element_wise('"', text, '"', "")
    if pa.types.is_dictionary(kind):
        return _field_text(pc.cast(values, kind.value_type), flavour)
    raise LineProtocolError(f"no line-protocol type for Arrow type {kind}")


def encode_batch(
    measurement: str,
    batch: pa.RecordBatch,
    *,
    tags: Sequence[str],
    fields: Sequence[str],
    time: str = "time",
    keys: Mapping[str, str] | None = None,
    flavour: str = V1,
) -> Encoded:
    """Encode `batch` (a `time` column of timestamps or int64 nanoseconds, string tag columns,
    typed field columns) as line protocol with nanosecond timestamps, names escaped as the
    `flavour`'s server reads them (`V1`: 1.x and 2.x; `V3`: 3.x). A column is written under its
    name, or under `keys[name]` (several columns may carry one field key when each row has a
    value in at most one of them)."""
    keys = keys or {}
    if batch.num_rows == 0:
        return Encoded(b"", 0, 0, pa.array([], pa.int64()), ())
    # Each tag and field becomes ",key=value", or "" where its value is null; joining those
    # with no separator leaves absent ones out. (pyarrow 26's null_handling="skip" drops whole
    # rows whose parts are all null, so it is not used.)
    tag_set = _concat(
        [_tag_part(keys.get(tag, tag), batch.column(tag), flavour) for tag in sorted(tags)]
    )
    measured = escape_measurement(measurement, flavour=flavour)
    key = measured if tag_set is None else pc.binary_join_element_wise(measured, tag_set, "")
    field_set = _concat(
        [_field_part(keys.get(name, name), batch.column(name), flavour) for name in fields]
    )
    if field_set is None:
        raise LineProtocolError("a point needs at least one field")
    field_set = pc.utf8_slice_codeunits(field_set, 1)  # the leading comma
    stamps = batch.column(time)
    if pa.types.is_timestamp(stamps.type):
        stamps = pc.cast(pc.cast(stamps, pa.timestamp("ns")), pa.int64())
    lines = pc.binary_join_element_wise(key, field_set, pc.cast(stamps, pa.string()), " ")
    writable = pc.and_(pc.is_valid(lines), pc.not_equal(field_set, ""))
    writable = pc.fill_null(writable, False)
    lines = pc.binary_join_element_wise(pc.filter(lines, writable), "\n", "")
    body, ends = _body(lines)
    rows = pc.cast(pc.indices_nonzero(writable), pa.int64())
    return Encoded(body, len(lines), batch.num_rows - len(lines), rows, ends)


def _field_part(name: str, values: pa.Array, flavour: str = V1) -> pa.Array:
    return _named(
        name,
        values,
        lambda: _prefixed(
            ",", escape_key(name, field=True, flavour=flavour), _field_text(values, flavour)
        ),
    )


def _named(column: str, values: pa.Array, make: Callable[[], T]) -> T:
    """`make()`, its refusal pinned on `column` and the first row that holds a value there."""
    try:
        return make()
    except LineProtocolError as exc:
        exc.column = column
        if not exc.pinned:  # the value that cannot be written is not known: the first one
            exc.row = max(0, int(pc.index(pc.is_valid(values), True).as_py()))
        raise


def point_ns(batch: pa.RecordBatch, row: int, time: str = "time") -> int:
    """The time of one row of `batch`, in nanoseconds since the epoch."""
    stamp = batch.column(time)[row]
    if isinstance(stamp, pa.TimestampScalar):
        stamp = pc.cast(pc.cast(stamp, pa.timestamp("ns")), pa.int64())
    return int(stamp.as_py())


def ns_isoformat(ns: int) -> str:
    """RFC 3339 in UTC with every nanosecond digit there is (datetime stops at microseconds)."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{nanos:09d}Z" if nanos else f"{text}Z"


def _prefixed(separator: str, key: str, values: pa.Array) -> pa.Array:
    """`separator + key + "=" + value`, or "" where the value is null."""
    joined = pc.binary_join_element_wise(separator + key, values, "=")
    return pc.fill_null(joined, "")


def _concat(parts: Sequence[pa.Array]) -> pa.Array | None:
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, "")


def _body(lines: pa.Array) -> tuple[bytes, Sequence[int]]:
    """The concatenated strings of a string array, straight from its data buffer, and where
    each string ends in it."""
    if len(lines) == 0:
        return b"", ()
    _, offsets, data = lines.buffers()
    if offsets is None or data is None:
        return b"", ()
    bounds = memoryview(offsets).cast("i")[lines.offset : lines.offset + len(lines) + 1]
    first, last = bounds[0], bounds[-1]
    body = memoryview(data)[first:last].tobytes()
    if first == 0:
        return body, bounds[1:]
    return body, [end - first for end in bounds[1:]]
