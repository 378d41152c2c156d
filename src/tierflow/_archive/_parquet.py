"""One window of one measurement as one Parquet file, written and read batch by batch.

Memory stays flat whatever the window's size: batches are cast to the file's schema and written
as soon as a row group's worth (`row_group_rows`) has gathered; nothing else is kept but the
schema and a few counters.

Parquet fixes a file's schema when the file is opened, but a window's schema is known only at
its end: a tag can first appear in its last batch, a field can come as an integer and later as
a float. So the writer writes *segments*: it opens a segment with the columns known so far, and
keeps writing to it while batches fit (a batch that lacks some of its columns fits, with nulls
there). A batch that brings a new column (a new tag, field, or type of a field) closes the
segment and opens the next with the larger schema. At the end a single segment simply becomes
the file; several are copied, row group by row group, into one file of the final schema (where
a field's column may be renamed, `x` becoming `x::integer` once `x` also came as a float). So
the common window is written once, and a window whose schema changed at most twice.

Columns are ordered `time`, then tags, then fields, each sorted by key (and a field's types in
a fixed order), so the same points give the same schema (and byte-identical files) whatever
order their batches came in. Values are never converted to another type.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from tierflow._archive._errors import ArchiveError
from tierflow._archive._schema import (
    FIELD,
    KEY_KEY,
    KIND_KEY,
    TAG,
    TAG_TYPE,
    TIME,
    TIME_TYPE,
    Column,
    FieldType,
    PointBatch,
    TypeConflict,
    cast_column,
    column_names,
)
from tierflow._windows import EPOCH, isoformat

__all__ = [
    "WindowFileWriter",
    "WrittenFile",
    "format_ns",
    "read_file",
    "read_row_count",
    "schema_columns",
    "sha256_of",
]

_HASH_CHUNK = 1 << 20


def format_ns(ns: int) -> str:
    """RFC 3339 in UTC with all nine sub-second digits when there are some."""
    whole = isoformat(EPOCH + timedelta(seconds=ns // 1_000_000_000))
    fraction = ns % 1_000_000_000
    return whole if not fraction else whole.replace("Z", f".{fraction:09d}Z")


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A finished local Parquet file and what the manifest records of it."""

    path: Path
    rows: int
    min_time_ns: int
    max_time_ns: int
    size: int
    sha256: str
    tags: tuple[str, ...]
    fields: Mapping[str, FieldType]
    conflicts: tuple[TypeConflict, ...]
    columns: Mapping[str, Column]


@dataclass(frozen=True, slots=True)
class _Columns:
    """A batch normalised: time as UTC nanosecond timestamps, tags dictionary-encoded, fields in
    their canonical Arrow type, each column known by what it holds."""

    rows: int
    time: pa.Array
    arrays: dict[Column, pa.Array]
    min_ns: int
    max_ns: int


def _normalise(batch: PointBatch, start_ns: int, stop_ns: int) -> _Columns:
    data = batch.data
    names = data.schema.names
    if len(set(names)) != len(names):
        raise ArchiveError(f"a batch names a column twice: {names}")
    if TIME not in names:
        raise ArchiveError(f"a batch has no {TIME!r} column: {names}")
    if TIME in batch.tags:
        raise ArchiveError(f"{TIME!r} cannot be a tag column")
    time = _time_column(data.column(TIME))
    extremes = pc.min_max(time.cast(pa.int64()))
    low, high = extremes["min"].as_py(), extremes["max"].as_py()
    if low < start_ns or high >= stop_ns:
        outside = low if low < start_ns else high
        raise ArchiveError(
            f"a point at {format_ns(outside)} lies outside the window "
            f"[{format_ns(start_ns)}, {format_ns(stop_ns)})"
        )
    arrays: dict[Column, pa.Array] = {}
    for name, values in zip(names, data.columns, strict=True):
        if name == TIME:
            continue
        if name in batch.tags:
            if FieldType.of_arrow(values.type) not in {None, FieldType.STRING}:
                raise ArchiveError(f"tag {name!r} is a {values.type} column, not strings")
            column, target = Column(TAG, batch.key(name)), TAG_TYPE
        else:
            field_type = FieldType.of_arrow(values.type)
            if field_type is None:  # an all-null column says nothing: the field is absent
                continue
            column, target = Column(FIELD, batch.key(name), field_type), field_type.arrow_type
        if column in arrays:
            raise ArchiveError(f"a batch has two columns for {column.kind} {column.key!r}")
        arrays[column] = cast_column(values, target)
    return _Columns(data.num_rows, time, arrays, low, high)


def _time_column(column: pa.Array) -> pa.Array:
    if column.null_count:
        raise ArchiveError(f"{column.null_count} points have no time")
    if pa.types.is_timestamp(column.type) and column.type.tz is None:
        raise ArchiveError("a time column without a time zone is ambiguous; give UTC")
    if not (pa.types.is_timestamp(column.type) or pa.types.is_integer(column.type)):
        raise ArchiveError(f"the time column is {column.type}, not int64 ns or a timestamp")
    try:
        return pc.cast(column, TIME_TYPE)
    except pa.ArrowInvalid as exc:
        raise ArchiveError(f"time values out of range: {exc}") from exc


