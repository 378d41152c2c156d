"""The InfluxDB 3.x stand-in (`tests/influx3_standin.py`) against oracles it did not compute.

- Its line protocol parser (a port of 3.x's Rust crate) against the real influxd 1.x: the same
  bodies written to both, the typed points read back compared; where the two grammars differ,
  each side is asserted (1.x by influxd, 3.x by the crate's rules and its own unit tests).
- DataFusion's SQL aggregates over points against influxd's InfluxQL over the same points
  (`GROUP BY time(1h, 15m)` against `date_bin`), and against values computed here.
- The documented API (formats, errors, auth, `configure/database`) through the checks in
  `_influx3_checks.py`, which `test_influxdb3_live.py` runs against a real 3.x server.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import math
import random
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.influx3_standin import (
    ROTATED,
    TOKEN,
    Influx3StandIn,
    ThreadedInflux3StandIn,
    parse_retention,
)
from tests.integration import _influx3_checks as checks
from tests.integration.conftest import TierData, field_types, read_tier
from tests.lineprotocol3 import LineError, ParsedLine, _fast, _Parser, parse_lines
from tierflow._lineprotocol import LineProtocolError, encode_batch
from tierflow.testing import InfluxdError, ThrowawayInfluxd

NS = 1_000_000_000
KINDS = {"Float64": "float", "Int64": "integer", "UInt64": "uinteger", "Utf8": "string"}
KINDS["Boolean"] = "boolean"


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def standin_tier(server: Influx3StandIn, db: str) -> tuple[TierData, dict[str, dict[str, str]]]:
    """What the stand-in holds, read through DataFusion SQL in `read_tier`'s shape, and each
    table's field types from `information_schema.columns`."""
    data: TierData = {}
    types: dict[str, dict[str, str]] = {}
    columns = server.sql(
        db,
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'iox'",
    ).to_pylist()
    for table_name in {c["table_name"] for c in columns}:
        kinds = {c["column_name"]: c["data_type"] for c in columns if c["table_name"] == table_name}
        tags = [n for n, t in kinds.items() if t.startswith("Dictionary")]
        types[table_name] = {n: KINDS[t] for n, t in kinds.items() if t in KINDS}
        table = server.sql(db, f"SELECT * FROM {quoted(table_name)}")
        times = table.column("time").cast(pa.int64()).to_pylist()
        for row, time in zip(table.drop_columns(["time"]).to_pylist(), times, strict=True):
            key = (
                table_name,
                time,
                frozenset((k, row[k]) for k in tags if row[k] is not None),
            )
            data[key] = {k: v for k, v in row.items() if k in types[table_name] and v is not None}
    return data, types


def influxd_tier(influxd: ThrowawayInfluxd, db: str) -> tuple[TierData, dict[str, dict[str, str]]]:
    data = read_tier(influxd, db, "autogen")
    return data, {m: field_types(influxd, db, "autogen", m) for m, _, _ in data}


def same_points(left: TierData, right: TierData) -> bool:
    """Equal keys and values; influxd's JSON writes a float 1.0 as 1, so a float compares with
    the float an integer rounds to (types are compared separately)."""
    if left.keys() != right.keys():
        return False
    for key, fields in left.items():
        other = right[key]
        if fields.keys() != other.keys():
            return False
        for name, value in fields.items():
            if isinstance(value, bool) or isinstance(other[name], bool):
                if value is not other[name]:
                    return False
            elif isinstance(value, float) or isinstance(other[name], float):
                # Go writes a float without a fraction as an integer (5.02e16 as
                # 50203035731292690): read back, it is the float it rounds to.
                if float(value) != float(other[name]):
                    return False
            elif value != other[name]:
                return False
    return True


@pytest.fixture
def standin() -> Influx3StandIn:
    """A stand-in used without HTTP (its `write`/`sql`), for the parser comparisons."""
    return Influx3StandIn()


# -- the parser against influxd 1.x -------------------------------------------------------------

