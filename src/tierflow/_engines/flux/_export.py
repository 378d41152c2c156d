"""Bulk reads from InfluxDB 2.x: Flux results pivoted to one row per point, parsed by Arrow.

The 1.x export path reads `/query?chunked=true` CSV; this is its 2.x twin, for archive jobs
reading a 2.x tier and relays out of one. A script pivots each series' fields into columns
(`pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")`), so each row is a
point; the server streams the result as annotated CSV and `annotated_batches` cuts it into
blocks of a few MB, each parsed in one Arrow call typed by the block's `#datatype` row. Nothing
is parsed a row at a time in Python and only one block is held at once.

Annotated CSV, as 2.x writes it: a block is annotation rows (`#datatype`, `#group`, `#default`),
a header row, then data rows whose first cell (the annotation column) is empty, and ends at a
blank line; a new block starts whenever the columns change (another tag set, another field set).
Group-key columns (`#group` true) of a pivoted table are its tags; the others, bar the
bookkeeping columns, are its fields. A failure after the response began arrives as a block
whose header is `,error,reference`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from tierflow._archive import Column, FieldType, PointBatch
from tierflow._archive._schema import FIELD, TAG, column_names
from tierflow._engines import Engine
from tierflow._engines._base import bare
from tierflow._engines.flux._engine import FluxEngine
from tierflow._engines.flux._literals import flux_string, flux_time
from tierflow._errors import EngineError, QueryError, TransientEngineError

__all__ = [
    "annotated_batches",
    "count_script",
    "export_flux",
    "export_script",
    "field_counts",
    "is_field_type_conflict",
]

#: Annotated CSV datatypes of field columns, as InfluxDB field types.
FIELD_TYPES = {
    "double": FieldType.FLOAT,
    "long": FieldType.INTEGER,
    "unsignedLong": FieldType.UNSIGNED,
    "boolean": FieldType.BOOLEAN,
    "string": FieldType.STRING,
}
# The annotation column, the table bookkeeping and the series key columns that are not tags.
_NOT_DATA = frozenset({"", "result", "table", "_start", "_stop", "_measurement", "_field"})
_TIME = "_time"
# How Flux says that one column holds two types (a field written as an integer in one shard and
# a float in another): pivoting such a series into one row per point is impossible.
_COLLISION = ("schema collision", "both of type")


def is_field_type_conflict(error: EngineError) -> bool:
    """Whether `error` says a column holds two types, whether it came as an error table inside
    the stream or as the HTTP error of a query that failed before its first row."""
    lowered = str(error).lower()
    return not error.transient and any(marker in lowered for marker in _COLLISION)


def _selection(
    bucket: str, measurement: str, start: datetime, stop: datetime, tags: Mapping[str, str]
) -> str:
    predicate = " and ".join(
        [
            f"r._measurement == {flux_string(measurement)}",
            *(f"r[{flux_string(k)}] == {flux_string(v)}" for k, v in sorted(tags.items())),
        ]
    )
    return (
        f"from(bucket: {flux_string(bucket)})\n"
        f"  |> range(start: {flux_time(start)}, stop: {flux_time(stop)})\n"
        f"  |> filter(fn: (r) => {predicate})\n"
    )


def export_script(
    *,
    bucket: str,
    measurement: str,
    start: datetime,
    stop: datetime,
    tags: Mapping[str, str] | None = None,
    pivot: bool = True,
) -> str:
    """Every point of `measurement` in `[start, stop)`, one row per point: `_time`, the tags,
    one column per field. Without `pivot`, one row per field value (`_field`, `_value`): the
    fallback for a field whose type differs between shards."""
    script = (
        _selection(bucket, measurement, start, stop, tags or {})
        + '  |> drop(columns: ["_start", "_stop", "_measurement"])\n'
    )
    if pivot:
        script += '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
    return script


def count_script(
    *,
    bucket: str,
    measurement: str,
    start: datetime,
    stop: datetime,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Per field, the number of values of `measurement` in `[start, stop)`. Counted per series
    first: a field may have another type in another shard, and grouping tables of different
    `_value` types before aggregating fails."""
    return (
        _selection(bucket, measurement, start, stop, tags or {})
        + "  |> count()\n"
        + '  |> group(columns: ["_field"])\n'
        + "  |> sum()\n"
    )


async def field_counts(engine: Engine, script: str) -> dict[str, int]:
    """Run a `count_script`: field name → values."""
    counts: dict[str, int] = {}
    for series in await engine.query(script):
        names = series.columns
        if "_field" not in names or "_value" not in names:
            continue
        field_at, value_at = names.index("_field"), names.index("_value")
        for row in series.values:
            if row[value_at]:
                counts[str(row[field_at])] = counts.get(str(row[field_at]), 0) + int(row[value_at])
    return counts


