"""The 2.x half of the bulk path: `FluxEngine.write` and `FluxEngine.stream` against the recording
stand-in (`tests/influx2_standin.py`: the request contract only, it runs no Flux), the pivoted
annotated-CSV reader against CSV built here independently, and every bulk script tierflow sends
to 2.x (export, count, relay) judged by the official Flux checker (npm `flux-lsp-node`).

What a real server makes of these scripts is the live suite's
(`tests/integration/test_lifecycle_influxdb2.py`, run when a 2.x URL is given)."""

from __future__ import annotations

import gzip
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fluxcheck import FluxChecker, flux_checker, string_literals, walk
from tests.influx2_standin import (
    ROTATED,
    TOKEN,
    Point,
    StandIn,
    annotated_csv,
    error_answer,
    error_csv,
    influxdb2_connection,
    pivoted_csv,
    unpivoted_csv,
)
from tierflow._archive import PointBatch
from tierflow._config import parse_config
from tierflow._engines.flux._engine import FluxEngine
from tierflow._engines.flux._export import (
    annotated_batches,
    count_script,
    export_flux,
    export_script,
    field_counts,
)
from tierflow._errors import EngineError, QueryError, TransientEngineError
from tierflow._jobs import render_relay
from tierflow._planner import Batch
from tierflow._windows import Window

__all__ = ["flux_checker"]

T0 = datetime(2026, 11, 1, tzinfo=UTC)
NS = 1_000_000_000
BODY = b"m,host=a v=1.5 1790000000000000000\nm,host=b v=2i 1790000000000000001\n"


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    server = StandIn(tokens={TOKEN}, buckets={"hot", "warm", "db/rp"})
    await server.start()
    yield server
    await server.stop()


def engine_for(standin: StandIn, token_file: Path, **overrides: object) -> FluxEngine:
    return FluxEngine("cloud", influxdb2_connection(standin.url, token_file, **overrides))


@pytest.fixture
async def engine(standin: StandIn, token_file: Path) -> AsyncIterator[FluxEngine]:
    flux = engine_for(standin, token_file)
    yield flux
    await flux.aclose()


# -- write -------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
async def test_a_write_posts_the_body_to_the_org_and_bucket_in_nanoseconds(
    standin: StandIn, token_file: Path, compress: bool
) -> None:
    flux = engine_for(standin, token_file, gzip=compress)
    try:
        sent = await flux.write(BODY, database="hot")
    finally:
        await flux.aclose()

    assert standin.paths() == ["/api/v2/buckets", "/api/v2/write"]
    (write,) = [r for r in standin.requests if r.path == "/api/v2/write"]
    assert write.method == "POST"
    assert write.query == {"org": "acme", "bucket": "hot", "precision": "ns"}
    assert write.headers["Authorization"] == f"Token {TOKEN}"
    assert write.headers["Content-Type"].startswith("text/plain")
    assert write.body == BODY  # the stand-in gunzips what arrives gzipped
    assert (write.headers.get("Content-Encoding") == "gzip") is compress
    assert sent == (len(gzip.compress(BODY, compresslevel=1)) if compress else len(BODY))


async def test_a_bucket_named_with_a_slash_is_written_as_named(
    standin: StandIn, engine: FluxEngine
) -> None:
    await engine.write(BODY, database="db", retention_policy="rp")
    assert standin.requests[-1].query["bucket"] == "db/rp"


async def test_a_bucket_of_another_org_is_refused_before_anything_is_written(
    standin: StandIn, engine: FluxEngine
) -> None:
    with pytest.raises(QueryError, match="'elsewhere' is not a bucket of org 'acme'"):
        await engine.write(BODY, database="elsewhere")
    assert "/api/v2/write" not in standin.paths()


@pytest.mark.parametrize(
    ("status", "kind", "retry_after"),
    [
        (400, QueryError, None),  # malformed line protocol: the whole body is refused
        (413, QueryError, None),
        (422, QueryError, None),  # beyond the bucket's retention
        (429, TransientEngineError, 7.0),
        (503, TransientEngineError, 2.0),
        (500, TransientEngineError, None),
    ],
)
async def test_every_refused_write_raises_as_what_it_is(
    standin: StandIn,
    engine: FluxEngine,
    status: int,
    kind: type[EngineError],
    retry_after: float | None,
) -> None:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after else {}
    standin.script("/api/v2/write", error_answer(status, "the server's reason", **headers))
    with pytest.raises(EngineError) as caught:
        await engine.write(BODY, database="hot")
    assert type(caught.value) is kind
    assert caught.value.status == status
    assert caught.value.retry_after == retry_after
    assert "writing to bucket 'hot'" in str(caught.value)
    assert "the server's reason" in str(caught.value)