AGREED = [
    "m,host=a v=1 1000",
    "m\\ x\\,y,t\\ k\\,\\==v\\ a\\,b\\=c f\\ k\\,\\==2i 1",
    'm s="a \\"q\\" b\\\\c\\d" 1',
    'm s="" 1',
    'm s="two\nlines",r="cr\r" 1',
    'mé🌡,tä=vö fü="é🌡" 1',
    "m i=9223372036854775807i,j=-9223372036854775808i,k=-01i 1",
    "m a=1e-300,b=-0.0,c=1.7976931348623157e308,d=5e-324,e=1E5,f=-1.5e+10,g=12,h=01 1",
    "m a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE 1",
    "m,b=2,a=1 x=1,y=2 1\nm,a=1,b=2 y=3,z=4 1",
    "m v=1 5\nm v=2 5",
    "m v=1 -5",
    "m v=1 9223372036854775806",
    "m,t=a\\b f\\x=1 1",
    '# a comment\n\n  m v=1 1\n\n# another\nm w="x" 2',
    "m v=1 1 ",
    "m  v=1  1",
    'm,k\\"=v\\" f=1 1',
    'm v="x\\\\" 1',
]
REFUSED = [
    "m v=9223372036854775808i 1",
    "m v=-9223372036854775809i 1",
    "m 1",
    "m v= 1",
    "m,t= v=1 1",
    ",t=a v=1 1",
    'm v="unterminated 1',
    "m v=1.2.3 1",
    "m v=tru 1",
    "m v=+1 1",
    "m v=1e5i 1",
    "m v=1 1.5",
    "m v=1\t1",
    "m\\ v=1 1",
    "m\\\\ v=1 1",
    "m v=1,v=2i 1",
    # A column named `time`: 1.x refuses the key, 3.x the column type (it is the timestamp).
    "m time=1 1",
    "m,time=x v=1 1",
]


@pytest.mark.parametrize("body", AGREED)
def test_parser_reads_what_influxd_reads(
    influxd: ThrowawayInfluxd, db: str, standin: Influx3StandIn, body: str
) -> None:
    influxd.write_body(body.encode(), db=db, precision="ns")
    standin.write("lp", body)
    ours, our_types = standin_tier(standin, "lp")
    theirs, their_types = influxd_tier(influxd, db)
    assert same_points(ours, theirs), (ours, theirs)
    assert our_types == their_types


def test_negative_zero_keeps_its_sign(standin: Influx3StandIn) -> None:
    # influxd's JSON cannot show the sign of -0.0 (it writes 0), so this one is checked alone.
    standin.write("lp", "m v=-0.0 1")
    (value,) = standin.sql("lp", "SELECT v FROM m").column("v").to_pylist()
    assert math.copysign(1, value) == -1


@pytest.mark.parametrize("body", REFUSED)
def test_parser_refuses_what_influxd_refuses(
    influxd: ThrowawayInfluxd, db: str, standin: Influx3StandIn, body: str
) -> None:
    with pytest.raises(InfluxdError, match="HTTP 400"):
        influxd.write_body(body.encode(), db=db, precision="ns")
    with pytest.raises(ValueError, match="error_message"):
        standin.write("lp", body)
    assert read_tier(influxd, db, "autogen") == {}
    assert "lp" not in standin.databases


# (body, what influxd 1.x stores or None if it refuses, what 3.x stores or None): the grammars
# differ here. 3.x's side is the crate's (`core/influxdb_line_protocol`: its tests
# `measurement_allows_escaping_backslash`, `tag_value_allows_escaping_backslash`, the escape
# sets of `measurement` and `escaped_value`, `field_uinteger_value`, Rust's f64 parse, the
# timestamp as any i64, `parse_line`'s trailing content rule) and the write validator's
# ("multiple instances of … field").
Stored = tuple[str, tuple[tuple[str, str], ...], str, Any] | None
DIVERGENT: list[tuple[str, Stored, Stored]] = [
    # 1.x unescapes `\=` (and `\"`) in measurements; 3.x's measurement escapes are `\,` `\ ` `\\`.
    ("m\\=x v=1 1", ("m=x", (), "v", 1.0), ("m\\=x", (), "v", 1.0)),
    # 1.x keeps `\\` in names as two backslashes; 3.x reads it as one.
    ("m,t=a\\\\b v=1 1", ("m", (("t", "a\\\\b"),), "v", 1.0), ("m", (("t", "a\\b"),), "v", 1.0)),
    ('m f\\"=1 1', ("m", (), 'f"', 1.0), ("m", (), 'f\\"', 1.0)),
    # uint64 fields: 1.6.7 has none.
    ("m v=5u 1", None, ("m", (), "v", 5)),
    # Rust's f64 parse reads an overflowing exponent as infinity; Go's refuses it.
    ("m v=1e400 1", None, ("m", (), "v", math.inf)),
    # A float needs digits on both sides of its point in 3.x.
    ("m v=.5 1", ("m", (), "v", 0.5), None),
    ("m v=1. 1", ("m", (), "v", 1.0), None),
    # 1.x keeps the last of a repeated field; 3.x refuses the line.
    ("m v=1,v=2 1", ("m", (), "v", 2.0), None),
    # 1.x keeps a tag and a field of one name apart; in 3.x both are the one column.
    ("m,t=1 t=2 1", ("m", (("t", "1"),), "t", 2.0), None),
    # 1.x's time range is (-2^63, 2^63 - 1) exclusive of its ends; 3.x takes any i64.
    ("m v=1 9223372036854775807", None, ("m", (), "v", 1.0)),
]


