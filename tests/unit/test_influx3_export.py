"""The 3.x readers' pure parts, on bytes made by pyarrow as the server makes them: a Parquet
answer (tags dictionary-encoded, time in nanoseconds, typed fields) and a JSONL answer (as
arrow-json writes one: an object per row, null cells left out, times as RFC 3339 without a
zone) read back point for point, types exact, nulls absent; `information_schema.columns` rows
as a table's schema."""

from __future__ import annotations

import asyncio
import io
import json
import math
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierflow._archive import FieldType, PointBatch
from tierflow._engines.sql import _export
from tierflow._engines.sql._export import (
    TableSchema,
    jsonl_batches,
    parquet_answer_batches,
    parquet_batches,
    point_batch,
    table_schema,
)
from tierflow._errors import QueryError

SCHEMA = TableSchema(
    "m",
    ("host", "rack id"),
    {
        "f": FieldType.FLOAT,
        "i": FieldType.INTEGER,
        "u": FieldType.UNSIGNED,
        "b": FieldType.BOOLEAN,
        "s": FieldType.STRING,
    },
)

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "f": st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([-0.0, 1.0, 5e-324, 1.7976931348623157e308]),
    "i": st.integers(-(2**63), 2**63 - 1) | st.sampled_from([-(2**63), 2**63 - 1, 0]),
    "u": st.integers(0, 2**64 - 1) | st.sampled_from([2**64 - 1, 2**63]),
    "b": st.booleans(),
    "s": st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
    | st.sampled_from(['"', "\\", "\n", "é\r\n\t", "", "{}"]),
}
TAGS = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=8)

Row = tuple[int, tuple[tuple[str, str], ...], tuple[tuple[str, Any], ...]]

rows_strategy = st.lists(
    st.tuples(
        st.integers(0, 2**62),
        st.fixed_dictionaries({}, optional={"host": TAGS, "rack id": TAGS}).map(
            lambda t: tuple(sorted(t.items()))
        ),
        st.fixed_dictionaries({}, optional=VALUES)
        .filter(bool)
        .map(lambda f: tuple(sorted(f.items()))),
    ),
    max_size=40,
)


def arrow_table(rows: list[Row]) -> pa.Table:
    """The rows as the server's Arrow batches: tags Dictionary(Int32, Utf8), Timestamp(ns)."""
    columns: dict[str, pa.Array] = {
        "time": pa.array([r[0] for r in rows], pa.timestamp("ns")),
    }
    for tag in SCHEMA.tags:
        values = [dict(r[1]).get(tag) for r in rows]
        columns[tag] = pa.array(values, pa.string()).dictionary_encode()
    for key, kind in SCHEMA.fields.items():
        columns[key] = pa.array([dict(r[2]).get(key) for r in rows], kind.arrow_type)
    return pa.table(columns)


def parquet_body(rows: list[Row], row_group_size: int = 7) -> bytes:
    sink = io.BytesIO()
    pq.write_table(arrow_table(rows), sink, row_group_size=row_group_size)
    return sink.getvalue()


def rfc3339(ns: int) -> str:
    """As arrow-json renders a Timestamp(ns) without a zone (`%Y-%m-%dT%H:%M:%S%.f`)."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=ns // 10**9)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = ns % 10**9
    if fraction % 10**6 == 0 and fraction:
        return f"{text}.{fraction // 10**6:03d}"
    if fraction % 10**3 == 0 and fraction:
        return f"{text}.{fraction // 10**3:06d}"
    return f"{text}.{fraction:09d}" if fraction else text


def jsonl_body(rows: list[Row]) -> bytes:
    lines = []
    for time, tags, fields in rows:
        obj: dict[str, Any] = {**dict(tags), "time": rfc3339(time), **dict(fields)}
        lines.append(json.dumps(obj, ensure_ascii=False))
    return "".join(line + "\n" for line in lines).encode()


def points_of(batches: Iterable[PointBatch]) -> list[Row]:
    found: list[Row] = []
    for batch in batches:
        assert batch.data.column("time").type == pa.int64()
        data = batch.data.to_pydict()
        for index, time in enumerate(data["time"]):
            tags = tuple(
                sorted((t, data[t][index]) for t in batch.tags if data[t][index] is not None)
            )
            fields = tuple(
                sorted((f, data[f][index]) for f in batch.fields if data[f][index] is not None)
            )
            found.append((time, tags, fields))
    return found


def exact(rows: Iterable[Row]) -> list[tuple[Any, ...]]:
    """Rows with each value's type and bits (so -0.0 ≠ 0.0, 1 ≠ 1.0, True ≠ 1)."""

    def bits(value: Any) -> tuple[str, Any]:
        if isinstance(value, float):
            return ("float", value.hex() if not math.isnan(value) else "nan")
        return (type(value).__name__, value)

    return [(t, tags, tuple((k, bits(v)) for k, v in fields)) for t, tags, fields in rows]