async def test_a_write_refused_with_401_fetches_the_token_again_once(
    standin: StandIn, engine: FluxEngine, token_file: Path
) -> None:
    await engine.write(BODY, database="hot")
    token_file.write_text(ROTATED, encoding="utf-8")  # noqa: ASYNC240 (a test's setup)
    standin.tokens = {ROTATED}
    before = len(standin.requests)

    await engine.write(BODY, database="hot")

    retried = standin.requests[before:]
    assert [r.path for r in retried] == ["/api/v2/write", "/api/v2/write"]
    assert [r.headers["Authorization"] for r in retried] == [f"Token {TOKEN}", f"Token {ROTATED}"]
    assert retried[-1].body == BODY


# -- stream and the pivoted reader ---------------------------------------------------------------


def as_points(batches: Iterable[PointBatch]) -> set[Point]:
    """The points the batches hold, rows of one point merged (unpivoted reads give a row per
    field value)."""
    found: dict[tuple[int, tuple[tuple[str, str], ...]], dict[str, Any]] = defaultdict(dict)
    for batch in batches:
        data = batch.data.to_pydict()
        for index, time in enumerate(data["time"]):
            tags = tuple(sorted((t, data[t][index]) for t in batch.tags if data[t][index]))
            fields = {f: data[f][index] for f in batch.fields if data[f][index] is not None}
            found[(time, tags)].update(fields)
    return {(time, tags, tuple(sorted(f.items()))) for (time, tags), f in found.items()}


def by_point(points: Iterable[Point]) -> set[Point]:
    """Points merged per (time, series), as the server stores them."""
    merged: dict[tuple[int, tuple[tuple[str, str], ...]], dict[str, Any]] = defaultdict(dict)
    for time, tags, fields in points:
        merged[(time, tags)].update(fields)
    return {(time, tags, tuple(sorted(f.items()))) for (time, tags), f in merged.items()}


async def pieces_of(body: bytes, sizes: Iterator[int]) -> AsyncIterator[bytes]:
    position = 0
    while position < len(body):
        size = next(sizes)
        yield body[position : position + size]
        position += size


tag_names = st.sampled_from(["host", "region", "rack id", "a,b", 'q"t'])
tag_values = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=8)
field_values = {
    "usage": st.floats(allow_nan=False, allow_infinity=False),
    "count": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "ok": st.booleans(),
    # Not "": annotated CSV writes an empty string and a null alike (an archive's count check
    # then fails the window rather than lose the value).
    "note": st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12),
}
points_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=4 * 10**18),
        st.dictionaries(tag_names, tag_values, max_size=3).map(lambda t: tuple(sorted(t.items()))),
        st.fixed_dictionaries({}, optional=field_values)
        .filter(bool)
        .map(lambda f: tuple(sorted(f.items()))),
    ),
    max_size=40,
)


