"""3.x answers as typed points: a table's schema, and Parquet or JSONL answers of
`/api/v3/query_sql` turned into `PointBatch`es, nothing widened, nothing filled.

InfluxDB 3 keeps a measurement as a table whose columns say what they are: tags are
`Dictionary(Int32, Utf8)`, `time` is `Timestamp(ns)`, and each field has the one type it took at
its first write (`Float64`, `Int64`, `UInt64`, `Boolean`, `Utf8`). So:

- A Parquet answer (`format=parquet`, written by the server from its Arrow batches) carries those
  types itself: its schema is read, checked against the table's (`TableSchema`, from
  `information_schema.columns`) where that is known, and read a bounded batch at a time. What it
  cannot hold exactly (a time not in nanoseconds) is refused, never rounded.
- A JSONL answer (`format=jsonl`, one object per row, null cells left out) cannot tell an integer
  from an unsigned one nor a float `1.0` from an integer, so it is parsed by Arrow with the
  table's schema given explicitly: every value is read as the type the table says it is.

A null cell is an absent value (the point has no such field, or no such tag), never a zero or an
empty string; a column of nulls only is left out of the batch, and a batch whose rows hold no
field value at all is not yielded.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from tierflow._archive import FieldType, PointBatch
from tierflow._engines._base import Engine, bare
from tierflow._engines.sql._downsample import FIELD_TYPES, table_columns
from tierflow._errors import QueryError

__all__ = [
    "TIME",
    "TableSchema",
    "answer_pieces",
    "count_query",
    "export_jsonl",
    "export_parquet",
    "field_counts",
    "jsonl_batches",
    "nanosecond_times",
    "parquet_answer_batches",
    "parquet_batches",
    "point_batch",
    "read_schema",
    "spool",
    "spooled_batches",
    "table_schema",
]

TIME = "time"

#: `information_schema.columns.data_type` of a field column, as InfluxDB types fields.
_FIELD_TYPES = {
    **{data_type: FieldType(kind) for data_type, kind in FIELD_TYPES.items()},
    # Other string layouts an answer may come in (a table's own fields are Utf8).
    "LargeUtf8": FieldType.STRING,
    "Utf8View": FieldType.STRING,
}


@dataclass(frozen=True, slots=True)
class TableSchema:
    """A 3.x table's columns: its tags and its fields with their one type each."""

    measurement: str
    tags: tuple[str, ...]
    fields: Mapping[str, FieldType]

    def json_schema(self) -> pa.Schema:
        """The Arrow schema a JSONL answer of `SELECT *` is parsed with: every column typed as
        the table types it (tags as plain strings)."""
        columns = [pa.field(TIME, pa.timestamp("ns"))]
        columns += [pa.field(tag, pa.string()) for tag in self.tags]
        columns += [pa.field(key, kind.arrow_type) for key, kind in self.fields.items()]
        return pa.schema(columns)


def table_schema(measurement: str, columns: Iterable[tuple[str, str]]) -> TableSchema | None:
    """The schema of `measurement` from its `(column_name, data_type)` rows of
    `information_schema.columns`; None when it has none (no such table)."""
    tags: list[str] = []
    fields: dict[str, FieldType] = {}
    seen = False
    for name, data_type in columns:
        seen = True
        if name == TIME:
            if not data_type.startswith("Timestamp"):
                raise QueryError(
                    f"measurement {measurement!r}: its time column is a {data_type}, "
                    "not a timestamp"
                )
        elif data_type.startswith("Dictionary("):
            tags.append(name)
        elif data_type in _FIELD_TYPES:
            fields[name] = _FIELD_TYPES[data_type]
        else:
            raise QueryError(
                f"measurement {measurement!r}, column {name!r}: type {data_type} is no "
                "InfluxDB field type (float, integer, unsigned, boolean, string)"
            )
    if not seen:
        return None
    return TableSchema(measurement, tuple(sorted(tags)), dict(sorted(fields.items())))


