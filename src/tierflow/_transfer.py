"""Moving points in bulk: the export path (InfluxDB → Arrow batches, streamed) and the write path
(Arrow batches → line protocol → InfluxDB), shared by archive, restore and cross-connection
relays. This module holds the 1.x export and the writer for both; the 2.x export is in
`tierflow._flux_export`.

The 1.x export (`export_influxql`, in `tierflow._influxql_export`) reads one measurement over a
range with `/query?chunked=true`, so only one chunk (at most `chunk_size` points) is in memory at
a time. Writes are encoded a batch at a time,
split into bodies under the server's limit, and posted at most `max_concurrency` at a time
through the connection's retry layer; a body that cannot be written fails the whole transfer —
nothing is buffered across windows and nothing is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass

import pyarrow as pa

from tierflow._archive import FieldType, PointBatch, widen
from tierflow._config import TierConfig
from tierflow._engines import Engine, Series
from tierflow._errors import EngineError
from tierflow._flux_export import annotated_batches
from tierflow._influxql_export import export_influxql, export_query, field_keys_influxql
from tierflow._lineprotocol import encode_batch
from tierflow._templates import RenderedQuery

__all__ = [
    "Transfer",
    "aggregate_batches",
    "aggregate_type",
    "export_influxql",
    "export_query",
    "field_type_sets_influxql",
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


async def field_type_sets_influxql(
    engine: Engine, *, database: str, retention_policy: str | None, measurement: str
) -> dict[str, set[str]]:
    """Every type each field of the measurement has in one retention policy, as `SHOW FIELD
    KEYS` names them: a field with several types across shards is listed once per type."""
    found = await field_keys_influxql(
        engine, database=database, retention_policy=retention_policy, measurement=measurement
    )
    return {key: {str(kind) for kind in kinds} for key, kinds in found.items()}


async def field_types_influxql(
    engine: Engine, *, database: str, retention_policy: str | None, measurement: str
) -> dict[str, FieldType]:
    """The type a relay's aggregate reads each field as: a field with several types across
    shards is read by the server as the widest (and so is what `SELECT … INTO` writes)."""
    types: dict[str, FieldType] = {}
    found = await field_keys_influxql(
        engine, database=database, retention_policy=retention_policy, measurement=measurement
    )
    for key, kinds in found.items():
        for kind in kinds:
            types[key] = widen(types[key], kind) if key in types else kind
    return types


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
    `SHOW FIELD KEYS` and what each aggregate makes of a field.

    Either way the rows are exactly what `SELECT … INTO` / `to()` would write once null cells are
    left out (as the writer does): 1.x reads with `fill(none)`, and Flux's pivot leaves null the
    cell of a window a (field, function) has no row for (flux `stdlib/universe/pivot.go`)."""
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
                measurement,
                batch.data,
                tags=sorted(batch.tags),
                fields=batch.fields,
                keys=batch.keys,
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