@pytest.mark.parametrize("build", [pivoted_csv, unpivoted_csv])
@settings(max_examples=150, deadline=None)
@given(
    points=points_strategy,
    sizes=st.lists(st.integers(min_value=1, max_value=300), min_size=1),
    block_bytes=st.integers(min_value=1, max_value=5000),
)
async def test_annotated_csv_reads_back_point_for_point_whatever_the_cuts(
    build: Callable[[list[Point]], bytes], points: list[Point], sizes: list[int], block_bytes: int
) -> None:
    body = build(points)
    cuts = iter(sizes * (len(body) // len(sizes) + 1) or [1])
    batches = [
        batch async for batch in annotated_batches(pieces_of(body, cuts), block_bytes=block_bytes)
    ]
    expected = by_point(points)
    assert as_points(batches) == expected
    if build is pivoted_csv:  # one row per point, never two
        assert sum(batch.num_rows for batch in batches) == len(expected)
    for batch in batches:
        for name in batch.fields:  # types as the server said: 1.0 stays a float, 1 an integer
            kinds = {type(v) for v in batch.data.column(name).to_pylist() if v is not None}
            assert len(kinds) <= 1


async def test_a_field_with_two_types_reads_unpivoted_with_each_value_typed() -> None:
    # An integer field in one shard, a float in the next: two tables, two datatypes.
    points: list[Point] = [
        (1, (("host", "a"),), (("n", 3), ("temp", 0.5))),
        (2, (("host", "a"),), (("n", 4.25),)),
        (3, (("host", "a"),), (("n", 2**60 + 1),)),
    ]
    body = unpivoted_csv(points)
    assert body.count(b"#datatype") == 3  # n as long, n as double, temp as double

    async def stream() -> AsyncIterator[bytes]:
        yield body

    batches = [batch async for batch in annotated_batches(stream())]
    assert as_points(batches) == by_point(points)
    types = {str(b.data.schema.field("n").type) for b in batches if "n" in b.fields}
    assert types == {"int64", "double"}
    (big,) = [b for b in batches if "n" in b.fields and b.data.column("n").type == pa.int64()]
    assert 2**60 + 1 in big.data.column("n").to_pylist()  # no float detour


def test_the_strategy_makes_nasty_points() -> None:
    # The property above is only worth as much as its inputs: CSV quoting, several blocks.
    body = pivoted_csv(
        [(1, (("a,b", 'x"y'),), (("note", 'he said "hi",\nthen left'),)), (2, (), (("ok", True),))]
    )
    assert body.count(b"#datatype") == 2
    assert b'"he said ""hi"",\nthen left"' in body


async def test_a_body_with_plain_newlines_reads_the_same() -> None:
    # 2.x writes CRLF; a proxy or a 1.8 compatibility layer may not.
    points: list[Point] = [
        (5, (("host", "a"),), (("usage", 1.5),)),
        (6, (("host", "a"),), (("usage", 2.5),)),
        (5, (("host", "b"), ("rack", "r1")), (("count", 7), ("ok", True))),
    ]
    body = pivoted_csv(points).replace(b"\r\n", b"\n")
    assert b"\r" not in body

    async def stream() -> AsyncIterator[bytes]:
        for index in range(0, len(body), 5):
            yield body[index : index + 5]

    batches = [batch async for batch in annotated_batches(stream(), block_bytes=40)]
    assert as_points(batches) == by_point(points)


async def test_an_error_table_in_the_middle_of_an_export_raises() -> None:
    body = pivoted_csv([(1, (("host", "a"),), (("usage", 1.0),))]) + error_csv("out of memory")

    async def stream() -> AsyncIterator[bytes]:
        yield body

    with pytest.raises(QueryError, match="out of memory"):
        [batch async for batch in annotated_batches(stream())]


async def test_a_response_cut_inside_the_annotations_is_transient() -> None:
    body = pivoted_csv([(1, (("host", "a"),), (("usage", 1.0),))])
    cut = body + b"#datatype,string,long,dateTime:RFC3339Nano\r\n#group,false"

    async def stream() -> AsyncIterator[bytes]:
        yield cut

    with pytest.raises(TransientEngineError):
        [batch async for batch in annotated_batches(stream())]


async def test_export_streams_a_nanosecond_script_and_reads_its_points(
    standin: StandIn, engine: FluxEngine
) -> None:
    points: list[Point] = [
        (T0.timestamp().__int__() * NS + 1, (("host", "a"),), (("usage", 0.5), ("count", 3))),
        (T0.timestamp().__int__() * NS + NS, (("host", "b"),), (("ok", False),)),
    ]
    standin.default_csv = pivoted_csv(points)

    batches = [
        batch
        async for batch in export_flux(
            engine,
            export_script(bucket="hot", measurement="cpu", start=T0, stop=T0 + timedelta(hours=1)),
        )
    ]

    assert as_points(batches) == by_point(points)
    (sent,) = [r for r in standin.requests if r.path == "/api/v2/query"]
    body = sent.json()
    assert body["dialect"]["dateTimeFormat"] == "RFC3339Nano"
    assert body["query"] == export_script(
        bucket="hot", measurement="cpu", start=T0, stop=T0 + timedelta(hours=1)
    )


async def test_field_counts_sums_the_count_of_each_field(
    standin: StandIn, engine: FluxEngine
) -> None:
    # After `group(columns: ["_field"]) |> sum()`: a table per field, `_field` its group key.
    standin.default_csv = annotated_csv(
        [
            (["_field", "_value"], ["string", "long"], [["usage", "120"]]),
            (["_field", "_value"], ["string", "long"], [["ok", "7"]]),
        ],
        group_key=[["_field"], ["_field"]],
    )
    script = count_script(bucket="hot", measurement="cpu", start=T0, stop=T0 + timedelta(1))
    assert await field_counts(engine, script) == {"usage": 120, "ok": 7}


# -- the scripts, judged by the official checker ----------------------------------------------

CHECKER_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)


def called(tree: dict[str, Any]) -> list[str]:
    return [
        node["callee"]["name"]
        for node in walk(tree)
        if node["type"] == "CallExpression" and node.get("callee", {}).get("type") == "Identifier"
    ]


@CHECKER_SETTINGS
@given(bucket=names, measurement=names, tags=st.dictionaries(names, names, max_size=2))
def test_export_and_count_scripts_type_check_and_hold_exactly_their_inputs(
    flux_checker: FluxChecker, bucket: str, measurement: str, tags: dict[str, str]
) -> None:
    stop = T0 + timedelta(hours=1)
    for script, last, constants in (
        (
            export_script(bucket=bucket, measurement=measurement, start=T0, stop=stop, tags=tags),
            "pivot",
            ["_start", "_stop", "_measurement", "_time", "_field", "_value"],
        ),
        (
            count_script(bucket=bucket, measurement=measurement, start=T0, stop=stop, tags=tags),
            "sum",
            ["_field"],
        ),
    ):
        assert flux_checker.is_valid(script), script
        tree = flux_checker.ast(script)
        literals = string_literals(tree)
        chosen = [bucket, measurement, *(x for kv in sorted(tags.items()) for x in kv)]
        assert literals[: len(chosen)] == chosen
        assert literals[len(chosen) :] == constants  # nothing else came in with the inputs
        calls = called(tree)
        assert calls[0] == "from"
        assert calls[-1] == last
        assert "to" not in calls


def relay_config(source_kind: str) -> Any:
    one = {"kind": "influxdb1", "url": "http://127.0.0.1:1"}
    two = {"kind": "influxdb2", "url": "http://127.0.0.1:2", "org": "acme", "token": {"env": "T"}}
    raw = {
        "connections": {
            "edge": one if source_kind == "influxdb1" else two,
            "central": two if source_kind == "influxdb1" else one,
        },
        "tiers": {
            "hot": {"connection": "edge", "bucket": "hot" if source_kind == "influxdb2" else "db"},
            "warm": {
                "connection": "central",
                "bucket": "warm" if source_kind == "influxdb1" else "db/warm",
            },
        },
        "jobs": {
            "down": {
                "kind": "downsample",
                "source": "hot",
                "dest": "warm",
                "start": T0,
                "every": "5m",
                "measurements": ["cpu", "mem"],
                "into": "{{ measurement }}_5m",
                "aggregates": {"usage": ["mean", "count", "max"], "ok": ["last"]},
            }
        },
    }
    return parse_config(raw, Path("/nonexistent/tierflow.toml"))


def test_a_relay_out_of_2x_reads_pivoted_aggregates_and_writes_nothing_itself(
    flux_checker: FluxChecker,
) -> None:
    config = relay_config("influxdb2")
    windows = Batch(
        tuple(
            Window(T0 + i * timedelta(minutes=5), T0 + (i + 1) * timedelta(minutes=5))
            for i in range(3)
        )
    )
    relays = render_relay(config, "down", windows)
    assert [(m, into) for m, into, _ in relays] == [("cpu", "cpu_5m"), ("mem", "mem_5m")]
    for measurement, _, query in relays:
        assert query.dialect == "flux"
        assert flux_checker.is_valid(query.text), query.text
        tree = flux_checker.ast(query.text)
        calls = called(tree)
        assert "to" not in calls
        assert calls.count("aggregateWindow") == 4
        assert calls[-2:] == ["pivot", "yield"]
        literals = string_literals(tree)
        assert measurement in literals
        assert {"usage_mean", "usage_count", "usage_max", "ok_last"} <= set(literals)


def test_a_relay_out_of_1x_is_a_select_without_into() -> None:
    config = relay_config("influxdb1")
    windows = Batch((Window(T0, T0 + timedelta(minutes=5)),))
    for _, _, query in render_relay(config, "down", windows):
        assert query.dialect == "influxql"
        assert "INTO" not in query.text
        # Without fill(none) a SELECT answers empty buckets too (count 0), which INTO never writes.
        assert query.text.endswith("GROUP BY time(5m), * fill(none)")


def test_the_reader_keeps_floats_that_look_like_integers() -> None:
    # A float 2.0 travels as "2" in CSV: its type comes from #datatype, never from its text.
    body = annotated_csv(
        [(["_time", "v"], ["dateTime:RFC3339Nano", "double"], [["1970-01-01T00:00:01Z", "2"]])],
        group_key=[[]],
    )

    async def read() -> list[PointBatch]:
        async def stream() -> AsyncIterator[bytes]:
            yield body

        return [b async for b in annotated_batches(stream())]

    import asyncio

    (batch,) = asyncio.run(read())
    (value,) = batch.data.column("v").to_pylist()
    assert isinstance(value, float)
    assert math.isclose(value, 2.0)
    assert batch.data.column("time").to_pylist() == [NS]
