"""Downsampling on InfluxDB 3 (read-aggregate-write in SQL, `tierflow._engines.sql`) against
the oracle it did not compute: real influxd 1.x's own `SELECT … INTO` over the same points,
window for window.

The same line protocol goes to the real influxd and to a 3.x server: the DataFusion-backed
stand-in (`tests/influx3_standin.py`: every SQL query is executed by DataFusion, so the
aggregates are a real SQL engine's), and a live InfluxDB 3.x when `TIERFLOW_TEST_INFLUXDB3_URL`
and `…_TOKEN` are set (fresh databases, deleted afterwards; skipped, saying so, otherwise). The
3.x side runs exactly what the runner runs: the job rendered by `render_job` (a coalesced batch
of three windows), sent by the 3.x engine's `execute`. Both outputs are read back whole (3.x:
with its own `SELECT *`) and compared point for point: time, tags, each field's value and its
type. Float values are multiples of 1/8 so that sums are exact in any order (InfluxQL and
DataFusion add in different orders; neither promises an order).
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from tests.influx3_standin import TOKEN, Influx3StandIn
from tests.integration._influx3_servers import Server3
from tierflow._config import Config
from tierflow._engines.sql._engine import InfluxDB3Engine
from tierflow._errors import ConfigError
from tierflow._jobs import render_job
from tierflow._planner import Batch
from tierflow._windows import EPOCH, Window
from tierflow.testing import ThrowawayInfluxd

EVERY = timedelta(minutes=5)
OFFSET = timedelta(seconds=10)
START = datetime(2026, 3, 1, 0, 0, 10, tzinfo=UTC)  # on the offset grid
WINDOWS = 3
SUPPORTED: tuple[str, ...] = (
    "count",
    "first",
    "last",
    "max",
    "mean",
    "median",
    "min",
    "spread",
    "sum",
)
_TYPES = {"float": pa.float64(), "integer": pa.int64(), "unsigned": pa.uint64()}


def points(seed: int) -> list[str]:
    """Line protocol over the batch's range and a little beyond it on both sides: two tags
    (one of them missing on some points), a float and an int field (each missing on some
    points), whole 5-minute buckets left empty."""
    rng = random.Random(seed)
    lines = []
    first = (START - EPOCH) // timedelta(microseconds=1) * 1000 - 60 * 10**9
    span = (WINDOWS * EVERY + timedelta(minutes=2)) // timedelta(microseconds=1) * 1000
    empty = rng.randrange(WINDOWS * 5)  # one 1-minute slot never written
    for _ in range(120):
        stamp = first + rng.randrange(span)
        if (stamp - first) // (60 * 10**9) == empty:
            continue
        host = rng.choice(["a", "b", "c\\ d"])  # "c d", escaped
        tags = f",host={host}"
        if rng.random() < 0.7:
            tags += f",region={rng.choice(['eu', 'us'])}"
        fields = []
        if rng.random() < 0.85:
            fields.append(f"f={rng.randrange(-400, 400) / 8}")
        if rng.random() < 0.85 or not fields:
            fields.append(f"i={rng.randrange(-1000, 1000)}i")
        lines.append(f"cpu{tags} {','.join(fields)} {stamp}")
    # The edges: the range's first and last nanosecond are in, the ones beside them are not;
    # a bucket edge inside the range starts the next bucket.
    start = first + 60 * 10**9
    stop = start + WINDOWS * EVERY // timedelta(microseconds=1) * 1000
    edge = start + EVERY // timedelta(microseconds=1) * 1000
    lines += [
        f"cpu,host=edge f={rng.randrange(-80, 80) / 4},i={stamp % 1000}i {stamp}"
        for stamp in (start - 1, start, edge - 1, edge, stop - 1, stop)
    ]
    return lines


def influxql_into(
    influxd: ThrowawayInfluxd, db: str, aggregates: dict[str, tuple[str, ...]]
) -> None:
    """The oracle: InfluxQL's own SELECT … INTO over the batch's range (written by hand)."""
    columns = ", ".join(
        f'{fn.upper()}("{field}") AS "{field}_{fn}"'
        for field, functions in aggregates.items()
        for fn in functions
    )
    stop = START + WINDOWS * EVERY
    influxd.execute(
        f'SELECT {columns} INTO "{db}"."autogen"."cpu_5m" FROM "{db}"."autogen"."cpu" '
        f"WHERE time >= '{START:%Y-%m-%dT%H:%M:%SZ}' AND time < '{stop:%Y-%m-%dT%H:%M:%SZ}' "
        "GROUP BY time(5m, 10s), *",
        db=db,
    )


def influxd_output(influxd: ThrowawayInfluxd, db: str) -> tuple[dict[Any, Any], dict[str, str]]:
    rows = influxd.series_points('SELECT * FROM "cpu_5m" GROUP BY *', db=db)
    types: dict[str, str] = {}
    for result in influxd.query('SHOW FIELD KEYS FROM "cpu_5m"', db=db):
        for series in result.get("series", []):
            types.update(dict(series["values"]))
    found = {}
    for row in rows:
        tags = frozenset((k, row[k]) for k in ("host", "region") if row.get(k))
        fields = {
            k: (float(v) if types[k] == "float" else v)
            for k, v in row.items()
            if k in types and v is not None
        }
        found[(row["time"], tags)] = fields
    return found, types


def standin_output(server: Server3) -> tuple[dict[Any, Any], dict[str, pa.DataType]]:
    table = server.sql("warm", 'SELECT * FROM "cpu_5m"')
    types = {f.name: f.type for f in table.schema if f.name not in {"time", "host", "region"}}
    found = {}
    for row in table.to_pylist():
        stamp = (row["time"].replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1) * 1000
        tags = frozenset((k, row[k]) for k in ("host", "region") if row.get(k))
        found[(stamp, tags)] = {k: v for k, v in row.items() if k in types and v is not None}
    return found, types


def config(server: Server3 | Influx3StandIn, aggregates: dict[str, tuple[str, ...]]) -> Config:
    name = str if isinstance(server, Influx3StandIn) else server.name
    return Config.from_mapping(
        {
            "connections": {
                "v3": {"kind": "influxdb3", "url": server.url, "token": {"env": "V3_TOKEN"}}
            },
            "tiers": {
                "hot": {"connection": "v3", "bucket": name("hot")},
                "warm": {"connection": "v3", "bucket": name("warm")},
            },
            "jobs": {
                "cpu_5m": {
                    "kind": "downsample",
                    "source": "hot",
                    "dest": "warm",
                    "every": "5m",
                    "offset": "10s",
                    "start": "2026-03-01T00:00:10Z",
                    "measurements": ["cpu"],
                    "into": "{{ measurement }}_5m",
                    "aggregates": aggregates,
                }
            },
        }
    )


@pytest.mark.parametrize("seed", range(1, 9))
async def test_downsample_on_3x_equals_select_into_on_influxd(
    seed: int,
    influx3_server: Server3,
    influxd: ThrowawayInfluxd,
    db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = influx3_server
    monkeypatch.setenv("V3_TOKEN", server.token)
    aggregates = {"f": SUPPORTED, "i": SUPPORTED}
    lines = points(seed)
    influxd.write(lines, db=db)
    server.write("hot", "\n".join(lines))
    server.create_database("warm")

    influxql_into(influxd, db, aggregates)
    expected, expected_types = influxd_output(influxd, db)

    cfg = config(server, aggregates)
    batch = Batch.span(Window(START, START + EVERY), WINDOWS)
    query = render_job(cfg, "cpu_5m", batch)
    engine = InfluxDB3Engine("v3", cfg.connections["v3"])  # type: ignore[arg-type]
    try:
        execution = await engine.execute(query, database=server.name("warm"))
    finally:
        await engine.aclose()
    found, found_types = standin_output(server)

    assert expected, "the oracle wrote nothing: the test would prove nothing"
    assert {key: _TYPES[kind] for key, kind in expected_types.items()} == found_types
    assert sorted(found) == sorted(expected)  # the same points: times (bucket starts) and tags
    for key, fields in expected.items():
        assert found[key] == fields, key
    for key, fields in found.items():
        for name, value in fields.items():
            assert type(value) is type(expected[key][name]), (key, name)
    assert execution.points_written == len(expected)
    # Every bucket start is on the job's grid (epoch + offset + k × every), inside the batch.
    stop_ns = (START + WINDOWS * EVERY - EPOCH) // timedelta(microseconds=1) * 1000
    start_ns = (START - EPOCH) // timedelta(microseconds=1) * 1000
    for stamp, _ in found:
        assert start_ns <= stamp < stop_ns
        assert (stamp - start_ns) % (EVERY // timedelta(microseconds=1) * 1000) == 0


async def test_tags_filter_and_the_sent_requests(
    influx3: Influx3StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's `tags` narrow the read; the read goes to the source database as Parquet with
    the bearer token, the write to the dest with accept_partial=false, nanoseconds."""
    monkeypatch.setenv("V3_TOKEN", TOKEN)
    influx3.write("hot", "\n".join(points(7)))
    influx3.create_database("warm")
    base = config(influx3, {"i": ("sum",)})
    job = base.jobs["cpu_5m"].model_copy(update={"tags": {"host": "c d"}})
    cfg = Config(base.path, base.state, base.connections, base.tiers, {"cpu_5m": job})
    query = render_job(cfg, "cpu_5m", Batch.span(Window(START, START + EVERY), WINDOWS))
    engine = InfluxDB3Engine("v3", cfg.connections["v3"])  # type: ignore[arg-type]
    try:
        await engine.execute(query, database="warm")
    finally:
        await engine.aclose()
    hosts = {row["host"] for row in influx3.sql("warm", 'SELECT * FROM "cpu_5m"').to_pylist()}
    assert hosts == {"c d"}
    reads = [r for r in influx3.requests if r.path == "/api/v3/query_sql"]
    assert reads
    assert all(r.json()["format"] in {"json", "parquet"} for r in reads)
    assert {r.json()["db"] for r in reads} == {"hot"}
    writes = [r for r in influx3.requests if r.path == "/api/v3/write_lp"]
    assert writes
    for r in writes:
        assert r.query == {"db": "warm", "precision": "nanosecond", "accept_partial": "false"}
        assert r.headers["Authorization"] == f"Bearer {TOKEN}"