def _schema(columns: Iterable[Column], metadata: Mapping[str, str]) -> pa.Schema:
    fields = [pa.field(TIME, TIME_TYPE, nullable=False)]
    for column, name in column_names(columns).items():
        kind = {KIND_KEY: column.kind.encode(), KEY_KEY: column.key.encode()}
        arrow_type = TAG_TYPE if column.type is None else column.type.arrow_type
        fields.append(pa.field(name, arrow_type, metadata=kind))
    return pa.schema(fields, metadata=dict(metadata))


def _kind(column: pa.Field) -> bytes | None:
    kind: bytes | None = (column.metadata or {}).get(KIND_KEY)
    return kind


def schema_columns(schema: pa.Schema) -> dict[str, Column]:
    """What each non-time column of a window file holds, from its metadata (files before format
    2 have no `tierflow.key`: the key is the column's name)."""
    found: dict[str, Column] = {}
    for column in schema:
        kind = _kind(column)
        if column.name == TIME and kind is None:
            continue
        key = (column.metadata or {}).get(KEY_KEY, column.name.encode()).decode()
        if kind == TAG.encode():
            found[column.name] = Column(TAG, key)
        else:
            found[column.name] = Column(FIELD, key, FieldType.of_arrow(column.type))
    return found


def _conform(
    time: pa.Array, arrays: Mapping[Column, pa.Array], rows: int, schema: pa.Schema
) -> pa.RecordBatch:
    """The columns as a batch of `schema`: missing ones null."""
    wanted = schema_columns(schema)
    columns = [time]
    for field in schema:
        if field.name == TIME:
            continue
        values = arrays.get(wanted[field.name])
        columns.append(pa.nulls(rows, field.type) if values is None else values)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


class _ParquetOut:
    """A Parquet file being written, with the schema it was opened with; gathers batches into
    row groups of about `row_group_rows`."""

    def __init__(
        self, path: Path, schema: pa.Schema, options: Mapping[str, object], row_group_rows: int
    ) -> None:
        self.path = path
        self.schema = schema
        self.columns = frozenset(schema_columns(schema).values())
        self._row_group_rows = row_group_rows
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._writer = pq.ParquetWriter(path, schema, **options)

    def fits(self, columns: _Columns) -> bool:
        return columns.arrays.keys() <= self.columns

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= self._row_group_rows:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            table = pa.Table.from_batches(self._pending, schema=self.schema)
            self._pending, self._pending_rows = [], 0
            self._writer.write_table(table)

    def close(self) -> None:
        self.flush()
        self._writer.close()

    def abort(self) -> None:
        self._pending = []
        with suppress(pa.ArrowException, OSError):  # closing a file that may be broken
            self._writer.close()