@pytest.mark.parametrize(("body", "in_1x", "in_3x"), DIVERGENT)
def test_where_the_grammars_differ(
    influxd: ThrowawayInfluxd,
    db: str,
    standin: Influx3StandIn,
    body: str,
    in_1x: Stored,
    in_3x: Stored,
) -> None:
    try:
        influxd.write_body(body.encode(), db=db, precision="ns")
        theirs: Stored = only_point(influxd_tier(influxd, db)[0])
    except InfluxdError:
        theirs = None
    try:
        standin.write("lp", body)
        ours: Stored = only_point(standin_tier(standin, "lp")[0])
    except ValueError:
        ours = None
    assert (theirs, ours) == (in_1x, in_3x)


def only_point(data: TierData) -> Stored:
    ((measurement, _, tags), fields), *rest = data.items()
    assert rest == []
    ((name, value),) = fields.items()
    return measurement, tuple(sorted(tags)), name, value


def test_trailing_space_without_a_timestamp(standin: Influx3StandIn) -> None:
    # The crate's `parse_line` leaves a space it cannot read as a timestamp unparsed: refused
    # (1.x stores the point at its own clock; not compared, as that clock is not ours).
    (refused,) = parse_lines("m v=1 ")
    assert isinstance(refused, LineError)
    assert str(refused) == "Could not parse entire line. Found trailing content: ` `"


@pytest.mark.parametrize(
    ("text", "measurement", "tag_value", "field_key"),
    [
        # The crate's own unit tests (`core/influxdb_line_protocol/src/lib.rs`).
        (
            "\\\\wea\\\\ther,t=\\\\wea\\\\ther \\\\wea\\\\ther=1",
            "\\wea\\ther",
            "\\wea\\ther",
            "\\wea\\ther",
        ),
        ("\\wea\\ther,t=\\wea\\ther \\wea\\ther=1", "\\wea\\ther", "\\wea\\ther", "\\wea\\ther"),
    ],
)
def test_parser_matches_the_crates_tests(
    text: str, measurement: str, tag_value: str, field_key: str
) -> None:
    (line,) = parse_lines(text)
    assert isinstance(line, ParsedLine)
    assert (line.measurement, line.tags[0][1], line.fields[0][0]) == (
        measurement,
        tag_value,
        field_key,
    )


@pytest.mark.parametrize(
    "body", ["weather\\", "m,w\\\\=x v=1", "m,t=w\\\\ v=1", "m w\\\\=1", "w\\\\ v=1"]
)
def test_parser_refuses_names_ending_in_a_backslash(body: str) -> None:
    # The crate's `measurement_disallows_ending_in_backslash` and its kin: `\\` is one
    # backslash, and a name may not end in one.
    (line,) = parse_lines(body)
    assert isinstance(line, LineError), body
    assert "may not end with a backslash" in str(line)


NASTY = [" ", ",", "=", '"', "\\", "\\\\", "é", "🌡", "a b,c=d", "\\x", "#", "."]
names = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=10) | (
    st.lists(st.sampled_from(NASTY), min_size=1, max_size=4).map("".join)
)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=20) | st.sampled_from(
    ["\n", "\r\n", "\\", '"', '\\"', "", "x\\", '"\n"']
)