def test_refused_aggregates_give_the_reason(tmp_path: Any) -> None:
    """`mode` has no exact SQL equivalent: refused by config validation with the reason."""
    with pytest.raises(ConfigError) as caught:
        Config.from_mapping(
            {
                "connections": {
                    "v3": {"kind": "influxdb3", "url": "http://x:8181", "token": {"env": "T"}}
                },
                "tiers": {
                    "hot": {"connection": "v3", "bucket": "hot"},
                    "warm": {"connection": "v3", "bucket": "warm"},
                },
                "jobs": {
                    "j": {
                        "kind": "downsample",
                        "source": "hot",
                        "dest": "warm",
                        "every": "5m",
                        "start": "2026-03-01T00:00:00Z",
                        "measurements": ["cpu"],
                        "into": "{{ measurement }}_5m",
                        "aggregates": {"f": ["mode"]},
                    }
                },
            }
        )
    assert "SQL has no mode() aggregate" in str(caught.value)


async def test_a_listed_measurement_with_no_table_yet_writes_nothing(
    influx3: Influx3StandIn, influxd: ThrowawayInfluxd, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job names a measurement nothing was ever written to (a new deployment, a source
    that starts later): InfluxQL's SELECT … INTO from it writes nothing and succeeds (the
    oracle, asked here), so the 3.x run must too, and still write the measurement that has
    data; not fail the window on 3.x's "table not found"."""
    result = influxd.query(
        f'SELECT SUM("i") AS "i_sum" INTO "{db}"."autogen"."nosuch_5m" '
        f'FROM "{db}"."autogen"."nosuch" WHERE time >= \'2026-03-01T00:00:10Z\' '
        "AND time < '2026-03-01T00:15:10Z' GROUP BY time(5m, 10s), *",
        db=db,
    )
    assert "error" not in result[0], result
    assert result[0]["series"][0]["values"][0][1] == 0  # written: 0

    monkeypatch.setenv("V3_TOKEN", TOKEN)
    influx3.write("hot", "\n".join(points(3)))
    influx3.create_database("warm")
    base = config(influx3, {"i": ("sum",)})
    job = base.jobs["cpu_5m"].model_copy(update={"measurements": ("cpu", "nosuch")})
    cfg = Config(base.path, base.state, base.connections, base.tiers, {"cpu_5m": job})
    query = render_job(cfg, "cpu_5m", Batch.span(Window(START, START + EVERY), WINDOWS))
    engine = InfluxDB3Engine("v3", cfg.connections["v3"])  # type: ignore[arg-type]
    try:
        execution = await engine.execute(query, database="warm")
    finally:
        await engine.aclose()
    written = influx3.sql("warm", 'SELECT * FROM "cpu_5m"').to_pylist()
    assert written
    assert execution.points_written == len(written)


