"""3.x reads that come back typed: each field's type (`information_schema.columns`: one per
field, fixed at its first write), and a relay's aggregating read (the downsample template's
SELECT, answered as Parquet) as batches of points."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime

import pyarrow as pa

from tierflow._archive import FieldType, PointBatch
from tierflow._config import TierConfig
from tierflow._engines._base import Engine
from tierflow._engines._dialect import AggregateRead
from tierflow._engines.sql._export import export_parquet, read_schema
from tierflow._errors import QueryError

__all__ = ["aggregate_type", "sql_aggregate_batches", "sql_field_types"]


async def sql_field_types(
    engine: Engine, tier: TierConfig, measurement: str, *, now: datetime
) -> dict[str, frozenset[FieldType]]:
    """Every type each field of `measurement` has in a 3.x tier (one: 3.x fixes a field's
    type at its first write); empty when the table does not exist."""
    schema = await read_schema(engine, database=tier.database, measurement=measurement)
    if schema is None:
        return {}
    return {key: frozenset({kind}) for key, kind in schema.fields.items()}


# What an aggregate gives, by the type of the field it reads, as InfluxQL's SELECT … INTO writes
# it (and the 1.x and 2.x relays): averages are floats, counts integers, the rest (selectors,
# sums, spreads) keep the field's own type.
_FLOAT_AGGREGATES = frozenset({"mean", "median", "stddev"})


def aggregate_type(function: str, field: FieldType) -> FieldType:
    if function == "count":
        return FieldType.INTEGER
    if function in _FLOAT_AGGREGATES:
        return FieldType.FLOAT
    return field


async def sql_aggregate_batches(engine: Engine, read: AggregateRead) -> AsyncIterator[PointBatch]:
    """A relay's aggregating read of a 3.x tier: the downsample template's SELECT (without the
    INSERT), sent as the engine's own downsample sends it (`_downsample.split_statements`: the
    database cut from the FROM, every tag column of the table added to the SELECT and the
    GROUP BY), answered as Parquet, spooled, and read a bounded batch at a time. Tags are the
    table's tag columns; every other column but `time` must be one of the job's
    `{field}_{function}` outputs, of the type InfluxQL's `SELECT … INTO` would write (else the
    read is refused, naming the column: nothing is cast). Null cells are absent values; a row
    with none is no point."""
    from tierflow._engines.sql._downsample import split_statements

    tier, measurement = read.tier, read.measurement
    schema = await read_schema(engine, database=tier.database, measurement=measurement)
    if schema is None:
        return
    try:
        (statement,) = split_statements(read.query.text, every_tag=True)
    except ValueError as exc:
        raise QueryError(f"template {read.query.template}: {exc}") from None
    expected = {
        f"{field}_{function}": aggregate_type(function, schema.fields[field])
        for field, functions in read.aggregates.items()
        if field in schema.fields
        for function in functions
    }
    batches = export_parquet(
        engine,
        statement.with_tags(list(schema.tags), {"time", *schema.tags, *schema.fields}),
        database=statement.source_database or tier.database,
        measurement=measurement,
        tags=frozenset(schema.tags),
    )
    async for batch in batches:
        _check(batch, expected, measurement)
        yield batch


def _check(batch: PointBatch, expected: Mapping[str, FieldType], measurement: str) -> None:
    for name in batch.fields:
        want = expected.get(name)
        got = FieldType.of_arrow(batch.data.schema.field(name).type)
        if want is None:
            raise QueryError(
                f"measurement {measurement!r}: the relay's read answered a column {name!r} "
                f"that is neither a tag nor one of the job's aggregates ({sorted(expected)})"
            )
        if got != want:
            raise QueryError(
                f"measurement {measurement!r}: the relay's read answered {name!r} as "
                f"{_arrow_name(batch, name)}; SELECT … INTO would write {want}"
            )


def _arrow_name(batch: PointBatch, name: str) -> str:
    data_type: pa.DataType = batch.data.schema.field(name).type
    return str(data_type)