def collapsed(name: str) -> str:
    """A name as 3.x reads what tierflow's (1.x) encoder wrote: the crate reads each `\\\\` as
    one backslash, which 1.x keeps as two."""
    return name.replace("\\\\", "\\")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@example(
    measurement="m",
    tag_key="k",
    tag_value="a\\\\b",
    field_key="f",
    text="x",
    number=1.5,
    integer=-3,
)
@example(
    measurement="é🌡",
    tag_key="k",
    tag_value="v",
    field_key="f",
    text='a\\\r\n"\\',
    number=-0.0,
    integer=2**63 - 1,
)
@given(
    measurement=names,
    tag_key=names,
    tag_value=names,
    field_key=names,
    text=texts,
    number=st.floats(allow_nan=False, allow_infinity=False),
    integer=st.integers(-(2**63), 2**63 - 1),
)
def test_tierflow_bodies_read_alike(
    influxd: ThrowawayInfluxd,
    measurement: str,
    tag_key: str,
    tag_value: str,
    field_key: str,
    text: str,
    number: float,
    integer: int,
) -> None:
    """What tierflow's encoder writes, influxd and the port read alike, but for `\\\\` in names
    (read as one backslash by 3.x): the port is checked on the bodies tierflow sends."""
    if len({tag_key, field_key, "n", "x", "time"}) != 5 or measurement.startswith("_"):
        return
    batch = pa.record_batch(
        {
            "time": pa.array([5], pa.int64()),
            tag_key: [tag_value],
            field_key: [text],
            "n": pa.array([integer], pa.int64()),
            "x": pa.array([number], pa.float64()),
        }
    )
    try:
        body = encode_batch(measurement, batch, tags=[tag_key], fields=[field_key, "n", "x"]).body
    except LineProtocolError:
        event("refused by tierflow's encoder")
        return
    database = "lp_alike"
    influxd.execute(f'DROP DATABASE "{database}"')
    influxd.execute(f'CREATE DATABASE "{database}"')
    influxd.write_body(body, db=database, precision="ns")
    theirs, _ = influxd_tier(influxd, database)
    expected = {field_key: text, "n": integer, "x": number}
    assert same_points(theirs, {(measurement, 5, frozenset({(tag_key, tag_value)})): expected})
    names_3x = [collapsed(n) for n in (measurement, tag_key, tag_value, field_key)]
    standin = Influx3StandIn()
    if any(n.endswith("\\") for n in names_3x) or len({names_3x[1], names_3x[3], "n", "x"}) != 4:
        event("refused by 3.x only")
        with pytest.raises(ValueError, match="error_message"):
            standin.write("lp", body.decode())
        return
    event(
        "read alike"
        if names_3x == [measurement, tag_key, tag_value, field_key]
        else "read with \\\\ as \\"
    )
    standin.write("lp", body.decode())
    ours, types = standin_tier(standin, "lp")
    m3, k3, v3, f3 = names_3x
    assert same_points(
        ours, {(m3, 5, frozenset({(k3, v3)})): {f3: text, "n": integer, "x": number}}
    )
    assert types[m3] == {f3: "string", "n": "integer", "x": "float"}


# -- SQL in DataFusion against InfluxQL in influxd ----------------------------------------------


@pytest.mark.parametrize(
    ("influxql", "interval", "origin", "span"),
    [
        ("time(1h, 30m)", "1 hour", "1970-01-01T00:30:00", (1800, 5 * 3600 + 1800)),
        ("time(15m)", "15 minutes", "1970-01-01T00:00:00", (600, 4 * 3600 + 77)),
        ("time(1d, 6h)", "1 day", "1970-01-01T06:00:00", (0, 6 * 3600)),
    ],
)
def test_sql_aggregates_equal_influxql(
    influxd: ThrowawayInfluxd,
    db: str,
    influxql: str,
    interval: str,
    origin: str,
    span: tuple[int, int],
) -> None:
    """DataFusion's avg/min/max/count/sum per `date_bin` window against influxd's InfluxQL per
    `GROUP BY time(every, offset)` over the same points (a fifth of them without the float
    field): the same windows, the same stamps, the same values."""
    rng = random.Random(15)
    start = 1_700_000_000 * NS // (86_400 * NS) * (86_400 * NS)
    lines = []
    for escaped in ("a", "b\\ c", "d\\,e"):
        for second in sorted(rng.sample(range(6 * 3600), 400)):
            value, number = rng.uniform(-1e6, 1e6), rng.randint(-(10**12), 10**12)
            fields = f"n={number}i" if rng.random() < 0.2 else f"v={value!r},n={number}i"
            lines.append(f"m,host={escaped} {fields} {start + second * NS}")
    body = "\n".join(lines)
    influxd.write_body(body.encode(), db=db, precision="ns")
    standin = Influx3StandIn()
    standin.write("agg", body)
    low, high = start + span[0] * NS, start + span[1] * NS
    theirs = influxd.series_points(
        "SELECT mean(v), min(v), max(v), count(v), sum(v), sum(n), mean(n) FROM m "
        f"WHERE time >= {low} AND time < {high} GROUP BY {influxql}, host fill(none)",
        db=db,
    )
    ours = standin.sql(
        "agg",
        f"SELECT date_bin(INTERVAL '{interval}', time, TIMESTAMP '{origin}') AS time, "
        "host, avg(v) AS mean, min(v) AS min, max(v) AS max, count(v) AS count, sum(v) AS sum, "
        "sum(n) AS sum_1, avg(n) AS mean_1 FROM m "
        f"WHERE time >= to_timestamp_nanos({low}) AND time < to_timestamp_nanos({high}) "
        "GROUP BY 1, 2 ORDER BY 2, 1",
    )
    assert ours.schema.field("sum_1").type == pa.int64()
    assert ours.schema.field("count").type == pa.int64()
    got = [
        {**row, "time": t}
        for row, t in zip(
            ours.drop_columns(["time"]).to_pylist(),
            ours.column("time").cast(pa.int64()).to_pylist(),
            strict=True,
        )
    ]
    expected = sorted(theirs, key=lambda r: (r["host"], r["time"]))
    assert [(r["host"], r["time"]) for r in got] == [(r["host"], r["time"]) for r in expected]
    assert len(got) >= 3
    for mine, real in zip(got, expected, strict=True):
        # Where a window has points but none with `v`, SQL counts 0 and InfluxQL says null.
        count = real["count"] if real["count"] is not None else 0
        assert (mine["count"], mine["min"], mine["max"], mine["sum_1"]) == (
            count,
            real["min"],
            real["max"],
            real["sum_1"],
        )
        for name in ("mean", "sum", "mean_1"):
            if real[name] is None:
                assert mine[name] is None, name
            else:
                assert math.isclose(mine[name], real[name], rel_tol=1e-12, abs_tol=1e-6), name