def _sums(rows: list[dict[str, Any]]) -> dict[Any, Any]:
    """{(time ns, tags): i_sum} of rows read back (influxd's or the stand-in's)."""
    found = {}
    for row in rows:
        stamp = row["time"]
        if isinstance(stamp, datetime):
            stamp = (stamp.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1) * 1000
        tags = frozenset((k, row[k]) for k in ("host", "region") if row.get(k))
        found[(stamp, tags)] = row["i_sum"]
    return found


@pytest.mark.parametrize("region", ["", "eu"])
async def test_a_tags_filter_on_an_absent_tag_selects_as_influxql_does(
    region: str,
    influx3: Influx3StandIn,
    influxd: ThrowawayInfluxd,
    db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """InfluxQL reads a tag a point lacks as "": `region = ''` selects the points without
    one, `region = 'eu'` none of a measurement that never had the tag. 3.x stores an absent
    tag as null (and a table that never had it has no such column, which DataFusion refuses
    to name). The oracle is influxd's own SELECT … INTO with the same WHERE, for `cpu` (some
    points lack `region`) and `mem` (none has it)."""
    lines = points(5)
    stamps = [int(line.rsplit(" ", 1)[1]) for line in lines]
    lines += [f"mem,host=a i={n}i {stamp + 1}" for n, stamp in enumerate(stamps)]
    influxd.write(lines, db=db)
    stop = START + WINDOWS * EVERY
    expected = {}
    for measurement in ("cpu", "mem"):
        influxd.execute(
            f'SELECT SUM("i") AS "i_sum" INTO "{db}"."autogen"."{measurement}_5m" '
            f'FROM "{db}"."autogen"."{measurement}" '
            f"WHERE time >= '{START:%Y-%m-%dT%H:%M:%SZ}' AND time < '{stop:%Y-%m-%dT%H:%M:%SZ}' "
            f"AND \"region\" = '{region}' GROUP BY time(5m, 10s), *",
            db=db,
        )
        expected[measurement] = _sums(
            influxd.series_points(f'SELECT * FROM "{measurement}_5m" GROUP BY *', db=db)
        )
    assert expected["cpu"], "the oracle wrote nothing: the test would prove nothing"
    assert bool(expected["mem"]) == (region == "")

    monkeypatch.setenv("V3_TOKEN", TOKEN)
    influx3.write("hot", "\n".join(lines))
    influx3.create_database("warm")
    base = config(influx3, {"i": ("sum",)})
    job = base.jobs["cpu_5m"].model_copy(
        update={"measurements": ("cpu", "mem"), "tags": {"region": region}}
    )
    cfg = Config(base.path, base.state, base.connections, base.tiers, {"cpu_5m": job})
    query = render_job(cfg, "cpu_5m", Batch.span(Window(START, START + EVERY), WINDOWS))
    engine = InfluxDB3Engine("v3", cfg.connections["v3"])  # type: ignore[arg-type]
    try:
        await engine.execute(query, database="warm")
    finally:
        await engine.aclose()
    listed = influx3.sql(
        "warm", "SELECT table_name FROM information_schema.tables WHERE table_schema = 'iox'"
    )
    tables = {row["table_name"] for row in listed.to_pylist()}
    assert tables == {f"{m}_5m" for m, rows in expected.items() if rows}
    for measurement in sorted(tables):
        found = _sums(influx3.sql("warm", f'SELECT * FROM "{measurement}"').to_pylist())
        assert found == expected[measurement.removesuffix("_5m")], measurement


async def test_an_aggregate_of_a_field_a_table_lacks_is_left_out_as_influxql_does(
    influx3: Influx3StandIn, influxd: ThrowawayInfluxd, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's aggregates apply to each of its measurements; `mem` never had the field `f`.
    InfluxQL's SELECT … INTO from `mem` writes the aggregates of the fields it has and leaves
    those of `f` out (the oracle, asked here); 3.x must too, not fail the window on
    DataFusion's "No field named f"."""
    lines = points(6)
    stamps = [int(line.rsplit(" ", 1)[1]) for line in lines]
    lines += [f"mem,host=a i={n}i {stamp + 1}" for n, stamp in enumerate(stamps)]
    influxd.write(lines, db=db)
    aggregates = {"f": SUPPORTED, "i": ("sum", "max")}
    stop = START + WINDOWS * EVERY
    columns = ", ".join(
        f'{fn.upper()}("{field}") AS "{field}_{fn}"'
        for field, functions in aggregates.items()
        for fn in functions
    )
    expected = {}
    for measurement in ("cpu", "mem"):
        influxd.execute(
            f'SELECT {columns} INTO "{db}"."autogen"."{measurement}_5m" '
            f'FROM "{db}"."autogen"."{measurement}" '
            f"WHERE time >= '{START:%Y-%m-%dT%H:%M:%SZ}' AND time < '{stop:%Y-%m-%dT%H:%M:%SZ}' "
            "GROUP BY time(5m, 10s), *",
            db=db,
        )
        rows = influxd.series_points(f'SELECT * FROM "{measurement}_5m" GROUP BY *', db=db)
        expected[measurement] = {
            (row["time"], frozenset((k, row[k]) for k in ("host", "region") if row.get(k))): {
                k: float(v) if isinstance(v, int) and k.startswith("f_") and k != "f_count" else v
                for k, v in row.items()
                if k.startswith(("f_", "i_")) and v is not None
            }
            for row in rows
        }
    assert expected["mem"], "the oracle wrote nothing of mem: the test would prove nothing"
    assert all(set(fields) == {"i_sum", "i_max"} for fields in expected["mem"].values())

    monkeypatch.setenv("V3_TOKEN", TOKEN)
    influx3.write("hot", "\n".join(lines))
    influx3.create_database("warm")
    base = config(influx3, aggregates)
    job = base.jobs["cpu_5m"].model_copy(update={"measurements": ("cpu", "mem")})
    cfg = Config(base.path, base.state, base.connections, base.tiers, {"cpu_5m": job})
    query = render_job(cfg, "cpu_5m", Batch.span(Window(START, START + EVERY), WINDOWS))
    engine = InfluxDB3Engine("v3", cfg.connections["v3"])  # type: ignore[arg-type]
    try:
        await engine.execute(query, database="warm")
    finally:
        await engine.aclose()
    for measurement in ("cpu", "mem"):
        found = {}
        for row in influx3.sql("warm", f'SELECT * FROM "{measurement}_5m"').to_pylist():
            stamp = (row["time"].replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1) * 1000
            tags = frozenset((k, row[k]) for k in ("host", "region") if row.get(k))
            fields = {k: v for k, v in row.items() if k.startswith(("f_", "i_"))}
            found[(stamp, tags)] = {k: v for k, v in fields.items() if v is not None}
        assert found == expected[measurement], measurement


async def test_the_fingerprint_of_an_empty_tag_value_counts_the_points_without_the_tag(
    influx3: Influx3StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`recheck` compares fingerprints of what the downsample reads: with `tags = { region =
    "" }` that is the points without `region` (InfluxQL's reading), so the fingerprint must
    count them; the expected count is worked out from the line protocol by hand."""
    from tierflow._jobs import render_fingerprint

    lines = points(4)
    start_ns = (START - EPOCH) // timedelta(microseconds=1) * 1000
    stop_ns = start_ns + WINDOWS * EVERY // timedelta(microseconds=1) * 1000
    expected = 0
    for line in lines:
        key, fields, stamp = re.split(r"(?<!\\) ", line)
        names = {field.split("=")[0] for field in fields.split(",")}
        if "region=" not in key and "i" in names and start_ns <= int(stamp) < stop_ns:
            expected += 1
    assert expected
    monkeypatch.setenv("V3_TOKEN", TOKEN)
    influx3.write("hot", "\n".join(lines))
    base = config(influx3, {"i": ("sum",)})
    job = base.jobs["cpu_5m"].model_copy(update={"tags": {"region": ""}})
    cfg = Config(base.path, base.state, base.connections, base.tiers, {"cpu_5m": job})
    batch = Batch.span(Window(START, START + EVERY), WINDOWS)
    query = render_fingerprint(cfg, "cpu_5m", batch, {"cpu": {"i": {"integer"}}})
    engine = InfluxDB3Engine("v3", cfg.connections["v3"])  # type: ignore[arg-type]
    try:
        found = await engine.query(query.text, database="hot")
    finally:
        await engine.aclose()
    counts = [
        value
        for series in found
        for row in series.values
        for name, value in zip(series.columns, row, strict=True)
        if name.startswith("count") or "count" in name
    ]
    assert sum(v or 0 for v in counts) == expected, (query.text, found)


async def test_the_fingerprint_of_a_measurement_or_field_not_there_yet_does_not_fail(
    influx3: Influx3StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `recheck`, the source fingerprint runs before the downsample in the same attempt:
    a measurement with no table yet, or a field a table lacks, must not fail it (the
    downsample writes what InfluxQL writes there). The fingerprint still moves when a late
    point lands in a field that is there."""
    from tierflow._runner._executors import source_fingerprints

    monkeypatch.setenv("V3_TOKEN", TOKEN)
    influx3.write("hot", "\n".join(points(2)))
    base = config(influx3, {"i": ("sum",), "nof": ("max",)})
    job = base.jobs["cpu_5m"].model_copy(
        update={"measurements": ("cpu", "nosuch"), "recheck": timedelta(hours=1)}
    )
    cfg = Config(base.path, base.state, base.connections, base.tiers, {"cpu_5m": job})
    engine = InfluxDB3Engine("v3", cfg.connections["v3"])  # type: ignore[arg-type]

    class Resources:
        config = cfg
        archives = None

        def engine(self, connection: str) -> InfluxDB3Engine:
            return engine

        def engine_of(self, job: str) -> InfluxDB3Engine:
            return engine

    batch = Batch.span(Window(START, START + EVERY), WINDOWS)
    try:
        before = await source_fingerprints(Resources(), "cpu_5m", batch)  # type: ignore[arg-type]
        late = (START - EPOCH) // timedelta(microseconds=1) * 1000 + 7
        influx3.write("hot", f"cpu,host=late i=5i {late}")
        after = await source_fingerprints(Resources(), "cpu_5m", batch)  # type: ignore[arg-type]
    finally:
        await engine.aclose()
    assert before[START] != after[START]
    assert all(before[w.start] == after[w.start] for w in batch.windows[1:])
