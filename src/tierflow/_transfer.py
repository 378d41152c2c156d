"""Moving points in bulk: the export path (InfluxDB → Arrow batches, streamed) and the write path
(Arrow batches → line protocol → InfluxDB), shared by archive, restore and cross-connection
relays. This module holds the 1.x export and the writer for both; the 2.x export is in
`tierflow._flux_export`.

Export reads one measurement over a range with `/query?chunked=true`, so only one chunk (at most
`chunk_size` points) is in memory at a time. Field types come from `SHOW FIELD KEYS`, not from
the JSON (where a float 2.0 arrives as the integer 2). Writes are encoded a batch at a time,
split into bodies under the server's limit, and posted at most `max_concurrency` at a time
through the connection's retry layer; a body that cannot be written fails the whole transfer —
nothing is buffered across windows and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import functools
import io
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.csv as pa_csv

from tierflow._archive import FieldType, PointBatch, widen
from tierflow._config import TierConfig
from tierflow._engines import Engine, Series
from tierflow._errors import EngineError
from tierflow._flux_export import annotated_batches
from tierflow._lineprotocol import encode_batch
from tierflow._templates import RenderedQuery, influxql_ident, influxql_string, influxql_time

__all__ = [
    "Transfer",
    "aggregate_batches",
    "aggregate_type",
    "export_influxql",
    "export_query",
    "field_kinds_influxql",
    "field_types_influxql",
    "series_batch",
    "write_batches",
]

#: 1.x refuses bodies over `max-body-size` (25 MB by default) with 413; stay well under it.
MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Transfer:
    """What a write moved."""

    points: int
    dropped: int
    bytes_sent: int
    requests: int


def _from(database: str, retention_policy: str | None, measurement: str) -> str:
    rp = influxql_ident(retention_policy) if retention_policy else ""
    return f"{influxql_ident(database)}.{rp}.{influxql_ident(measurement)}"


def export_query(
    *,
    database: str,
    retention_policy: str | None,
    measurement: str,
    start: datetime,
    stop: datetime,
    tags: Mapping[str, str] | None = None,
    select: str = "*",
) -> str:
    """`select` (every point by default, tags as columns) over one measurement in
    `[start, stop)`."""
    where = [f"time >= {influxql_time(start)}", f"time < {influxql_time(stop)}"]
    where += [f"{influxql_ident(k)} = {influxql_string(v)}" for k, v in (tags or {}).items()]
    source = _from(database, retention_policy, measurement)
    return f"SELECT {select} FROM {source} WHERE {' AND '.join(where)}"


async def field_kinds_influxql(
    engine: Engine, *, database: str, retention_policy: str | None, measurement: str
) -> dict[str, set[FieldType]]:
    """Every type each field of the measurement has in one retention policy (`SHOW FIELD KEYS`
    is per RP, and lists a field once per type it has in any shard)."""
    rp = influxql_ident(retention_policy) + "." if retention_policy else ""
    text = f"SHOW FIELD KEYS ON {influxql_ident(database)} FROM {rp}{influxql_ident(measurement)}"
    kinds: dict[str, set[FieldType]] = {}
    for series in await engine.query(text, database=database):
        for key, kind in series.values:
            kinds.setdefault(key, set()).add(FieldType(kind))
    return kinds


async def field_types_influxql(
    engine: Engine, *, database: str, retention_policy: str | None, measurement: str
) -> dict[str, FieldType]:
    """The measurement's field types in one retention policy; a field with several types across
    shards gets the widest."""
    kinds = await field_kinds_influxql(
        engine, database=database, retention_policy=retention_policy, measurement=measurement
    )
    return {key: functools.reduce(widen, sorted(types)) for key, types in kinds.items()}


async def export_influxql(
    engine: Engine,
    *,
    database: str,
    retention_policy: str | None,
    measurement: str,
    start: datetime,
    stop: datetime,
    tags: Mapping[str, str] | None = None,
    chunk_size: int = 10_000,
) -> AsyncIterator[PointBatch]:
    """Every point of `measurement` in `[start, stop)` as Arrow batches, streamed."""
    types = await field_types_influxql(
        engine, database=database, retention_policy=retention_policy, measurement=measurement
    )
    if not types:
        return
    text = export_query(
        database=database,
        retention_policy=retention_policy,
        measurement=measurement,
        start=start,
        stop=stop,
        tags=tags,
    )
    pieces = engine.stream(text, database=database, chunk_size=chunk_size)
    async for block in _csv_blocks(pieces):
        batch = _csv_batch(block, types)
        if batch is not None:
            yield batch


async def _csv_blocks(pieces: AsyncIterator[bytes], size: int = 4 << 20) -> AsyncIterator[bytes]:
    """Regroup a streamed CSV body into blocks of about `size` bytes, each the header line
    followed by whole rows, so that each block parses on its own."""
    header = b""
    pending = bytearray()  # appended in place: rebuilding bytes per piece was quadratic
    async for piece in pieces:
        pending += piece
        if not header:
            end = pending.find(b"\n")
            if end < 0:
                continue
            header = bytes(pending[: end + 1])
            del pending[: end + 1]
        if len(pending) >= size:
            cut = pending.rfind(b"\n") + 1
            if cut:
                yield header + bytes(pending[:cut])
                del pending[:cut]
    if header and pending.strip():
        yield header + bytes(pending)


async def aggregate_batches(
    engine: Engine,
    *,
    tier: TierConfig,
    measurement: str,
    aggregates: Mapping[str, tuple[str, ...]],
    query: RenderedQuery,
) -> AsyncIterator[PointBatch]:
    """The rows of a relay's aggregating read (`render_relay`) as batches of points, streamed
    and typed: from 2.x by the server's own column types, from 1.x (chunked JSON) by
    `SHOW FIELD KEYS` and what each aggregate makes of a field."""
    if engine.dialect == "flux":
        async for batch in annotated_batches(engine.stream(query.text)):
            yield batch
        return
    types = await field_types_influxql(
        engine,
        database=tier.database,
        retention_policy=tier.retention_policy,
        measurement=measurement,
    )
    out = {
        f"{field}_{function}": aggregate_type(function, types.get(field))
        for field, functions in aggregates.items()
        for function in functions
    }
    async for chunk in engine.query_chunks(query.text, database=tier.database):
        for series in chunk:
            if (points := series_batch(series, out)) is not None:
                yield points


# What an aggregate gives, by the type of the field it reads: averages are floats, counts are
# integers, and the rest (selectors, sums, spreads) keep the field's own type.
_FLOAT_AGGREGATES = frozenset({"mean", "median", "stddev"})


def aggregate_type(function: str, field: FieldType | None) -> FieldType:
    if function == "count":
        return FieldType.INTEGER
    if function in _FLOAT_AGGREGATES or field is None:
        return FieldType.FLOAT
    return field


def series_batch(series: Series, types: Mapping[str, FieldType]) -> PointBatch | None:
    """One series of a (small) read result as a batch: its tags repeated, fields typed."""
    if not series.values:
        return None
    tags = {k: v for k, v in series.tags.items() if v != ""}
    rows = series.values
    data: dict[str, pa.Array] = {"time": pa.array([row[0] for row in rows], pa.int64())}
    for name, value in sorted(tags.items()):
        data[name] = pa.array([value] * len(rows), pa.string())
    for index, name in enumerate(series.columns):
        if name == "time" or name not in types:
            continue
        values = [row[index] for row in rows]
        if any(value is not None for value in values):
            data[name] = pa.array(values, types[name].arrow_type)
    if len(data) == 1 + len(tags):
        return None
    return PointBatch(pa.record_batch(data), frozenset(tags))


def _csv_batch(block: bytes, types: Mapping[str, FieldType]) -> PointBatch | None:
    """Parse one CSV block: columns `name,tags,time`, then tags and fields by name. A tag is
    any column that is not a field; empty cells are absent tags and fields."""
    header = block[: block.find(b"\n")].decode().rstrip("\r").split(",")
    columns = header[3:]
    column_types = {"time": pa.int64()}
    column_types.update({c: types[c].arrow_type if c in types else pa.string() for c in columns})
    table = pa_csv.read_csv(
        io.BytesIO(block),
        read_options=pa_csv.ReadOptions(block_size=len(block) + 1),
        convert_options=pa_csv.ConvertOptions(
            column_types=column_types,
            include_columns=["time", *columns],
            strings_can_be_null=True,
            null_values=[""],
            true_values=["true"],
            false_values=["false"],
        ),
    )
    if table.num_rows == 0:
        return None
    data = table.combine_chunks().to_batches()[0]
    present = [
        name
        for name in data.schema.names
        if name == "time" or data.column(name).null_count < data.num_rows
    ]
    tags = frozenset(name for name in present if name != "time" and name not in types)
    return PointBatch(data.select(present), tags)


async def write_batches(
    engine: Engine,
    batches: AsyncIterable[tuple[str, PointBatch]],
    *,
    database: str,
    retention_policy: str | None,
    max_concurrency: int,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Transfer:
    """Encode and write `(measurement, batch)` pairs; at most `max_concurrency` bodies in flight.
    The first failure cancels the rest and raises."""
    slots = asyncio.Semaphore(max_concurrency)
    points = dropped = sent = requests = 0
    posts: set[asyncio.Task[int]] = set()

    async def post(body: bytes) -> int:
        try:
            return await engine.write(body, database=database, retention_policy=retention_policy)
        finally:
            slots.release()

    try:
        async for measurement, batch in batches:
            encoded = encode_batch(
                measurement, batch.data, tags=sorted(batch.tags), fields=batch.fields
            )
            points += encoded.points
            dropped += encoded.dropped
            for body in _split(encoded.body, max_body_bytes):
                await slots.acquire()
                for done in [task for task in posts if task.done()]:
                    posts.discard(done)
                    sent += done.result()  # raises the first failure
                posts.add(asyncio.create_task(post(body)))
                requests += 1
        for result in await asyncio.gather(*posts):
            sent += result
        posts.clear()
    except BaseException:
        for task in posts:
            task.cancel()
        await asyncio.gather(*posts, return_exceptions=True)
        raise
    return Transfer(points, dropped, sent, requests)


def _split(body: bytes, limit: int) -> list[bytes]:
    """Cut a newline-terminated body into pieces of at most `limit` bytes, at line ends."""
    pieces: list[bytes] = []
    start = 0
    while start < len(body):
        end = min(start + limit, len(body))
        if end < len(body):
            cut = body.rfind(b"\n", start, end)
            if cut < start:
                raise EngineError(f"one line of line protocol is longer than {limit} bytes")
            end = cut + 1
        pieces.append(body[start:end])
        start = end
    return pieces