# -- the documented API (the live suite runs these too) -----------------------------------------


@pytest.fixture(scope="module")
def threaded() -> Iterator[ThreadedInflux3StandIn]:
    with ThreadedInflux3StandIn() as server:
        yield server


@pytest.mark.parametrize("check", checks.SHARED, ids=lambda c: c.__name__)
def test_documented_api(threaded: ThreadedInflux3StandIn, check: Callable[..., None]) -> None:
    check(checks.Client(threaded.url, threaded.token), f"db_{uuid.uuid4().hex[:12]}")


# -- the stand-in's own behaviour and hooks -----------------------------------------------------


async def call(
    server: Influx3StandIn,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, str, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, headers=headers, **kwargs) as response,
    ):
        return response.status, await response.text(), dict(response.headers)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_retention_hides_older_points(influx3: Influx3StandIn) -> None:
    now = 1_800_000_000 * NS
    influx3.now = lambda: now
    status, _, _ = await call(
        influx3,
        "POST",
        "/api/v3/configure/database",
        json={"db": "short", "retention_period": "1h"},
        headers=bearer(),
    )
    assert status == 200
    influx3.write("short", f"m v=1 {now - 2 * 3600 * NS}\nm v=2 {now - 1800 * NS}")
    assert influx3.sql("short", "SELECT v FROM m").column("v").to_pylist() == [2.0]
    influx3.now = lambda: now + 3600 * NS
    assert influx3.sql("short", "SELECT count(*) AS c FROM m").to_pylist() == [{"c": 0}]
    # PUT sets another period, or clears it.
    path = "/api/v3/configure/database"
    body: dict[str, Any] = {"db": "short", "retention_period": "2h"}
    assert (await call(influx3, "PUT", path, json=body, headers=bearer()))[0] == 200
    assert influx3.sql("short", "SELECT v FROM m").column("v").to_pylist() == [2.0]
    assert (await call(influx3, "PUT", path, json={"db": "short"}, headers=bearer()))[0] == 200
    assert influx3.sql("short", "SELECT v FROM m ORDER BY v").column("v").to_pylist() == [1.0, 2.0]
    missing = await call(influx3, "PUT", path, json={"db": "nope"}, headers=bearer())
    assert missing[:2] == (404, "the requested resource was not found: nope")


def test_retention_periods_parse_like_humantime() -> None:
    assert parse_retention("30d") == 30 * 86_400 * NS
    assert parse_retention("1h 30m") == 5400 * NS
    assert parse_retention("2weeks") == 14 * 86_400 * NS
    with pytest.raises(ValueError, match="unit"):
        parse_retention("3 fortnights")