def point_batch(
    data: pa.RecordBatch,
    *,
    measurement: str,
    schema: TableSchema | None = None,
    tags: frozenset[str] | None = None,
) -> PointBatch | None:
    """One answer batch as points: `time` (a nanosecond timestamp) becomes int64 nanoseconds,
    tag columns strings (a dictionary of strings stays one), field columns keep their type.
    Tags are the columns `tags` (or the schema) names, else the dictionary-encoded ones (the
    server's tag type). A field whose type differs from what `schema` says is refused; an
    all-null column is left out; None when no row holds a field value."""
    names = data.schema.names
    if TIME not in names:
        raise QueryError(f"measurement {measurement!r}: the answer has no time column: {names}")
    if tags is None and schema is not None:
        tags = frozenset(schema.tags)
    columns: dict[str, pa.Array] = {TIME: _nanoseconds(data.column(TIME), measurement)}
    found: set[str] = set()
    has_field = False
    for name, values in zip(names, data.columns, strict=True):
        if name == TIME or values.null_count == len(values):
            continue
        if (name in tags) if tags is not None else pa.types.is_dictionary(values.type):
            columns[name] = _strings(values, measurement, name)
            found.add(name)
            continue
        kind = FieldType.of_arrow(_decoded(values).type)
        expected = None if schema is None else schema.fields.get(name)
        if schema is not None and expected != kind:
            said = "has no such field" if expected is None else f"types it {expected}"
            raise QueryError(
                f"measurement {measurement!r}: column {name!r} came back as {values.type}, "
                f"the table {said}: the schema changed during the read"
            )
        columns[name] = _decoded(values)
        has_field = True
    if not has_field:
        return None
    return PointBatch(pa.record_batch(columns), frozenset(found))


def _nanoseconds(values: pa.Array, measurement: str) -> pa.Array:
    if values.null_count:
        raise QueryError(f"measurement {measurement!r}: {values.null_count} rows have no time")
    if pa.types.is_timestamp(values.type):
        if values.type.unit != "ns":
            # A Parquet writer that coerced times to micro- or milliseconds has lost digits:
            # not an answer an archive may keep.
            raise QueryError(
                f"measurement {measurement!r}: the answer's times are in {values.type.unit}, "
                "not nanoseconds; they cannot be kept exactly"
            )
        return values.view(pa.int64())
    if pa.types.is_int64(values.type):
        return values
    raise QueryError(
        f"measurement {measurement!r}: the answer's time column is {values.type}, not a timestamp"
    )


