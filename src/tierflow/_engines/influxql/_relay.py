"""1.x reads that come back typed: each field's types (`SHOW FIELD KEYS`), and a relay's
aggregating read (a `SELECT` without `INTO`, chunked JSON) as batches of points."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import pyarrow as pa

from tierflow._archive import FieldType, PointBatch, widen
from tierflow._config import TierConfig
from tierflow._engines._base import Engine, Series
from tierflow._engines._dialect import AggregateRead
from tierflow._engines.influxql._export import field_keys_influxql

__all__ = [
    "aggregate_type",
    "field_type_sets_influxql",
    "field_types_influxql",
    "influxql_aggregate_batches",
    "influxql_field_types",
    "series_batch",
]


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


async def influxql_field_types(
    engine: Engine, tier: TierConfig, measurement: str
) -> dict[str, frozenset[FieldType]]:
    """Every type each field of `measurement` has in the tier (empty: no such measurement)."""
    kinds = await field_keys_influxql(
        engine,
        database=tier.database,
        retention_policy=tier.retention_policy,
        measurement=measurement,
    )
    return {name: frozenset(types) for name, types in kinds.items()}


async def influxql_aggregate_batches(
    engine: Engine, read: AggregateRead
) -> AsyncIterator[PointBatch]:
    """A relay's aggregating read from 1.x (chunked JSON), typed by `SHOW FIELD KEYS` and what
    each aggregate makes of a field. Rows are read with `fill(none)`, so they are exactly what
    `SELECT … INTO` would write."""
    tier, measurement, aggregates, query = read.tier, read.measurement, read.aggregates, read.query
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