async def test_a_line_without_a_time_gets_the_servers_clock(influx3: Influx3StandIn) -> None:
    influx3.now = lambda: 1_700_000_000_123_456_789
    status, _, _ = await call(
        influx3,
        "POST",
        "/api/v3/write_lp",
        params={"db": "d", "precision": "millisecond"},
        data="m v=1",
        headers=bearer(),
    )
    assert status == 204
    times = influx3.sql("d", "SELECT time FROM m").column("time").cast(pa.int64()).to_pylist()
    assert times == [1_700_000_000_123_000_000]


async def test_auto_precision_guesses_from_magnitude(influx3: Influx3StandIn) -> None:
    body = "m,p=s v=1 1700000000\nm,p=ms v=1 1700000000001\nm,p=us v=1 1700000000000002\n"
    body += "m,p=ns v=1 1700000000000000003"
    status, text, _ = await call(
        influx3, "POST", "/api/v3/write_lp", params={"db": "d"}, data=body, headers=bearer()
    )
    assert (status, text) == (204, "")
    got = influx3.sql("d", "SELECT p, CAST(time AS BIGINT) AS t FROM m ORDER BY t").to_pylist()
    base = 1_700_000_000 * NS
    assert got == [
        {"p": "s", "t": base},
        {"p": "ns", "t": base + 3},
        {"p": "us", "t": base + 2_000},
        {"p": "ms", "t": base + 1_000_000},
    ]


async def test_tokens_and_schemes(influx3: Influx3StandIn) -> None:
    path = "/api/v3/configure/database?format=json"
    assert (await call(influx3, "GET", path, headers=bearer()))[0] == 200
    assert (await call(influx3, "GET", path, headers={"Authorization": f"Token {TOKEN}"}))[0] == 200
    basic = base64.b64encode(f"user:{TOKEN}".encode()).decode()
    assert (await call(influx3, "GET", path, headers={"Authorization": f"Basic {basic}"}))[0] == 200
    status, text, _ = await call(influx3, "GET", path, headers={"Authorization": TOKEN})
    assert status == 400
    assert "supported auth-schemes are Bearer, Token and Basic" in json.loads(text)["error"]
    status, text, _ = await call(influx3, "GET", path)
    assert (status, json.loads(text)) == (401, {"error": "the request was not authenticated"})
    influx3.rotate_token(ROTATED)
    assert (await call(influx3, "GET", path, headers=bearer()))[0] == 401
    assert (await call(influx3, "GET", path, headers=bearer(ROTATED)))[0] == 200
    recorded = [(r.status, r.headers.get("Authorization", "")[:6]) for r in influx3.requests]
    assert recorded == [
        (200, "Bearer"),
        (200, "Token "),
        (200, "Basic "),
        (400, TOKEN[:6]),
        (401, ""),
        (401, "Bearer"),
        (200, "Bearer"),
    ]


async def test_health_and_ping_need_the_token_unless_exempted(influx3: Influx3StandIn) -> None:
    assert (await call(influx3, "GET", "/health"))[0] == 401
    assert (await call(influx3, "GET", "/health", headers=bearer()))[:2] == (200, "OK")
    status, text, _ = await call(influx3, "GET", "/ping", headers=bearer())
    assert status == 200
    assert set(json.loads(text)) >= {"version", "revision"}
    influx3.disable_authz = frozenset({"/health", "/ping"})
    assert (await call(influx3, "GET", "/health"))[0] == 200
    assert (await call(influx3, "GET", "/ping"))[0] == 200


async def test_fail_next_answers_faults_then_recovers(influx3: Influx3StandIn) -> None:
    influx3.fail_next(503, times=2, retry_after=1.5)
    q = {"db": "_internal", "q": "SELECT 1 AS one", "format": "json"}
    first = await call(influx3, "GET", "/api/v3/query_sql", params=q, headers=bearer())
    second = await call(influx3, "GET", "/api/v3/query_sql", params=q, headers=bearer())
    third = await call(influx3, "GET", "/api/v3/query_sql", params=q, headers=bearer())
    assert [first[0], second[0], third[0]] == [503, 503, 200]
    assert first[2]["Retry-After"] == "1.5"
    assert "Retry-After" not in third[2]
    assert json.loads(third[1]) == [{"one": 1}]
    assert [(r.path, r.database, r.status) for r in influx3.requests] == [
        ("/api/v3/query_sql", "_internal", 503),
        ("/api/v3/query_sql", "_internal", 503),
        ("/api/v3/query_sql", "_internal", 200),
    ]