def _decoded(values: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(values.type):
        return pc.cast(values, values.type.value_type)
    if pa.types.is_large_string(values.type) or pa.types.is_string_view(values.type):
        return pc.cast(values, pa.string())
    return values


def _strings(values: pa.Array, measurement: str, name: str) -> pa.Array:
    """A tag column as strings: the server's dictionary of strings kept as it is (the archive
    stores tags dictionary-encoded and line protocol escapes each distinct value once, so
    decoding it would only cost), anything else as plain strings."""
    if pa.types.is_dictionary(values.type) and pa.types.is_string(values.type.value_type):
        return values
    decoded = _decoded(values)
    if not pa.types.is_string(decoded.type):
        raise QueryError(
            f"measurement {measurement!r}: tag {name!r} came back as {values.type}, not strings"
        )
    return decoded


# -- Parquet -----------------------------------------------------------------------------------


def parquet_batches(
    source: str | IO[bytes] | pa.NativeFile,
    *,
    measurement: str,
    schema: TableSchema | None = None,
    tags: frozenset[str] | None = None,
    batch_rows: int = 65_536,
) -> Iterator[PointBatch]:
    """The points of a Parquet answer (a path or a seekable file), at most `batch_rows` a batch:
    only one row group is decoded at a time, so memory does not grow with the answer."""
    try:
        reader = pq.ParquetFile(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise QueryError(
            f"measurement {measurement!r}: the Parquet answer is unreadable: {exc}"
        ) from exc
    for data in reader.iter_batches(batch_size=batch_rows):
        if batch := point_batch(data, measurement=measurement, schema=schema, tags=tags):
            yield batch


# -- JSONL -------------------------------------------------------------------------------------


async def jsonl_batches(
    pieces: AsyncIterator[bytes], schema: TableSchema, *, block_bytes: int = 4 << 20
) -> AsyncIterator[PointBatch]:
    """The points of a JSONL answer streamed in pieces, parsed by Arrow a block of about
    `block_bytes` at a time (whole lines: a JSON line holds no raw newline), every value typed
    by `schema`. A key the schema does not know is refused (the table changed under the read)."""
    pending = bytearray()
    async for piece in pieces:
        pending += piece
        if len(pending) >= block_bytes and (cut := pending.rfind(b"\n") + 1):
            block = bytes(pending[:cut])
            del pending[:cut]
            if (batch := _jsonl_block(block, schema)) is not None:
                yield batch
    if pending.strip() and (batch := _jsonl_block(bytes(pending), schema)) is not None:
        yield batch


def _jsonl_block(block: bytes, schema: TableSchema) -> PointBatch | None:
    try:
        table = pa_json.read_json(
            io.BytesIO(block),
            # One Arrow block for the whole block of lines: Arrow refuses a line that straddles
            # two of its blocks, and a line (one huge string) may be longer than any fixed
            # size; the block is in memory already.
            read_options=pa_json.ReadOptions(block_size=len(block) + 1),
            parse_options=pa_json.ParseOptions(
                explicit_schema=schema.json_schema(), unexpected_field_behavior="error"
            ),
        )
    except pa.ArrowInvalid as exc:
        raise QueryError(
            f"measurement {schema.measurement!r}: a JSONL answer does not fit the table's "
            f"schema: {exc}"
        ) from exc
    if table.num_rows == 0:
        return None
    data = table.combine_chunks().to_batches()[0]
    return point_batch(data, measurement=schema.measurement, schema=schema)


# -- from the server ---------------------------------------------------------------------------

#: An answer is spooled in memory up to this size (about a million points of Parquet), then in
#: a memory-mapped local file, written this much at a time.
SPOOL_MEMORY = 32 << 20
_WRITE_BLOCK = 4 << 20


async def answer_pieces(
    engine: Engine, text: str, *, database: str, fmt: str
) -> AsyncIterator[bytes]:
    """Beyond the engine contract: run `text` in `database` through `/api/v3/query_sql` and yield
    the answer in `fmt` (`parquet`, `jsonl`) in pieces as they arrive. Not retried (a stream half
    read cannot be); a failed window is run again by the runner."""
    from tierflow._engines.sql._engine import InfluxDB3Engine

    sql = bare(engine, InfluxDB3Engine)
    async with sql.http.stream(
        "POST",
        "/api/v3/query_sql",
        kind="export",
        json_body={"db": database, "q": text, "format": fmt},
        doing=f"exporting from database {database!r}",
    ) as body:
        async for piece in body.chunks():
            yield piece


async def spool(pieces: AsyncIterator[bytes]) -> pa.NativeFile:
    """The whole answer as a seekable Arrow file (Parquet puts its schema and row-group index at
    the end): held in memory while under `SPOOL_MEMORY`, else written to a local temporary file
    (in worker threads, about a MB at a time) and memory-mapped, so Arrow reads it natively and
    only the pages it touches are resident. The file is unlinked at once (the mapping keeps it)."""
    held: list[bytes] = []
    pending = 0
    disk: IO[bytes] | None = None
    try:
        async for piece in pieces:
            held.append(piece)
            pending += len(piece)
            if pending >= (SPOOL_MEMORY if disk is None else _WRITE_BLOCK):
                if disk is None:
                    disk = await asyncio.to_thread(_temporary)
                await asyncio.to_thread(disk.writelines, held)
                held, pending = [], 0
        if disk is None:
            return pa.BufferReader(b"".join(held))
        await asyncio.to_thread(disk.writelines, held)
        await asyncio.to_thread(disk.flush)
        return pa.memory_map(disk.name)
    finally:
        if disk is not None:
            disk.close()


def _temporary() -> IO[bytes]:
    return tempfile.NamedTemporaryFile(prefix="tierflow-answer-")


async def export_parquet(
    engine: Engine,
    text: str,
    *,
    database: str,
    measurement: str,
    schema: TableSchema | None = None,
    tags: frozenset[str] | None = None,
    batch_rows: int = 65_536,
) -> AsyncIterator[PointBatch]:
    """The points `text` selects, asked for as Parquet, spooled (`spool`), then read a bounded
    batch at a time in a worker thread (`parquet_batches`): memory does not grow with the
    answer."""
    pieces = answer_pieces(engine, text, database=database, fmt="parquet")
    async for batch in parquet_answer_batches(
        pieces, measurement=measurement, schema=schema, tags=tags, batch_rows=batch_rows
    ):
        yield batch


async def parquet_answer_batches(
    pieces: AsyncIterator[bytes],
    *,
    measurement: str,
    schema: TableSchema | None = None,
    tags: frozenset[str] | None = None,
    batch_rows: int = 65_536,
) -> AsyncIterator[PointBatch]:
    """A Parquet answer arriving in pieces, spooled (`spool`), then read a bounded batch at a
    time in a worker thread (`spooled_batches`)."""
    handle = await spool(pieces)
    try:
        async for batch in spooled_batches(
            handle, measurement=measurement, schema=schema, tags=tags, batch_rows=batch_rows
        ):
            yield batch
    finally:
        handle.close()


async def spooled_batches(
    handle: pa.NativeFile,
    *,
    measurement: str,
    schema: TableSchema | None = None,
    tags: frozenset[str] | None = None,
    batch_rows: int = 65_536,
) -> AsyncIterator[PointBatch]:
    """The points of a spooled Parquet answer (`parquet_batches`, each batch read in a worker
    thread); an empty body is no points. The caller closes `handle`."""
    if handle.size() == 0:
        return
    batches = parquet_batches(
        handle, measurement=measurement, schema=schema, tags=tags, batch_rows=batch_rows
    )
    while (batch := await asyncio.to_thread(next, batches, None)) is not None:
        yield batch


def nanosecond_times(handle: pa.NativeFile) -> bool:
    """Whether a spooled Parquet answer keeps its times in nanoseconds (or holds nothing): a
    writer may coerce timestamps to micro- or milliseconds, which loses digits."""
    if handle.size() == 0:
        return True
    schema = pq.ParquetFile(handle).schema_arrow
    if TIME not in schema.names:
        return True  # the reader refuses it, naming what is missing
    kind = schema.field(TIME).type
    return not pa.types.is_timestamp(kind) or kind.unit == "ns"


async def export_jsonl(
    engine: Engine, text: str, *, database: str, schema: TableSchema
) -> AsyncIterator[PointBatch]:
    """The points `text` selects, asked for as JSONL and typed by `schema` (`jsonl_batches`),
    parsed as they arrive."""
    pieces = answer_pieces(engine, text, database=database, fmt="jsonl")
    async for batch in jsonl_batches(pieces, schema):
        yield batch


async def read_schema(engine: Engine, *, database: str, measurement: str) -> TableSchema | None:
    """The table's schema from `information_schema.columns` (tables of measurements live in the
    `iox` schema); None when the database has no such table."""
    columns = await table_columns(engine, database, measurement)
    return table_schema(measurement, columns.items())


def count_query(
    schema: TableSchema, start: datetime, stop: datetime, tags: Mapping[str, str]
) -> str:
    """Per field of `schema`, the server's own count of values in `[start, stop)` of the series
    `tags` selects, with the export's own bounds (columns `c0`, `c1`, … in field order)."""
    from tierflow._engines.sql._literals import sql_ident, sql_time, tag_filters

    counts = [f"count({sql_ident(key)}) AS c{i}" for i, key in enumerate(schema.fields)]
    where = [f'"time" >= {sql_time(start)}', f'"time" < {sql_time(stop)}']
    where += tag_filters(tags, schema.tags) or []
    return (
        f"SELECT {', '.join(counts)} FROM {sql_ident(schema.measurement)} "
        f"WHERE {' AND '.join(where)}"
    )


async def field_counts(
    engine: Engine,
    schema: TableSchema,
    *,
    database: str,
    start: datetime,
    stop: datetime,
    tags: Mapping[str, str],
) -> dict[str, int]:
    """Run a `count_query`: field key → values (fields with none left out)."""
    if not schema.fields:
        return {}
    found: dict[str, int] = {}
    for series in await engine.query(count_query(schema, start, stop, tags), database=database):
        for row in series.values:
            cells = dict(zip(series.columns, row, strict=True))
            for i, key in enumerate(schema.fields):
                if n := int(cells.get(f"c{i}") or 0):
                    found[key] = found.get(key, 0) + n
    return found
