"""The 1.x export: every point of one measurement over a range, exactly, as Arrow batches.

What comes out must be what InfluxDB holds, type and bits included, so the export is planned
from the measurement's schema (`SHOW FIELD KEYS`, `SHOW TAG KEYS`) before a row is read:

- Columns are selected by name and kind, `SELECT "f"::field, …, "t"::tag, …`, and read by
  position: a tag and a field of one name (`m,x=a x=1.5`) are both read, and no header has to be
  parsed (keys may hold commas, quotes, spaces).
- A measurement whose fields are numbers and booleans, each of one type in every shard, is read
  as CSV (`Accept: application/csv`), which influxd writes quickly and Arrow parses in C++:
  CSV carries those exactly (floats in Go's shortest round-trip form, integers in full).
- A measurement with a string field is read as MessagePack (`application/x-msgpack`), which
  tells an empty string from a missing value; CSV writes both as an empty cell.
- A field with several types (one per shard: InfluxDB types a field per shard) is read shard
  group by shard group, also as MessagePack: a query spanning shards of different types would
  have the server cast every value to one type (an integer beyond 2**53 comes back rounded
  through a float); within one shard group each value comes back with its own type and keeps it.

The count check (`count_influxql`) counts over the same ranges, so it sees what the export saw.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

import pyarrow as pa
import pyarrow.csv as pa_csv

from tierflow._archive import Column, FieldType, PointBatch
from tierflow._archive._schema import FIELD, TAG, column_names
from tierflow._engines import Engine, Series
from tierflow._engines._base import bare
from tierflow._engines.influxql._engine import InfluxQLEngine
from tierflow._engines.influxql._literals import influxql_ident, influxql_string, influxql_time
from tierflow._errors import QueryError

__all__ = [
    "ExportPlan",
    "count_influxql",
    "export_influxql",
    "export_planned",
    "export_query",
    "field_keys_influxql",
    "plan_export",
]


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


async def field_keys_influxql(
    engine: Engine, *, database: str, retention_policy: str | None, measurement: str
) -> dict[str, tuple[FieldType, ...]]:
    """Each field of the measurement in one retention policy with every type it has in any
    shard (`SHOW FIELD KEYS` lists a field once per type)."""
    rp = influxql_ident(retention_policy) + "." if retention_policy else ""
    text = f"SHOW FIELD KEYS ON {influxql_ident(database)} FROM {rp}{influxql_ident(measurement)}"
    types: dict[str, tuple[FieldType, ...]] = {}
    for series in await engine.query(text, database=database):
        for key, kind in series.values:
            if (known := FieldType(kind)) not in types.get(key, ()):
                types[key] = (*types.get(key, ()), known)
    return types


async def _tag_keys(
    engine: Engine, *, database: str, retention_policy: str | None, measurement: str
) -> list[str]:
    rp = influxql_ident(retention_policy) + "." if retention_policy else ""
    text = f"SHOW TAG KEYS ON {influxql_ident(database)} FROM {rp}{influxql_ident(measurement)}"
    return sorted(
        {row[0] for series in await engine.query(text, database=database) for row in series.values}
    )


@dataclass(frozen=True, slots=True)
class ExportPlan:
    """How one measurement is read over `[start, stop)`: its fields (with every type each has),
    its tag keys, the ranges read one by one, and whether as CSV or MessagePack."""

    database: str
    retention_policy: str | None
    measurement: str
    fields: Mapping[str, tuple[FieldType, ...]]
    tags: Sequence[str]
    ranges: Sequence[tuple[datetime, datetime]]
    csv: bool

    def query(self, start: datetime, stop: datetime, filters: Mapping[str, str] | None) -> str:
        select = [f"{influxql_ident(key)}::field" for key in self.fields]
        select += [f"{influxql_ident(key)}::tag" for key in self.tags]
        return export_query(
            database=self.database,
            retention_policy=self.retention_policy,
            measurement=self.measurement,
            start=start,
            stop=stop,
            tags=filters,
            select=", ".join(select),
        )


async def plan_export(
    engine: Engine,
    *,
    database: str,
    retention_policy: str | None,
    measurement: str,
    start: datetime,
    stop: datetime,
) -> ExportPlan | None:
    """The plan for exporting `measurement` over `[start, stop)`; None when it has no field."""
    fields = await field_keys_influxql(
        engine, database=database, retention_policy=retention_policy, measurement=measurement
    )
    if not fields:
        return None
    tags = await _tag_keys(
        engine, database=database, retention_policy=retention_policy, measurement=measurement
    )
    mixed = any(len(types) > 1 for types in fields.values())
    ranges = [(start, stop)]
    if mixed:
        ranges = await _shard_ranges(engine, database, retention_policy, start, stop)
    strings = any(FieldType.STRING in types for types in fields.values())
    return ExportPlan(
        database,
        retention_policy,
        measurement,
        dict(sorted(fields.items())),
        tags,
        ranges,
        csv=not mixed and not strings,
    )


async def _shard_ranges(
    engine: Engine,
    database: str,
    retention_policy: str | None,
    start: datetime,
    stop: datetime,
) -> list[tuple[datetime, datetime]]:
    """`[start, stop)` cut at the bounds of the retention policy's shard groups."""
    if retention_policy is None:
        retention_policy = await _default_policy(engine, database)
    cuts = {start, stop}
    for series in await engine.query("SHOW SHARDS"):
        columns = series.columns
        for row in series.values:
            entry = dict(zip(columns, row, strict=False))
            if entry.get("database") != database:
                continue
            if entry.get("retention_policy") != retention_policy:
                continue
            for bound in ("start_time", "end_time"):
                moment = datetime.fromisoformat(str(entry[bound]).replace("Z", "+00:00"))
                if start < moment < stop:
                    cuts.add(moment)
    ordered = sorted(cuts)
    return list(pairwise(ordered))