async def test_queries_by_get_post_and_accept_header(influx3: Influx3StandIn) -> None:
    influx3.write("d", "m,host=a v=1 1")
    q = "SELECT host, v FROM m"
    by_get = await call(
        influx3, "GET", "/api/v3/query_sql", params={"db": "d", "q": q}, headers=bearer()
    )
    by_post = await call(
        influx3, "POST", "/api/v3/query_sql", json={"db": "d", "q": q}, headers=bearer()
    )
    as_csv = await call(
        influx3,
        "GET",
        "/api/v3/query_sql",
        params={"db": "d", "q": q},
        headers={**bearer(), "Accept": "text/csv"},
    )
    assert json.loads(by_get[1]) == json.loads(by_post[1]) == [{"host": "a", "v": 1.0}]
    assert as_csv[:2] == (200, "host,v\na,1.0\n")
    assert influx3.requests[1].database == "d"
    params = {"db": "d", "q": "SELECT $x + 1 AS y", "params": json.dumps({"x": 41})}
    assert json.loads(
        (await call(influx3, "GET", "/api/v3/query_sql", params=params, headers=bearer()))[1]
    ) == [{"y": 42}]
    empty = {"db": "d", "q": "SELECT * FROM m WHERE v > 5"}
    for format, body in (("json", "[]"), ("jsonl", ""), ("parquet", "")):
        answer = await call(
            influx3,
            "GET",
            "/api/v3/query_sql",
            params={**empty, "format": format},
            headers=bearer(),
        )
        assert answer[:2] == (200, body), format


async def test_a_write_creates_its_database(influx3: Influx3StandIn) -> None:
    assert "fresh" not in influx3.databases
    status, _, _ = await call(
        influx3,
        "POST",
        "/api/v3/write_lp",
        params={"db": "fresh"},
        data="m v=1 1",
        headers=bearer(),
    )
    assert status == 204
    assert "fresh" in influx3.databases
    status, text, _ = await call(
        influx3,
        "POST",
        "/api/v3/write_lp",
        params={"db": "bad name"},
        data="m v=1 1",
        headers=bearer(),
    )
    assert status == 400
    assert "invalid character" in json.loads(text)["error"]