async def pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@settings(max_examples=150, deadline=None)
@given(rows=rows_strategy, batch_rows=st.integers(1, 50))
def test_a_parquet_answer_reads_back_point_for_point_types_exact(
    rows: list[Row], batch_rows: int
) -> None:
    body = parquet_body(rows)
    for schema in (SCHEMA, None):  # typed by the table, or by the answer's own Arrow schema
        batches = list(
            parquet_batches(io.BytesIO(body), measurement="m", schema=schema, batch_rows=batch_rows)
        )
        assert exact(points_of(batches)) == exact(rows)
        for batch in batches:
            assert batch.tags <= {"host", "rack id"}
            for name in batch.fields:
                assert FieldType.of_arrow(batch.data.column(name).type) == SCHEMA.fields[name]


@settings(max_examples=150, deadline=None)
@given(rows=rows_strategy, piece=st.integers(1, 200), block=st.integers(1, 400))
def test_a_jsonl_answer_reads_back_point_for_point_typed_by_the_table(
    rows: list[Row], piece: int, block: int
) -> None:
    body = jsonl_body(rows)

    async def read() -> list[PointBatch]:
        return [b async for b in jsonl_batches(pieces(body, piece), SCHEMA, block_bytes=block)]

    batches = asyncio.run(read())
    assert exact(points_of(batches)) == exact(rows)
    for batch in batches:
        for name in batch.fields:
            assert batch.data.column(name).type == SCHEMA.fields[name].arrow_type


def test_json_alone_cannot_type_what_the_schema_can() -> None:
    """1.0 written for a float field comes back as JSON `1.0` or `1`; an unsigned beyond 2**63
    and an integer look alike: the table's schema decides, not the text."""
    body = b'{"time":"2026-11-01T00:00:00","f":1,"i":1,"u":18446744073709551615}\n'

    async def read() -> list[PointBatch]:
        return [b async for b in jsonl_batches(pieces(body, 5), SCHEMA)]

    (batch,) = asyncio.run(read())
    assert batch.data.schema.field("f").type == pa.float64()
    assert batch.data.column("f").to_pylist() == [1.0]
    assert batch.data.column("u").to_pylist() == [2**64 - 1]
    assert batch.data.column("time").to_pylist() == [1793491200 * 10**9]
    assert batch.fields == ("f", "i", "u")
    assert batch.tags == frozenset()


def test_a_jsonl_line_longer_than_a_megabyte_reads_back_whole() -> None:
    """One string field of 3 MiB (one JSON line longer than any fixed Arrow block) is a value
    like any other: it comes back whole, not refused as 'straddling two block boundaries'."""
    big = 'x"\\\n' * (3 << 18)
    body = (
        json.dumps({"time": "2026-11-01T00:00:00", "s": big})
        + "\n"
        + json.dumps({"time": "2026-11-01T00:00:01", "s": ""})
        + "\n"
    ).encode()

    async def read() -> list[PointBatch]:
        return [b async for b in jsonl_batches(pieces(body, 1 << 16), SCHEMA, block_bytes=1 << 20)]

    batches = asyncio.run(read())
    assert [v for b in batches for v in b.data.column("s").to_pylist()] == [big, ""]


def test_a_key_the_table_does_not_know_is_refused_not_dropped() -> None:
    body = b'{"time":"2026-11-01T00:00:00","f":1.5,"new":2}\n'

    async def read() -> list[PointBatch]:
        return [b async for b in jsonl_batches(pieces(body, 64), SCHEMA)]

    with pytest.raises(QueryError, match="does not fit the table's schema"):
        asyncio.run(read())