async def _default_policy(engine: Engine, database: str) -> str:
    text = f"SHOW RETENTION POLICIES ON {influxql_ident(database)}"
    for series in await engine.query(text, database=database):
        index = series.columns.index("default")
        for row in series.values:
            if row[index]:
                return str(row[0])
    raise QueryError(f"database {database!r} has no default retention policy")


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
    """Every point of `measurement` in `[start, stop)` as Arrow batches, streamed, each value
    with the type and bits InfluxDB holds (see the module's docstring)."""
    plan = await plan_export(
        engine,
        database=database,
        retention_policy=retention_policy,
        measurement=measurement,
        start=start,
        stop=stop,
    )
    if plan is not None:
        async for batch in export_planned(engine, plan, tags=tags, chunk_size=chunk_size):
            yield batch


async def export_planned(
    engine: Engine,
    plan: ExportPlan,
    *,
    tags: Mapping[str, str] | None = None,
    chunk_size: int = 10_000,
) -> AsyncIterator[PointBatch]:
    """`export_influxql` for a plan made already (`plan_export`)."""
    for low, high in plan.ranges:
        text = plan.query(low, high, tags)
        if plan.csv:
            pieces = bare(engine, InfluxQLEngine).stream(
                text, database=plan.database, chunk_size=chunk_size
            )
            async for block in csv_blocks(pieces):
                if (batch := _csv_batch(block, plan)) is not None:
                    yield batch
        else:
            chunks = engine.query_chunks(text, database=plan.database, chunk_size=chunk_size)
            async for chunk in chunks:
                for series in chunk:
                    if (batch := _rows_batch(series, plan)) is not None:
                        yield batch


async def count_influxql(
    engine: Engine, plan: ExportPlan, *, tags: Mapping[str, str] | None = None
) -> dict[str, int]:
    """InfluxDB's own count of values per field over the plan's ranges (the archive's check)."""
    counts: dict[str, int] = {}
    for low, high in plan.ranges:
        text = export_query(
            database=plan.database,
            retention_policy=plan.retention_policy,
            measurement=plan.measurement,
            start=low,
            stop=high,
            tags=tags,
            select="count(*)",
        )
        for series in await engine.query(text, database=plan.database):
            for row in series.values:
                for column, value in zip(series.columns[1:], row[1:], strict=True):
                    if value:
                        key = column.removeprefix("count_")
                        counts[key] = counts.get(key, 0) + int(value)
    return counts


async def csv_blocks(pieces: AsyncIterator[bytes], size: int = 4 << 20) -> AsyncIterator[bytes]:
    """Regroup a streamed CSV body into blocks of about `size` bytes, each the header line
    followed by whole rows, so that each block parses on its own. A block ends at a line end
    outside quotes (an even number of `"` before it: a quoted value may hold a newline)."""
    header = b""
    pending = bytearray()  # appended in place: rebuilding bytes per piece was quadratic
    async for piece in pieces:
        pending += piece
        if not header:
            # Names hold no newline (line protocol cannot carry one), so the header is one line.
            end = pending.find(b"\n")
            if end < 0:
                continue
            header = bytes(pending[: end + 1])
            del pending[: end + 1]
        if len(pending) >= size and (cut := _row_end(pending, len(pending))):
            yield header + bytes(pending[:cut])
            del pending[:cut]
    if header and pending.strip():
        yield header + bytes(pending)


def _row_end(pending: bytearray, limit: int) -> int:
    """The end of the last whole row in `pending[:limit]` outside quotes, or 0."""
    quotes = pending.count(b'"', 0, limit)
    cut = limit
    while (cut := pending.rfind(b"\n", 0, cut)) >= 0:
        quotes -= pending.count(b'"', cut, limit)
        limit = cut
        if quotes % 2 == 0:
            return cut + 1
    return 0