class WindowFileWriter:
    """Writes one window of one measurement into `directory/window.parquet`, batch by batch.

    Call `add` for each batch, then `finish` once; or `abort` to give up. Points outside
    `[start_ns, stop_ns)` are refused with ArchiveError. The directory is the caller's scratch
    space (the segments go there too) and the caller removes it.
    """

    def __init__(
        self,
        directory: Path,
        *,
        start_ns: int,
        stop_ns: int,
        metadata: Mapping[str, str],
        compression: str = "zstd",
        compression_level: int | None = None,
        row_group_rows: int = 131_072,
    ) -> None:
        self._directory = directory
        self._start_ns, self._stop_ns = start_ns, stop_ns
        self._metadata = dict(metadata)
        self._options: dict[str, object] = {
            "compression": compression,
            "compression_level": compression_level,
        }
        self._row_group_rows = row_group_rows
        self._columns: set[Column] = set()
        self._segments: list[_ParquetOut] = []
        self._rows = 0
        self._min_ns = stop_ns
        self._max_ns = start_ns

    def add(self, batch: PointBatch) -> None:
        """Write `batch` (cast to the file's schema) once a row group's worth has gathered."""
        if batch.num_rows == 0:
            return
        with _local_errors():
            self._add(batch)

    def _add(self, batch: PointBatch) -> None:
        columns = _normalise(batch, self._start_ns, self._stop_ns)
        self._columns |= columns.arrays.keys()
        current = self._segments[-1] if self._segments else None
        if current is None or not current.fits(columns):
            if current is not None:
                current.close()
            path = self._directory / f"segment-{len(self._segments):04d}.parquet"
            schema = _schema(self._columns, self._metadata)
            current = _ParquetOut(path, schema, self._options, self._row_group_rows)
            self._segments.append(current)
        current.write(_conform(columns.time, columns.arrays, columns.rows, current.schema))
        self._rows += columns.rows
        self._min_ns = min(self._min_ns, columns.min_ns)
        self._max_ns = max(self._max_ns, columns.max_ns)

    def finish(self) -> WrittenFile | None:
        """Close the file and describe it; None when the window held no point."""
        if not self._segments:
            return None
        with _local_errors():
            return self._finish()

    def _finish(self) -> WrittenFile:
        self._segments[-1].close()
        final_path = self._directory / "window.parquet"
        if len(self._segments) == 1:
            self._segments[0].path.rename(final_path)
        else:
            self._merge(final_path)
        with open(final_path, "rb") as file:
            sha256, size = sha256_of(file)
        names = column_names(self._columns)  # in file order
        types: dict[str, list[FieldType]] = {}
        for column in names:
            if column.type is not None:
                types.setdefault(column.key, []).append(column.type)
        conflicts = tuple(
            TypeConflict(key, tuple(kinds)) for key, kinds in types.items() if len(kinds) > 1
        )
        return WrittenFile(
            path=final_path,
            rows=self._rows,
            min_time_ns=self._min_ns,
            max_time_ns=self._max_ns,
            size=size,
            sha256=sha256,
            tags=tuple(column.key for column in names if column.kind == TAG),
            fields={key: kinds[0] for key, kinds in sorted(types.items()) if len(kinds) == 1},
            conflicts=conflicts,
            columns={name: column for column, name in names.items()},
        )

    def _merge(self, final_path: Path) -> None:
        schema = _schema(self._columns, self._metadata)
        out = _ParquetOut(final_path, schema, self._options, self._row_group_rows)
        try:
            for segment in self._segments:
                parquet = pq.ParquetFile(segment.path)
                held = schema_columns(parquet.schema_arrow)
                for batch in parquet.iter_batches(batch_size=self._row_group_rows):
                    arrays = {
                        held[name]: values
                        for name, values in zip(batch.schema.names, batch.columns, strict=True)
                        if name != TIME
                    }
                    out.write(_conform(batch.column(TIME), arrays, batch.num_rows, schema))
                parquet.close()
                segment.path.unlink()
        except BaseException:
            out.abort()
            raise
        out.close()

    def abort(self) -> None:
        """Stop writing; the scratch directory may then be removed."""
        for segment in self._segments:
            segment.abort()


@contextmanager
def _local_errors() -> Iterator[None]:
    try:
        yield
    except (pa.ArrowException, OSError) as exc:
        raise ArchiveError(f"writing the window's Parquet file failed: {exc}") from exc


def sha256_of(file: BinaryIO) -> tuple[str, int]:
    """The SHA-256 (hex) and size of what `file` holds from its current position."""
    digest = hashlib.sha256()
    size = 0
    while chunk := file.read(_HASH_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def read_row_count(file: BinaryIO) -> int:
    """The row count a Parquet file's footer states."""
    try:
        return int(pq.read_metadata(file).num_rows)
    except (pa.ArrowException, OSError) as exc:
        raise ArchiveError(f"not a readable Parquet file: {exc}") from exc


def read_file(
    file: BinaryIO, *, start_ns: int | None = None, stop_ns: int | None = None, batch_rows: int
) -> Iterator[PointBatch]:
    """The points of a window file with time in `[start_ns, stop_ns)` (unbounded where None),
    batch by batch, in the file's order, types as stored. Row groups whose time statistics
    lie outside the range are not read."""
    try:
        parquet = pq.ParquetFile(file)
    except (pa.ArrowException, OSError) as exc:
        raise ArchiveError(f"not a readable Parquet file: {exc}") from exc
    schema = parquet.schema_arrow
    held = schema_columns(schema)
    tags = frozenset(name for name, column in held.items() if column.kind == TAG)
    keys = {name: column.key for name, column in held.items() if column.key != name}
    time_index = schema.get_field_index(TIME)
    metadata = parquet.metadata
    groups = [
        index
        for index in range(metadata.num_row_groups)
        if _may_hold(metadata.row_group(index).column(time_index).statistics, start_ns, stop_ns)
    ]
    if not groups:
        return
    low = None if start_ns is None else pa.scalar(start_ns, TIME_TYPE)
    high = None if stop_ns is None else pa.scalar(stop_ns, TIME_TYPE)
    for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=groups):
        selected = batch
        if low is not None:
            selected = selected.filter(pc.greater_equal(selected.column(TIME), low))
        if high is not None:
            selected = selected.filter(pc.less(selected.column(TIME), high))
        if selected.num_rows:
            yield PointBatch(selected, tags, keys)


def _may_hold(statistics: pq.Statistics | None, start_ns: int | None, stop_ns: int | None) -> bool:
    if statistics is None or not statistics.has_min_max:
        return True
    if start_ns is not None and statistics.max_raw < start_ns:
        return False
    return stop_ns is None or statistics.min_raw < stop_ns