def test_a_parquet_answer_whose_times_lost_digits_is_refused() -> None:
    table = pa.table(
        {"time": pa.array([1_000_000], pa.timestamp("us")), "f": pa.array([1.0], pa.float64())}
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    with pytest.raises(QueryError, match="not nanoseconds"):
        list(parquet_batches(io.BytesIO(sink.getvalue()), measurement="m"))


def test_a_field_of_another_type_than_the_table_says_is_refused() -> None:
    data = pa.record_batch(
        {"time": pa.array([1], pa.timestamp("ns")), "i": pa.array([1.5], pa.float64())}
    )
    with pytest.raises(
        QueryError, match=r"column 'i' came back as double, the table types it integer"
    ):
        point_batch(data, measurement="m", schema=SCHEMA)


def test_rows_without_any_field_value_make_no_batch_and_null_columns_are_left_out() -> None:
    data = pa.record_batch(
        {
            "time": pa.array([1, 2], pa.timestamp("ns")),
            "host": pa.array(["a", None]).dictionary_encode(),
            "f": pa.array([None, None], pa.float64()),
        }
    )
    assert point_batch(data, measurement="m") is None
    data = pa.record_batch(
        {
            "time": pa.array([1, 2], pa.timestamp("ns")),
            "host": pa.array([None, None], pa.string()).dictionary_encode(),
            "s": pa.array(["", None], pa.string()),
        }
    )
    batch = point_batch(data, measurement="m")
    assert batch is not None
    assert batch.data.schema.names == ["time", "s"]  # the empty string is a value, kept
    assert batch.data.column("s").to_pylist() == ["", None]


def test_a_table_schema_from_information_schema_columns() -> None:
    rows = [
        ("time", "Timestamp(ns)"),  # DataFusion 55; older ones say Timestamp(Nanosecond, None)
        ("host", "Dictionary(Int32, Utf8)"),
        ("usage", "Float64"),
        ("n", "Int64"),
        ("big", "UInt64"),
        ("ok", "Boolean"),
        ("note", "Utf8"),
        ("a tag", "Dictionary(Int32, Utf8)"),
    ]
    schema = table_schema("cpu", rows)
    assert schema == TableSchema(
        "cpu",
        ("a tag", "host"),
        {
            "big": FieldType.UNSIGNED,
            "n": FieldType.INTEGER,
            "note": FieldType.STRING,
            "ok": FieldType.BOOLEAN,
            "usage": FieldType.FLOAT,
        },
    )
    assert table_schema("cpu", []) is None
    assert table_schema("cpu", [("time", "Timestamp(Nanosecond, None)")]) is not None
    with pytest.raises(QueryError, match=r"column 'x': type Decimal128\(10, 2\) is no InfluxDB"):
        table_schema("cpu", [("x", "Decimal128(10, 2)")])


@pytest.mark.parametrize("spool_memory", [64 << 20, 256 << 10])  # in memory; on disk, mapped
def test_a_large_parquet_answer_is_read_in_bounded_memory(
    spool_memory: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spooled, then read a row group at a time: the Arrow memory held while reading stays a
    small fraction of the whole answer decoded (what reading it in one call would hold)."""
    monkeypatch.setattr(_export, "SPOOL_MEMORY", spool_memory)
    n = 400_000
    table = pa.table(
        {
            "time": pa.array(range(n), pa.timestamp("ns")),
            "host": pa.array([f"h{i % 50}" for i in range(n)]).dictionary_encode(),
            "f": pa.array([i * 0.5 for i in range(n)], pa.float64()),
            "i": pa.array(range(n), pa.int64()),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=20_000)
    whole = pq.read_table(io.BytesIO(sink.getvalue())).nbytes
    del table
    schema = TableSchema("m", ("host",), {"f": FieldType.FLOAT, "i": FieldType.INTEGER})
    baseline = pa.total_allocated_bytes()

    async def read() -> tuple[int, int]:
        rows = peak = 0
        pieces_of_body = pieces(sink.getvalue(), 64 * 1024)
        async for batch in parquet_answer_batches(
            pieces_of_body, measurement="m", schema=schema, batch_rows=10_000
        ):
            rows += batch.num_rows
            peak = max(peak, pa.total_allocated_bytes() - baseline)
        return rows, peak

    rows, peak = asyncio.run(read())
    assert rows == n
    assert peak < whole / 5, (peak, whole)