async def export_flux(
    engine: Engine,
    *,
    bucket: str,
    measurement: str,
    start: datetime,
    stop: datetime,
    tags: Mapping[str, str] | None = None,
    pivot: bool = True,
) -> AsyncIterator[PointBatch]:
    """Every point of `measurement` in `[start, stop)` as Arrow batches, streamed (see
    `export_script` for `pivot`). A pivot that fails on a field with two types raises an error
    that `is_field_type_conflict` recognises."""
    script = export_script(
        bucket=bucket, measurement=measurement, start=start, stop=stop, tags=tags, pivot=pivot
    )
    async for batch in annotated_batches(bare(engine, FluxEngine).stream(script)):
        yield batch


@dataclass(frozen=True, slots=True)
class _Header:
    names: list[str]
    datatypes: list[str]
    groups: list[bool]
    #: A row's end followed by a blank line: the end of the block (2.x writes CRLF).
    blank: bytes = b"\r\n\r\n"


async def annotated_batches(
    pieces: AsyncIterator[bytes], *, block_bytes: int = 4 << 20
) -> AsyncIterator[PointBatch]:
    """The points of a pivoted annotated CSV stream, a batch per block of about
    `block_bytes`."""
    async for header, rows in _blocks(pieces, block_bytes):
        if "_field" in header.names and "_value" in header.names:
            for one in _parse_unpivoted(header, rows):
                yield one
        elif (batch := _parse(header, rows)) is not None:
            yield batch


async def _blocks(
    pieces: AsyncIterator[bytes], block_bytes: int
) -> AsyncIterator[tuple[_Header, bytes]]:
    """Regroup the stream into (header, rows) pairs: rows are whole data rows of one block,
    at most about `block_bytes` of them at a time."""
    pending = bytearray()
    header: _Header | None = None
    scanned = 0  # how far `pending` has been searched for the end of the block
    async for piece in pieces:
        pending += piece
        while True:
            if header is None:
                found = _read_header(pending)
                if found is None:
                    break  # the annotations or header row are not all here yet
                header, used = found
                del pending[:used]
                scanned = 0
                continue
            end = _block_end(pending, scanned, header.blank)
            if end >= 0:
                if end:
                    yield header, bytes(pending[:end])
                del pending[:end]
                header = None
                continue
            if len(pending) >= block_bytes and (cut := _row_cut(pending)) > 0:
                yield header, bytes(pending[:cut])
                del pending[:cut]
                scanned = 0
                continue
            scanned = max(0, len(pending) - len(header.blank) + 1)
            break
    if header is not None and pending.strip():
        yield header, bytes(pending)
    elif header is None and pending.strip():
        raise TransientEngineError("the query response ends inside a table's annotations")


def _read_header(pending: bytearray) -> tuple[_Header, int] | None:
    """The annotations and header row at the start of `pending`, and the bytes they take; None
    until they are all there. Raises on an error table."""
    position = 0
    while pending.startswith((b"\r\n", b"\n"), position):  # the blank line between blocks
        position = pending.index(b"\n", position) + 1
    annotations: dict[str, list[str]] = {}
    while True:
        end = pending.find(b"\n", position)
        if end < 0:
            return None
        (cells,) = csv.reader([pending[position:end].decode("utf-8").rstrip("\r")])
        position = end + 1
        if cells and cells[0].startswith("#"):
            annotations[cells[0]] = cells
            continue
        blank = b"\r\n\r\n" if pending[end - 1 : end] == b"\r" else b"\n\n"
        break
    if cells[1:3] == ["error", "reference"]:
        end = pending.find(b"\n", position)
        if end < 0:
            return None
        (row,) = csv.reader([pending[position:end].decode("utf-8").rstrip("\r")])
        message = row[1] if len(row) > 1 else "unknown error"
        raise QueryError(f"the query failed on the server: {message}")
    duplicated = sorted({name for name in cells if cells.count(name) > 1} - {""})
    if duplicated:
        raise QueryError(
            f"the result has several columns named {', '.join(map(repr, duplicated))} "
            "(a tag named like a field or like the CSV's own 'result'/'table' columns): "
            "it cannot be read as points"
        )
    datatypes = annotations.get("#datatype", [])
    groups = [cell == "true" for cell in annotations.get("#group", [])]
    if len(datatypes) != len(cells) or len(groups) != len(cells):
        raise TransientEngineError(
            "malformed response from server: a table's annotations do not match its header"
        )
    return _Header(cells, datatypes, groups, blank), position


def _block_end(pending: bytearray, start: int, blank: bytes) -> int:
    """Where the blank line that ends the block begins in `pending` (rows before it), or -1.
    `blank` is a row's line end and the blank line (`\r\n\r\n` or `\n\n`)."""
    half = len(blank) // 2
    if pending.startswith(blank[half:]):
        return 0
    position = start
    while (at := pending.find(blank, position)) >= 0:
        if pending.count(b'"', 0, at) % 2 == 0:  # not inside a quoted value
            return at + half
        position = at + 1
    return -1


def _row_cut(pending: bytearray) -> int:
    """The end of the last whole row in `pending` outside quotes, or 0."""
    cut = len(pending)
    while (cut := pending.rfind(b"\n", 0, cut)) >= 0:
        if pending.count(b'"', 0, cut) % 2 == 0:
            return cut + 1
    return 0