def test_threaded_standin_serves_blocking_clients(threaded: ThreadedInflux3StandIn) -> None:
    request = urllib.request.Request(
        f"{threaded.url}/health", headers={"Authorization": f"Bearer {threaded.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert (response.status, response.read()) == (200, b"OK")


async def test_concurrent_writes_all_land(influx3: Influx3StandIn) -> None:
    async def one(i: int) -> int:
        status, _, _ = await call(
            influx3,
            "POST",
            "/api/v3/write_lp",
            params={"db": "c"},
            data=f"m,w={i} v={i}i 1",
            headers=bearer(),
        )
        return status

    assert set(await asyncio.gather(*(one(i) for i in range(20)))) == {204}
    assert influx3.sql("c", "SELECT sum(v) AS s FROM m").to_pylist() == [{"s": sum(range(20))}]


simple_names = st.text(st.sampled_from("abc=.é🌡-_0"), min_size=1, max_size=5)
tokens = st.sampled_from(
    [
        "1",
        "-1",
        "1.5",
        "1e5",
        "1.5E-3",
        "01",
        "1i",
        "-0i",
        "9223372036854775808i",
        "5u",
        "t",
        "FALSE",
        "tru",
        "1.",
        ".5",
        "1e",
        "-",
        "18446744073709551616u",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    measurement=simple_names,
    tags=st.lists(st.tuples(simple_names, simple_names), max_size=3),
    fields=st.lists(st.tuples(simple_names, tokens), min_size=1, max_size=3),
    stamp=st.none() | st.integers(-(2**64), 2**64),
)
def test_the_fast_path_reads_as_the_grammar_does(
    measurement: str,
    tags: list[tuple[str, str]],
    fields: list[tuple[str, str]],
    stamp: int | None,
) -> None:
    """Lines without escapes or quotes are split rather than scanned; the split must read each
    exactly as the scanner (the crate's grammar) does, or leave it to the scanner."""
    text = measurement + "".join(f",{k}={v}" for k, v in tags) + " "
    text += ",".join(f"{k}={v}" for k, v in fields) + ("" if stamp is None else f" {stamp}")
    fast = _fast(text)
    try:
        scanned: ParsedLine | LineError = _Parser(text).line()
    except LineError as exc:
        scanned = exc
    event("split" if fast is not None else "left to the scanner")
    if fast is not None:
        assert fast == scanned


async def test_non_finite_floats_as_arrow_writes_them(influx3: Influx3StandIn) -> None:
    # 3.x stores an overflowing float as infinity (Rust's parse); arrow-json writes a non-finite
    # float as `null` with its key (arrow-json/src/writer/encoder.rs, `float_encode!`), CSV as
    # lexical_core spells it.
    influx3.write("d", "m a=1e400,b=-1e400,c=1 1")
    q = {"db": "d", "q": "SELECT a, b, c, a - a AS n FROM m"}
    answer = await call(influx3, "GET", "/api/v3/query_sql", params=q, headers=bearer())
    assert json.loads(answer[1]) == [{"a": None, "b": None, "c": 1.0, "n": None}]
    answer = await call(
        influx3, "GET", "/api/v3/query_sql", params={**q, "format": "csv"}, headers=bearer()
    )
    assert answer[1] == "a,b,c,n\ninf,-inf,1.0,NaN\n"


async def test_the_catalog_holds_so_many_databases(influx3: Influx3StandIn) -> None:
    # influxdb3/tests/server/configure.rs `api_v3_configure_db_create_db_hit_limit` (a server
    # limited to 5): the next database is refused with 422, by a create or by a first write;
    # deleted databases and `_internal` do not count.
    influx3.max_databases = 2
    path = "/api/v3/configure/database"
    for name in ("one", "two"):
        assert (await call(influx3, "POST", path, json={"db": name}, headers=bearer()))[0] == 200
    status, text, _ = await call(influx3, "POST", path, json={"db": "three"}, headers=bearer())
    assert (status, json.loads(text)) == (
        422,
        {"error": "Adding a new database would exceed limit of 2 databases"},
    )
    write = await call(
        influx3,
        "POST",
        "/api/v3/write_lp",
        params={"db": "three"},
        data="m v=1 1",
        headers=bearer(),
    )
    assert write[0] == 422
    assert (await call(influx3, "DELETE", path, params={"db": "one"}, headers=bearer()))[0] == 200
    assert (await call(influx3, "DELETE", path, params={"db": "one"}, headers=bearer()))[0] == 404
    assert (await call(influx3, "DELETE", path, headers=bearer()))[0] == 400
    write = await call(
        influx3,
        "POST",
        "/api/v3/write_lp",
        params={"db": "three"},
        data="m v=1 1",
        headers=bearer(),
    )
    assert write[0] == 204


async def test_refused_lines_are_named_as_3x_names_them(influx3: Influx3StandIn) -> None:
    # influxdb3_write/src/write_buffer/validator.rs: a line that does not parse is named by the
    # raw line (Rust `str::lines`) in step with the parsed ones, so a blank line before it
    # shifts the name; a line refused by the schema is printed again by the crate's `Display`
    # (floats as Rust prints them); `original_line` keeps 20 bytes (WriteLineError's serializer).
    body = "m v=1 1\n\nm v= 2\nm,host=a\\ b v=2.50,v=1e-7 3\n"
    status, text, _ = await call(
        influx3,
        "POST",
        "/api/v3/write_lp",
        params={"db": "d", "accept_partial": "true"},
        data=body,
        headers=bearer(),
    )
    assert status == 400
    assert json.loads(text)["data"] == [
        {"error_message": "No fields were provided", "line_number": 2, "original_line": ""},
        {
            "error_message": "invalid line protocol - multiple instances of 'v' field found",
            "line_number": 3,
            "original_line": "m,host=a\\ b v=2.5,v=",
        },
    ]


async def test_bodies_may_be_gzipped(influx3: Influx3StandIn) -> None:
    body = gzip.compress(b"m v=1 1\n")
    headers = {**bearer(), "Content-Encoding": "gzip"}
    write = await call(
        influx3, "POST", "/api/v3/write_lp", params={"db": "d"}, data=body, headers=headers
    )
    assert write[0] == 204
    assert influx3.requests[-1].body == b"m v=1 1\n"
    assert influx3.requests[-1].body_length == 8
    assert influx3.requests[-1].headers["Content-Encoding"] == "gzip"
    headers["Content-Encoding"] = "deflate"
    refused = await call(
        influx3,
        "POST",
        "/api/v3/write_lp",
        params={"db": "d"},
        data=zlib.compress(b"m v=2 2\n"),
        headers=headers,
    )
    assert refused[:2] == (400, "unacceptable content-encoding: deflate")