def _plan_columns(plan: ExportPlan, types: Mapping[str, FieldType]) -> list[Column]:
    """The selected columns in query order, each field with the type it has in this range."""
    return [Column(FIELD, key, types[key]) for key in plan.fields] + [
        Column(TAG, key) for key in plan.tags
    ]


def _csv_batch(block: bytes, plan: ExportPlan) -> PointBatch | None:
    """One CSV block: columns `name,tags,time`, then the selected fields and tags by position
    (the header line is skipped, never parsed); empty cells are absent values."""
    columns = _plan_columns(plan, {key: types[0] for key, types in plan.fields.items()})
    names = column_names(columns)
    selected = [names[column] for column in columns]
    types: dict[str, pa.DataType] = {"time": pa.int64()}
    for column in columns:
        types[names[column]] = pa.string() if column.type is None else column.type.arrow_type
    table = pa_csv.read_csv(
        io.BytesIO(block),
        read_options=pa_csv.ReadOptions(
            block_size=len(block) + 1,
            skip_rows=1,
            column_names=["\0name", "\0tags", "time", *selected],
        ),
        # No value of a CSV export holds a line break: strings go as MessagePack, and names
        # and tag values cannot hold one. Quoted commas and quotes are parsed either way.
        parse_options=pa_csv.ParseOptions(newlines_in_values=False),
        convert_options=pa_csv.ConvertOptions(
            column_types=types,
            include_columns=["time", *selected],
            strings_can_be_null=True,
            null_values=[""],
            true_values=["true"],
            false_values=["false"],
        ),
    )
    if table.num_rows == 0:
        return None
    data = table.combine_chunks().to_batches()[0]
    return _batch(data, names)


def _rows_batch(series: Series, plan: ExportPlan) -> PointBatch | None:
    """One chunk of rows (MessagePack: values typed as stored) as a batch. A field's type is
    read off its values: within one shard group it has one."""
    if not series.values:
        return None
    values = list(zip(*series.values, strict=True))
    arrays: dict[Column, pa.Array] = {}
    for index, key in enumerate(plan.fields, start=1):
        for field_type, array in _typed(values[index], plan.fields[key], key, plan).items():
            arrays[Column(FIELD, key, field_type)] = array
    for index, key in enumerate(plan.tags, start=1 + len(plan.fields)):
        arrays[Column(TAG, key)] = pa.array(values[index], pa.string())
    names = column_names(arrays)
    data = pa.record_batch(
        [pa.array(values[0], pa.int64()), *(arrays[column] for column in names)],
        names=["time", *names.values()],
    )
    return _batch(data, names)


def _typed(
    values: Sequence[object], known: Sequence[FieldType], key: str, plan: ExportPlan
) -> dict[FieldType, pa.Array]:
    """A field's values as one array per type they have (normally one)."""
    kinds = {type(value) for value in values} - {type(None)}
    if not kinds:
        return {}
    found = {_field_type(kind, known, key, plan) for kind in kinds}
    if len(found) == 1:
        (field_type,) = found
        return {field_type: pa.array(values, field_type.arrow_type)}
    return {
        field_type: pa.array(
            [
                v
                if v is not None and _field_type(type(v), known, key, plan) is field_type
                else None
                for v in values
            ],
            field_type.arrow_type,
        )
        for field_type in found
    }


_PYTHON_TYPES = {float: FieldType.FLOAT, bool: FieldType.BOOLEAN, str: FieldType.STRING}


def _field_type(kind: type, known: Sequence[FieldType], key: str, plan: ExportPlan) -> FieldType:
    if kind in _PYTHON_TYPES:
        return _PYTHON_TYPES[kind]
    if kind is int:
        integers = [t for t in known if t in {FieldType.INTEGER, FieldType.UNSIGNED}]
        if len(integers) == 1:
            return integers[0]
        # MessagePack decodes signed and unsigned alike; a field stored as both cannot be split.
        raise QueryError(
            f"measurement {plan.measurement!r}, field {key!r}: stored as both integer and "
            "unsigned; tierflow cannot tell which value has which type"
        )
    raise QueryError(
        f"measurement {plan.measurement!r}, field {key!r}: a value of unexpected type {kind}"
    )


def _batch(data: pa.RecordBatch, names: Mapping[Column, str]) -> PointBatch | None:
    """Keep `time` and the columns with a value; None when no field has one."""
    by_name = {name: column for column, name in names.items()}
    present = [
        name
        for name in data.schema.names
        if name == "time" or data.column(name).null_count < data.num_rows
    ]
    if all(name == "time" or by_name[name].kind == TAG for name in present):
        return None
    tags = frozenset(name for name in present if name != "time" and by_name[name].kind == TAG)
    keys = {name: by_name[name].key for name in present if name != "time"}
    return PointBatch(
        data.select(present), tags, {name: key for name, key in keys.items() if name != key}
    )