def _tags(header: _Header) -> list[str]:
    """The block's tag columns: its group key, bar the bookkeeping and series-key columns."""
    return [
        name
        for name, grouped in zip(header.names, header.groups, strict=True)
        if grouped and name not in _NOT_DATA and name != _TIME
    ]


def _points(table: pa.Table, tags: list[str], fields: dict[str, str]) -> PointBatch | None:
    """`table`'s rows as points: `time` (int64 ns) from `_time`, the tags, and each field from
    its column (`fields`: field name → column). Tags and fields that are null on every row are
    left out; None if no field is left. A field named like a tag keeps both (see
    `tierflow._archive.column_names`)."""
    data = table.combine_chunks()
    present = [tag for tag in tags if data.column(tag).null_count < data.num_rows]
    arrays: dict[Column, pa.Array] = {Column(TAG, tag): data.column(tag) for tag in present}
    for name, column in fields.items():
        values = data.column(column)
        if values.null_count < data.num_rows:
            arrays[Column(FIELD, name, FieldType.of_arrow(values.type))] = values
    if len(arrays) == len(present):
        return None
    names = column_names(arrays)
    batch = pa.table(
        [data.column(_TIME).cast(pa.int64()), *(arrays[column] for column in names)],
        names=["time", *names.values()],
    ).to_batches()[0]
    keys = {name: column.key for column, name in names.items() if column.key != name}
    return PointBatch(batch, frozenset(names[Column(TAG, tag)] for tag in present), keys)


def _parse(header: _Header, rows: bytes) -> PointBatch | None:
    """One block's rows as a batch: `time` (int64 ns), tags, typed fields."""
    names = header.names
    tags = _tags(header)
    fields: dict[str, FieldType] = {}
    for name, kind in zip(names, header.datatypes, strict=True):
        if name in _NOT_DATA or name == _TIME or name in tags:
            continue
        if kind not in FIELD_TYPES:
            raise EngineError(f"column {name!r} has datatype {kind!r}, which is not a field type")
        fields[name] = FIELD_TYPES[kind]
    if _TIME not in names or not fields:
        return None
    if "time" in tags or "time" in fields:
        raise QueryError("a tag or field named 'time' cannot be archived or relayed as a point")
    column_types: dict[str, pa.DataType] = {_TIME: pa.timestamp("ns", tz="UTC")}
    column_types.update({tag: pa.string() for tag in tags})
    column_types.update({name: kind.arrow_type for name, kind in fields.items()})
    table = _read(rows, names, column_types)
    if table.num_rows == 0:
        return None
    return _points(table, tags, {name: name for name in fields})


def _parse_unpivoted(header: _Header, rows: bytes) -> list[PointBatch]:
    """One block of unpivoted rows (`_time`, tags, `_field`, `_value`) as a batch per field:
    each holds that field's values, typed by the block's `_value` datatype."""
    names = header.names
    kinds = dict(zip(names, header.datatypes, strict=True))
    kind = FIELD_TYPES.get(kinds["_value"])
    if kind is None:
        raise EngineError(f"column '_value' has datatype {kinds['_value']!r}: not a field type")
    tags = _tags(header)
    if "time" in tags:
        raise QueryError("a tag named 'time' cannot be archived or relayed as a point")
    table = _read(
        rows,
        names,
        {
            _TIME: pa.timestamp("ns", tz="UTC"),
            "_field": pa.string(),
            "_value": kind.arrow_type,
            **{tag: pa.string() for tag in tags},
        },
    )
    if kind is FieldType.STRING:
        # Each unpivoted row is a stored value, never a missing one: an empty cell is "" (the
        # CSV reader took it for null).
        table = table.set_column(
            table.schema.get_field_index("_value"),
            "_value",
            pc.fill_null(table.column("_value"), ""),
        )
    batches = []
    field_column = table.column("_field")
    for name in pc.unique(field_column).to_pylist():
        if name is None:
            continue
        chosen = table.filter(pc.equal(field_column, name))
        if (batch := _points(chosen, tags, {name: "_value"})) is not None:
            batches.append(batch)
    return batches


def _read(rows: bytes, names: list[str], column_types: dict[str, pa.DataType]) -> pa.Table:
    """Parse CSV rows (no header) into the columns `column_types` names, typed so."""
    try:
        return pa_csv.read_csv(
            io.BytesIO(rows),
            # Blocks of 1 MiB: Arrow parses them on its own threads.
            read_options=pa_csv.ReadOptions(column_names=names, block_size=1 << 20),
            parse_options=pa_csv.ParseOptions(newlines_in_values=b'"' in rows),
            convert_options=pa_csv.ConvertOptions(
                column_types=column_types,
                include_columns=list(column_types),
                strings_can_be_null=True,
                null_values=[""],
                true_values=["true"],
                false_values=["false"],
            ),
        )
    except (pa.ArrowInvalid, ValueError) as exc:
        raise TransientEngineError(f"malformed response from server: {exc}") from exc
