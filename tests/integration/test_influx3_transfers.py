"""The 3.x half of the lifecycle: archives from a 3.x tier, restores and relays into one, the
migration paths 1.x → 3.x and 2.x → 3.x, and relays 3.x → 3.x, 3.x → 1.x and 3.x → 2.x.

Which parts are real:
- InfluxDB 1.x is the session's throwaway influxd 1.6: a relay's source, and the oracle of every
  aggregate (its own `SELECT … INTO` over the same points, into a scratch retention policy).
- InfluxDB 3.x is the stand-in of its HTTP API (`tests/influx3_standin.py`): every SQL query
  tierflow sends runs on Apache DataFusion, the engine 3.x runs SQL with; its line protocol
  parser is a port of 3.x's. What it stores is read back with its own `SELECT *` (pyarrow
  tables, types as the table holds them), never through tierflow. The archive-and-restore and
  the 1.x → 3.x relay also run against a live 3.x server when `TIERFLOW_TEST_INFLUXDB3_URL` and
  `…_TOKEN` are set (`server3`: fresh databases, deleted afterwards; skipped otherwise).
- InfluxDB 2.x is the recording stand-in (`tests/influx2_standin.py`): as a relay's source it
  answers the relay's script with the pivoted table a 2.x server builds from the oracle's points;
  as a dest, the bodies it accepted are replayed into the real influxd.

Oracles: the points written (the test's own values, from which the line protocol bodies are
made), the stand-in's `SELECT *`, influxd's `SELECT … INTO`, and the Parquet bytes on disk.
"""

from __future__ import annotations

import json
import logging
import math
import random
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.influx2_standin import Point as Point2
from tests.influx2_standin import StandIn, pivoted_csv
from tests.influx3_standin import TOKEN, Influx3StandIn, ThreadedInflux3StandIn
from tests.integration._helpers import run_due
from tests.integration._influx3_servers import Server3, db_name
from tests.integration.conftest import (
    Databases,
    TierData,
    field_types,
    read_tier,
    sqlite_state,
    write_toml,
)
from tests.integration.test_influxdb2_transfer import in_range, typed
from tierflow import RunStatus
from tierflow._archive import open_archive
from tierflow._archiving import restore
from tierflow._config import load_config
from tierflow._engines import dialect_for
from tierflow.testing import ThrowawayInfluxd

TIERFLOW = str(Path(sys.executable).parent / "tierflow")
NS = 1_000_000_000
HOUR = timedelta(hours=1)
EVERY = timedelta(minutes=5)
TOKEN_ENV = "TF_INFLUX3_TOKEN"
#: What every relay here computes: each aggregate 3.x supports (stddev and mode are refused).
AGGREGATES = {
    "temp": ["mean", "max", "min", "count", "median", "first", "last"],
    "n": ["sum", "count", "first", "last", "spread", "min", "max"],
}

Value = bool | int | float | str
#: A point as the tests hold it: (measurement, time, tags, fields).
Row = tuple[str, int, tuple[tuple[str, str], ...], tuple[tuple[str, Value], ...]]


# -- points and line protocol -----------------------------------------------------------------


def _escape(text: str, specials: str) -> str:
    text = text.replace("\\", "\\\\") if "\\" in specials else text
    for char in specials.replace("\\", ""):
        text = text.replace(char, "\\" + char)
    return text


def _value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Unsigned):
        return f"{int(value)}u"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Unsigned(int):
    """An int written as an unsigned field (`123u`)."""


NAME_SPECIALS, KEY_SPECIALS = "\\, ", "\\,= "


def line(row: Row) -> str:
    """A row as 3.x's parser reads line protocol (`\\\\` in a name is one backslash)."""
    measurement, time, tags, fields = row
    pairs = [f"{_escape(k, KEY_SPECIALS)}={_escape(v, KEY_SPECIALS)}" for k, v in tags]
    key = ",".join([_escape(measurement, NAME_SPECIALS), *pairs])
    values = ",".join(f"{_escape(k, KEY_SPECIALS)}={_value(v)}" for k, v in fields)
    return f"{key} {values} {time}"


HOSTS = ["a b", "c,d", "e=f", "plain", "ünï cødé", 'q"uote', "a\\b", "c\\\\d", "x\\,y"]
STRINGS = ['say "hi"', "back\\slash", "two\nlines", "tab\tand\r\nCRLF", "", "{}", "é∑😀", "'"]
FLOATS = [-0.0, 0.0, 5e-324, 1.7976931348623157e308, -1.7976931348623157e308, 0.1, 1.0, 2.5e-10]
INTS = [-(2**63), 2**63 - 1, 0, -1, 2**53 + 1]
UINTS = [0, 2**64 - 1, 2**63, 2**53 + 1]


def hostile_rows(start: datetime, hours: int, seed: int = 3) -> list[Row]:
    """Points over `hours` hours from `start`: tags with spaces, commas, equals, quotes and
    unicode (some points lack one), every field type with its extremes (int64's both ends,
    uint64's top, -0.0, the smallest subnormal, the largest float), strings with quotes,
    backslashes, newlines, unicode and the empty string; each point a random subset of fields.
    NaN and infinities are left out: line protocol cannot carry them."""
    rng = random.Random(seed)
    first = int(start.timestamp()) * NS
    rows: dict[tuple[str, int, tuple[tuple[str, str], ...]], Row] = {}
    span = hours * 3600 * NS
    makers: dict[str, Any] = {
        "f": lambda: rng.choice([*FLOATS, rng.uniform(-1e6, 1e6)]),
        "i": lambda: rng.choice([*INTS, rng.randint(-(2**62), 2**62)]),
        "u": lambda: Unsigned(rng.choice([*UINTS, rng.randint(0, 2**64 - 1)])),
        "ok": lambda: rng.random() < 0.5,
        "note": lambda: rng.choice([*STRINGS, "".join(rng.choices('xy"\\ \n,=é', k=6))]),
        "back\\slash key": lambda: rng.random(),
    }
    for i in range(400):
        time = first + rng.randrange(span)
        if i < 4:  # the window edges: the first instant of a window, the last of another
            time = first + (i % 2) * 3600 * NS - (i // 2)
            time = max(time, first)
        tags = [("host", rng.choice(HOSTS))]
        if rng.random() < 0.7:
            tags.append(("site", f"s{rng.randrange(3)}"))
        chosen = [k for k in makers if rng.random() < 0.6] or ["f"]
        fields = tuple(sorted((k, makers[k]()) for k in chosen))
        key = ("sensor", time, tuple(sorted(tags)))
        rows[key] = ("sensor", time, tuple(sorted(tags)), fields)
    # A second measurement with a hostile name.
    rows[("we ird,name", first + 7, ())] = ("we ird,name", first + 7, (), (("v", 1),))
    return sorted(rows.values())


def exact(rows: Iterable[Row]) -> set[tuple[Any, ...]]:
    """Rows with each value's type and bits (-0.0 ≠ 0.0, 1 ≠ 1.0 ≠ True, int ≠ unsigned)."""

    def bits(value: Any) -> tuple[str, Any]:
        if isinstance(value, float):
            return ("float", value.hex() if not math.isnan(value) else "nan")
        if isinstance(value, Unsigned):
            return ("unsigned", int(value))
        return (type(value).__name__, value)

    return {(m, t, tags, tuple((k, bits(v)) for k, v in fields)) for m, t, tags, fields in rows}


# -- reading a 3.x database with the stand-in's own SELECT * -----------------------------------


def table_rows(server: Influx3StandIn | Server3, db: str, measurement: str) -> list[Row]:
    """`SELECT *` of one table, as the server's SQL answers it: tags are the columns its
    `information_schema` calls Dictionary, UInt64 values come back `Unsigned`."""
    ident = '"' + measurement.replace('"', '""') + '"'
    kinds = column_types(server, db, measurement)
    table = server.sql(db, f"SELECT * FROM {ident}")
    tags = [name for name, kind in kinds.items() if kind.startswith("Dictionary")]
    unsigned = {name for name, kind in kinds.items() if kind == "UInt64"}
    table = table.set_column(
        table.schema.get_field_index("time"), "time", table.column("time").cast(pa.int64())
    )
    rows: list[Row] = []
    for row in table.to_pylist():
        fields = tuple(
            sorted(
                (k, Unsigned(v) if k in unsigned else v)
                for k, v in row.items()
                if k != "time" and k not in tags and v is not None
            )
        )
        tagset = tuple(sorted((k, row[k]) for k in tags if row[k] is not None))
        rows.append((measurement, row["time"], tagset, fields))
    return rows


def column_types(server: Influx3StandIn | Server3, db: str, measurement: str) -> dict[str, str]:
    text = (
        "SELECT column_name, data_type FROM information_schema.columns "
        f"WHERE table_schema = 'iox' AND table_name = '{measurement.replace(chr(39), chr(39) * 2)}'"
    )
    return {r["column_name"]: r["data_type"] for r in server.sql(db, text).to_pylist()}


def tier3(server: Influx3StandIn | Server3, db: str, measurement: str) -> TierData:
    """One 3.x table as the 1.x tests' `TierData`, for comparing with influxd's answers."""
    return {
        (m, time, frozenset(tags)): dict(fields)
        for m, time, tags, fields in table_rows(server, db, measurement)
    }


_V1_NAMES = {"Float64": "float", "Int64": "integer", "UInt64": "unsigned", "Boolean": "boolean"}


def field_types3(server: Influx3StandIn | Server3, db: str, measurement: str) -> dict[str, str]:
    """A 3.x table's field types, named as 1.x's `SHOW FIELD KEYS` names them."""
    found = column_types(server, db, measurement)
    return {
        k: _V1_NAMES.get(v, "string")
        for k, v in found.items()
        if k != "time" and not v.startswith("Dictionary")
    }


def archived_rows(archive_dir: Path, start: datetime, stop: datetime) -> list[Row]:
    rows: list[Row] = []
    for batch in open_archive(str(archive_dir)).read(start, stop):
        data = batch.points.data
        unsigned = {
            name for name in batch.points.fields if pa.types.is_uint64(data.schema.field(name).type)
        }
        times = data.column("time").cast(pa.int64()).to_pylist()
        columns = {
            name: data.column(name).to_pylist() for name in data.schema.names if name != "time"
        }
        for index, time in enumerate(times):
            tags = tuple(
                sorted(
                    (batch.points.key(t), columns[t][index])
                    for t in batch.points.tags
                    if columns[t][index] is not None
                )
            )
            fields = tuple(
                sorted(
                    (
                        batch.points.key(f),
                        Unsigned(columns[f][index]) if f in unsigned else columns[f][index],
                    )
                    for f in batch.points.fields
                    if columns[f][index] is not None
                )
            )
            rows.append((batch.measurement, time, tags, fields))
    return rows


# -- configs -----------------------------------------------------------------------------------


def v3(server: Influx3StandIn | Server3) -> dict[str, object]:
    return {"kind": "influxdb3", "url": server.url, "token": {"env": TOKEN_ENV}}


def archive_config(tmp_path: Path, server: Influx3StandIn | Server3, start: datetime) -> Path:
    return write_toml(
        tmp_path,
        {
            "state": sqlite_state(tmp_path),
            "connections.v3": v3(server),
            "tiers.hot": {"connection": "v3", "bucket": db_name(server, "hot")},
            "tiers.restored": {"connection": "v3", "bucket": db_name(server, "restored")},
            "tiers.cold": {"archive": str(tmp_path / "archive")},
            "jobs.to_cold": {
                "kind": "archive",
                "source": "hot",
                "dest": "cold",
                "measurements": ["sensor", "we ird,name"],
                "every": "1h",
                "start": start,
            },
        },
    )


@pytest.fixture
def start() -> datetime:
    # Recent: the 1.x `warm` policy (400d) refuses older points.
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


@pytest.fixture
def server3(influx3_server: Server3, monkeypatch: pytest.MonkeyPatch) -> Server3:
    """The stand-in, or the live 3.x server when its variables are set; the configs' token
    variable holds its token."""
    monkeypatch.setenv(TOKEN_ENV, influx3_server.token)
    return influx3_server


# -- archive and restore -----------------------------------------------------------------------


async def test_a_3x_tier_archives_point_for_point_and_restores_into_a_fresh_database(
    server3: Server3, tmp_path: Path, start: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    rows = hostile_rows(start, 3)
    server3.write("hot", "\n".join(line(r) for r in rows))
    # Beyond the job's windows: must not be archived.
    server3.write("hot", f"sensor,host=late f=1.0 {int((start + 3 * HOUR).timestamp()) * NS}")
    path = archive_config(tmp_path, server3, start)

    with caplog.at_level(logging.INFO, logger="tierflow"):
        runs = await run_due(path, start + 3 * HOUR)

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [r.error for r in runs]
    # Backslashes before commas, spaces and equals signs (`x\,y`, a field key `back\slash
    # key`) are what 1.x cannot read back, but 3.x, the source's own flavour, can: no warning
    # (the restore below writes them back exactly).
    assert {"x\\,y", "a\\b"} <= {v for r in rows for _, v in r[2]}
    assert [r.getMessage() for r in caplog.records if "unrestorable" in r.getMessage()] == []
    assert sum(len(r.batch.windows) for r in runs) == 3
    archived = archived_rows(tmp_path / "archive", start, start + 3 * HOUR)
    assert len(archived) == len(rows)
    assert exact(archived) == exact(rows)  # the points written, bits and types
    in_server = [r for m in ("sensor", "we ird,name") for r in table_rows(server3, "hot", m)]
    assert exact(archived) == exact(
        r for r in in_server if r[1] < (start + 3 * HOUR).timestamp() * NS
    )
    requests = server3.requests  # a live server does not show what it received
    if requests is not None:
        # The archive asked for Parquet, and the count check ran on the server.
        bodies = [r.json() for r in requests if r.path == "/api/v3/query_sql"]
        assert {b.get("format") for b in bodies if b["q"].startswith("SELECT * ")} == {"parquet"}
        assert any(b["q"].startswith("SELECT count(") for b in bodies)

    # Restore into a database that does not exist yet: 3.x makes it at the first write.
    config = load_config(path)
    connection = config.connections["v3"]
    engine = dialect_for(connection).make_engine("v3", connection)
    try:
        moved = await restore(
            open_archive(str(tmp_path / "archive")),
            engine,
            config.tiers["restored"],
            start=start,
            stop=start + 3 * HOUR,
            measurement=None,
            max_concurrency=2,
        )
    finally:
        await engine.aclose()
    assert moved.failures == ()
    assert moved.points == len(rows)
    restored = [r for m in ("sensor", "we ird,name") for r in table_rows(server3, "restored", m)]
    assert exact(restored) == exact(archived)
    for measurement in ("sensor", "we ird,name"):
        assert column_types(server3, "restored", measurement) == column_types(
            server3, "hot", measurement
        )
    if requests is not None:
        writes = [r for r in requests if r.path == "/api/v3/write_lp"]
        assert writes
        assert all(
            (w.query["db"], w.query["precision"], w.query["accept_partial"])
            == ("restored", "nanosecond", "false")
            for w in writes
        )


async def test_infinities_a_3x_tier_holds_are_archived_and_restored_exactly(
    server3: Server3, tmp_path: Path, start: datetime
) -> None:
    """3.x stores `1e999` as +inf (Rust's f64 parse of line protocol's float); archive and
    restore keep it, next to the point's other fields."""
    first = int(start.timestamp()) * NS
    inf = float("inf")
    rows: list[Row] = [
        ("sensor", first + 1, (("host", "a"),), (("f", inf), ("i", 1))),
        ("sensor", first + 2, (("host", "a"),), (("f", -inf), ("i", 2))),
        ("sensor", first + 3, (("host", "a"),), (("f", -0.0), ("i", 3))),
    ]
    server3.write(
        "hot",
        "\n".join(
            f"sensor,host=a f={f},i={i}i {t}"
            for t, f, i in (
                (first + 1, "1e999", 1),
                (first + 2, "-1e999", 2),
                (first + 3, "-0.0", 3),
            )
        ),
    )
    assert exact(table_rows(server3, "hot", "sensor")) == exact(rows)
    path = archive_config(tmp_path, server3, start)
    runs = await run_due(path, start + HOUR)
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [r.error for r in runs]
    assert exact(archived_rows(tmp_path / "archive", start, start + HOUR)) == exact(rows)

    config = load_config(path)
    connection = config.connections["v3"]
    engine = dialect_for(connection).make_engine("v3", connection)
    try:
        moved = await restore(
            open_archive(str(tmp_path / "archive")),
            engine,
            config.tiers["restored"],
            start=start,
            stop=start + HOUR,
            measurement=None,
            max_concurrency=1,
        )
    finally:
        await engine.aclose()
    assert (moved.failures, moved.points, moved.dropped) == ((), 3, 0)
    assert exact(table_rows(server3, "restored", "sensor")) == exact(rows)


async def test_an_archive_of_every_measurement_takes_each_table_with_data_in_each_window(
    influx3: Influx3StandIn, tmp_path: Path, start: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    """`measurements = "*"` from a 3.x database: per window, exactly the tables with a point
    in it (the first instant of a window, its last, a hostile name), not a table whose points
    lie before the first window, at the stop of the last or in another database."""
    hour = 3600 * NS
    first = int(start.timestamp()) * NS
    rows = hostile_rows(start, 3)
    rows += [
        ("only_second", first + hour, (("host", "a"),), (("v", 1.5),)),
        ("only_second", first + 2 * hour - 1, (("host", "b"),), (("v", 2.5),)),
        ("q\"u'o te,", first + 2 * hour, (), (("n", 7),)),
    ]
    outside = [
        ("ghost", first - 1, (), (("v", 1.0),)),
        ("ghost", first + 3 * hour, (), (("v", 2.0),)),
    ]
    influx3.write("hot", "\n".join(line(r) for r in [*rows, *outside]))
    influx3.write("other", "elsewhere v=1.0 " + str(first + 5))
    config = write_toml(
        tmp_path,
        {
            "state": sqlite_state(tmp_path),
            "connections.v3": v3(influx3),
            "tiers.hot": {"connection": "v3", "bucket": "hot"},
            "tiers.cold": {"archive": str(tmp_path / "archive")},
            "jobs.to_cold": {
                "kind": "archive",
                "source": "hot",
                "dest": "cold",
                "measurements": "*",
                "every": "1h",
                "start": start,
            },
        },
    )

    with caplog.at_level(logging.INFO, logger="tierflow"):
        runs = await run_due(config, start + 3 * HOUR)

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [r.error for r in runs]
    for window in range(3):
        low, high = start + window * HOUR, start + (window + 1) * HOUR
        expected = [r for r in rows if low.timestamp() * NS <= r[1] < high.timestamp() * NS]
        archived = archived_rows(tmp_path / "archive", low, high)
        assert exact(archived) == exact(expected), window
        assert len(archived) == len(expected)
    # What each window resolved "*" to: exactly the tables with a point in it.
    resolved = {
        fields["window_start"]: fields["measurements"]
        for record in caplog.records
        if record.getMessage() == "measurements_resolved"
        for fields in [getattr(record, "tierflow_fields", {})]
    }
    expected_names = {
        (start + window * HOUR).isoformat().replace("+00:00", "Z"): sorted(
            {
                r[0]
                for r in rows
                if (start + window * HOUR).timestamp() * NS
                <= r[1]
                < (start + (window + 1) * HOUR).timestamp() * NS
            }
        )
        for window in range(3)
    }
    assert resolved == expected_names
    assert expected_names[(start + HOUR).isoformat().replace("+00:00", "Z")] == [
        "only_second",
        "sensor",
    ]
    # The listing read only the source database.
    queries = [r.json() for r in influx3.requests if r.path == "/api/v3/query_sql"]
    assert any("UNION ALL" in b["q"] for b in queries)
    assert {b["db"] for b in queries} == {"hot"}


async def test_a_parquet_answer_that_lost_time_digits_is_read_again_as_jsonl(
    influx3: Influx3StandIn, tmp_path: Path, start: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose Parquet coerced times to microseconds would round every nanosecond away:
    the archive notices from the answer's own schema and reads the window as JSONL, typed by
    the table's schema, still exact."""
    import tests.influx3_standin as standin

    original = standin.render

    def coarse(batches: list[pa.RecordBatch], schema: pa.Schema, format: str) -> bytes:
        if format != "parquet" or not batches:
            return original(batches, schema, format)
        sink = pa.BufferOutputStream()
        pq.write_table(
            pa.Table.from_batches(batches),
            sink,
            coerce_timestamps="us",
            allow_truncated_timestamps=True,
            store_schema=False,
        )
        return bytes(sink.getvalue())

    monkeypatch.setattr(standin, "render", coarse)
    rows = hostile_rows(start, 1, seed=9)
    influx3.write("hot", "\n".join(line(r) for r in rows))
    path = archive_config(tmp_path, influx3, start)

    runs = await run_due(path, start + HOUR)

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [r.error for r in runs]
    inside = [r for r in rows if r[1] < int((start + HOUR).timestamp()) * NS]
    assert exact(archived_rows(tmp_path / "archive", start, start + HOUR)) == exact(inside)
    formats = [
        r.json()["format"]
        for r in influx3.requests
        if r.path == "/api/v3/query_sql" and r.json()["q"].startswith("SELECT * ")
    ]
    assert formats == ["parquet", "jsonl", "parquet", "jsonl"]  # two measurements


async def test_an_archive_whose_count_disagrees_with_the_server_commits_nothing(
    influx3: Influx3StandIn, tmp_path: Path, start: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count check is real: a server whose export loses a row fails the window."""
    import tests.influx3_standin as standin

    original = standin.render

    def lossy(batches: list[pa.RecordBatch], schema: pa.Schema, format: str) -> bytes:
        if format == "parquet" and batches and batches[0].num_rows > 1:
            batches = [batches[0].slice(1), *batches[1:]]
        return original(batches, schema, format)

    monkeypatch.setattr(standin, "render", lossy)
    influx3.write("hot", "\n".join(line(r) for r in hostile_rows(start, 1, seed=5)))
    path = archive_config(tmp_path, influx3, start)

    runs = await run_due(path, start + HOUR)

    assert {r.status for r in runs} == {RunStatus.FAILED}
    assert "values per field" in (runs[0].error or "")
    assert not list((tmp_path / "archive").rglob("*.parquet"))


# -- relays ------------------------------------------------------------------------------------


def sparse_lines(start: datetime) -> list[str]:
    """Two series over one hour of 5-minute buckets, some buckets empty, some holding one of
    the two fields only; n is an integer (2**53 + k, so a float detour would show)."""
    rng = random.Random(17)
    lines = []
    for host in ("a", "b c"):
        for bucket in range(12):
            if rng.random() < 0.3:
                continue
            fields = rng.choice([("temp", "n"), ("temp",), ("n",)])
            for i in range(rng.randint(1, 4)):
                ns = int((start + bucket * EVERY).timestamp()) * NS + (7 + 61 * i) * NS
                values = {
                    "temp": f"temp={rng.randrange(-400, 400) / 8!r}",
                    "n": f"n={2**53 + rng.randrange(100)}i",
                }
                tag = host.replace(" ", "\\ ")
                lines.append(f"m,host={tag} {','.join(values[f] for f in fields)} {ns}")
    return lines


def relay_job(start: datetime, **extra: object) -> dict[str, object]:
    return {
        "kind": "downsample",
        "measurements": ["m"],
        "every": "5m",
        "start": start,
        "aggregates": AGGREGATES,
        **extra,
    }


async def select_into(
    tmp_path: Path, influxd: ThrowawayInfluxd, source: str, start: datetime
) -> TierData:
    """The relay's job on one 1.x connection (SELECT … INTO into `source`.warm): the oracle."""
    path = write_toml(
        tmp_path / "oracle",
        {
            "state": sqlite_state(tmp_path / "oracle"),
            "connections.plant": {"kind": "influxdb1", "url": influxd.url},
            "tiers.hot": {"connection": "plant", "bucket": f"{source}/autogen"},
            "tiers.warm": {"connection": "plant", "bucket": f"{source}/warm"},
            "jobs.down": relay_job(start, source="hot", dest="warm"),
        },
    )
    runs = await run_due(path, start + HOUR)
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [r.error for r in runs]
    expected = read_tier(influxd, source, "warm")
    assert expected
    return expected


def assert_same(relayed: TierData, expected: TierData) -> None:
    assert relayed.keys() == expected.keys()  # no point for an empty bucket, none missing
    for key, fields in expected.items():
        # influxd's JSON says 2 for the float 2.0: compare values, and types separately.
        assert relayed[key] == fields, key


async def test_a_relay_from_1x_into_3x_writes_what_select_into_writes(
    server3: Server3,
    influxd: ThrowawayInfluxd,
    databases: Databases,
    tmp_path: Path,
    start: datetime,
) -> None:
    source = databases.new()
    influxd.write(sparse_lines(start), db=source)
    expected = await select_into(tmp_path, influxd, source, start)
    path = write_toml(
        tmp_path / "relay",
        {
            "state": sqlite_state(tmp_path / "relay"),
            "connections.plant": {"kind": "influxdb1", "url": influxd.url},
            "connections.v3": v3(server3),
            "tiers.hot": {"connection": "plant", "bucket": f"{source}/autogen"},
            "tiers.warm": {"connection": "v3", "bucket": server3.name("warm")},
            "jobs.down": relay_job(start, source="hot", dest="warm"),
        },
    )

    runs = await run_due(path, start + HOUR)

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [r.error for r in runs]
    assert_same(tier3(server3, "warm", "m"), expected)
    assert field_types3(server3, "warm", "m") == field_types(influxd, source, "warm", "m")


async def test_a_relay_from_3x_to_3x_writes_what_select_into_writes(
    influx3: Influx3StandIn,
    influxd: ThrowawayInfluxd,
    databases: Databases,
    tmp_path: Path,
    start: datetime,
) -> None:
    """Two connections to one 3.x server make a relay: the source aggregates in SQL (run by
    DataFusion), tierflow reads the answer as Parquet and writes it to the dest. The same
    points in influxd, aggregated by its SELECT … INTO, are the oracle."""
    source = databases.new()
    lines = sparse_lines(start)
    influxd.write(lines, db=source)
    influx3.write("hot", "\n".join(lines))
    expected = await select_into(tmp_path, influxd, source, start)
    path = write_toml(
        tmp_path / "relay",
        {
            "state": sqlite_state(tmp_path / "relay"),
            "connections.east": v3(influx3),
            "connections.west": v3(influx3),
            "tiers.hot": {"connection": "east", "bucket": "hot"},
            "tiers.warm": {"connection": "west", "bucket": "warm"},
            "jobs.down": relay_job(start, source="hot", dest="warm", catchup_chunk="15m"),
        },
    )

    runs = await run_due(path, start + HOUR)

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [r.error for r in runs]
    assert len(runs) == 4  # 15-minute chunks
    assert_same(tier3(influx3, "warm", "m"), expected)
    assert field_types3(influx3, "warm", "m") == field_types(influxd, source, "warm", "m")
    reads = [r.json() for r in influx3.requests if r.path == "/api/v3/query_sql"]
    assert [b["format"] for b in reads if "date_bin" in b["q"]] == ["parquet"] * 4


async def test_a_relay_from_3x_back_to_1x_writes_what_select_into_writes(
    influx3: Influx3StandIn,
    influxd: ThrowawayInfluxd,
    databases: Databases,
    tmp_path: Path,
    start: datetime,
) -> None:
    """Out of 3.x into the real influxd: what influxd stores (and the types it gives them)
    equals its own SELECT … INTO over the same points."""
    source, dest = databases.new(), databases.new()
    lines = sparse_lines(start)
    influxd.write(lines, db=source)
    influx3.write("hot", "\n".join(lines))
    expected = await select_into(tmp_path, influxd, source, start)
    path = write_toml(
        tmp_path / "relay",
        {
            "state": sqlite_state(tmp_path / "relay"),
            "connections.v3": v3(influx3),
            "connections.plant": {"kind": "influxdb1", "url": influxd.url},
            "tiers.hot": {"connection": "v3", "bucket": "hot"},
            "tiers.warm": {"connection": "plant", "bucket": f"{dest}/warm"},
            "jobs.down": relay_job(start, source="hot", dest="warm"),
        },
    )

    runs = await run_due(path, start + HOUR)

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [r.error for r in runs]
    assert_same(read_tier(influxd, dest, "warm"), expected)
    assert field_types(influxd, dest, "warm", "m") == field_types(influxd, source, "warm", "m")


async def test_a_relay_out_of_3x_refuses_an_aggregate_of_the_wrong_type(
    influx3: Influx3StandIn, tmp_path: Path, start: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server answering a count as a float (say, a template change) is refused, naming the
    column; nothing is cast, nothing written."""
    import tests.influx3_standin as standin

    original = standin.render

    def floated(batches: list[pa.RecordBatch], schema: pa.Schema, format: str) -> bytes:
        if format == "parquet" and batches and "temp_count" in batches[0].schema.names:
            table = pa.Table.from_batches(batches)
            index = table.schema.get_field_index("temp_count")
            table = table.set_column(
                index, "temp_count", table.column("temp_count").cast(pa.float64())
            )
            batches = table.to_batches()
        return original(batches, schema, format)

    monkeypatch.setattr(standin, "render", floated)
    influx3.write("hot", "\n".join(sparse_lines(start)))
    path = write_toml(
        tmp_path,
        {
            "state": sqlite_state(tmp_path),
            "connections.east": v3(influx3),
            "connections.west": v3(influx3),
            "tiers.hot": {"connection": "east", "bucket": "hot"},
            "tiers.warm": {"connection": "west", "bucket": "warm"},
            "jobs.down": relay_job(start, source="hot", dest="warm"),
        },
    )

    runs = await run_due(path, start + HOUR)

    assert {r.status for r in runs} == {RunStatus.FAILED}
    assert "'temp_count' as double; SELECT … INTO would write integer" in (runs[0].error or "")
    assert "warm" not in influx3.databases


async def test_a_relay_from_2x_into_3x_writes_what_select_into_writes(
    influx3: Influx3StandIn,
    influxd: ThrowawayInfluxd,
    databases: Databases,
    tmp_path: Path,
    start: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The migration path from 2.x: the 2.x stand-in answers the relay's Flux with the pivoted
    table a 2.x server builds from the oracle's points (types as influxd stored them); what
    lands in 3.x must be those points, types included."""
    source = databases.new()
    influxd.write(sparse_lines(start), db=source)
    expected = await select_into(tmp_path, influxd, source, start)
    answer: list[Point2] = typed(expected, field_types(influxd, source, "warm", "m"))
    monkeypatch.setenv("TF_FLUX_TOKEN", "flux-token")
    flux = StandIn(tokens={"flux-token"}, org="acme", buckets={"hot"})
    flux.on_query = lambda script: pivoted_csv(in_range(script, answer))
    await flux.start()
    try:
        path = write_toml(
            tmp_path / "relay",
            {
                "state": sqlite_state(tmp_path / "relay"),
                "connections.cloud": {
                    "kind": "influxdb2",
                    "url": flux.url,
                    "org": "acme",
                    "token": {"env": "TF_FLUX_TOKEN"},
                },
                "connections.v3": v3(influx3),
                "tiers.hot": {"connection": "cloud", "bucket": "hot"},
                "tiers.warm": {"connection": "v3", "bucket": "warm"},
                "jobs.down": relay_job(start, source="hot", dest="warm"),
            },
        )
        runs = await run_due(path, start + HOUR)
    finally:
        await flux.stop()

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [r.error for r in runs]
    assert_same(tier3(influx3, "warm", "m"), expected)
    assert field_types3(influx3, "warm", "m") == field_types(influxd, source, "warm", "m")


async def test_a_relay_from_3x_into_2x_writes_what_select_into_writes(
    influx3: Influx3StandIn,
    influxd: ThrowawayInfluxd,
    databases: Databases,
    tmp_path: Path,
    start: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Out of 3.x into 2.x: the bodies the 2.x stand-in accepted are replayed into the real
    influxd, which must then hold what its own SELECT … INTO wrote over the same points."""
    source, replayed = databases.new(), databases.new()
    lines = sparse_lines(start)
    influxd.write(lines, db=source)
    influx3.write("hot", "\n".join(lines))
    expected = await select_into(tmp_path, influxd, source, start)
    monkeypatch.setenv("TF_FLUX_TOKEN", "flux-token")
    flux = StandIn(tokens={"flux-token"}, org="acme", buckets={"warm"})
    await flux.start()
    try:
        path = write_toml(
            tmp_path / "relay",
            {
                "state": sqlite_state(tmp_path / "relay"),
                "connections.v3": v3(influx3),
                "connections.cloud": {
                    "kind": "influxdb2",
                    "url": flux.url,
                    "org": "acme",
                    "token": {"env": "TF_FLUX_TOKEN"},
                },
                "tiers.hot": {"connection": "v3", "bucket": "hot"},
                "tiers.warm": {"connection": "cloud", "bucket": "warm"},
                "jobs.down": relay_job(start, source="hot", dest="warm"),
            },
        )
        runs = await run_due(path, start + HOUR)
    finally:
        await flux.stop()

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [r.error for r in runs]
    writes = [r for r in flux.requests if r.path == "/api/v2/write" and r.status == 204]
    assert writes
    for request in writes:
        assert request.query == {"org": "acme", "bucket": "warm", "precision": "ns"}
        influxd.write(request.body, db=replayed, rp="warm")
    assert_same(read_tier(influxd, replayed, "warm"), expected)
    assert field_types(influxd, replayed, "warm", "m") == field_types(influxd, source, "warm", "m")


# -- the whole lifecycle, through the tierflow command ------------------------------------------


def tierflow(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIERFLOW, *args, "-c", str(config)], capture_output=True, text=True, check=False
    )


def lifecycle_config(
    tmp_path: Path, influxd: ThrowawayInfluxd, server: Influx3StandIn, source: str, start: datetime
) -> Path:
    """1.x hot → 3.x warm (a relay), 3.x hot → 3.x warm (a downsample), 3.x hot → cold (an
    archive), and a 3.x tier to restore into."""
    return write_toml(
        tmp_path,
        {
            "state": sqlite_state(tmp_path),
            "connections.plant": {"kind": "influxdb1", "url": influxd.url},
            "connections.v3": v3(server),
            "tiers.hot1": {"connection": "plant", "bucket": f"{source}/autogen"},
            "tiers.hot3": {"connection": "v3", "bucket": "hot"},
            "tiers.warm3": {"connection": "v3", "bucket": "warm"},
            "tiers.restored3": {"connection": "v3", "bucket": "restored"},
            "tiers.cold": {"archive": str(tmp_path / "archive")},
            "jobs.migrate": relay_job(
                start, source="hot1", dest="warm3", into="{{ measurement }}_from_1x"
            ),
            "jobs.down": relay_job(start, source="hot3", dest="warm3", into="{{ measurement }}_5m"),
            "jobs.to_cold": {
                "kind": "archive",
                "source": "hot3",
                "dest": "cold",
                "measurements": ["m"],
                "every": "1h",
                "start": start,
            },
        },
    )


async def test_relay_downsample_archive_and_restore_on_3x_through_the_command(
    influxd: ThrowawayInfluxd, databases: Databases, tmp_path: Path, start: datetime
) -> None:
    source = databases.new()
    lines = sparse_lines(start)
    influxd.write(lines, db=source)
    expected = await select_into(tmp_path, influxd, source, start)
    types = field_types(influxd, source, "warm", "m")
    with ThreadedInflux3StandIn() as server:
        server.write("hot", "\n".join(lines))
        path = lifecycle_config(tmp_path / "run", influxd, server, source, start)

        ran = tierflow("run-once", "--now", (start + HOUR).isoformat(), "--json", config=path)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        report = json.loads(ran.stdout)
        assert report["failed"] == 0, report

        verified = tierflow("archive", "verify", "cold", "--json", config=path)
        assert verified.returncode == 0, verified.stdout + verified.stderr

        restored = tierflow(
            "restore",
            "cold",
            "--from",
            start.isoformat(),
            "--to",
            (start + HOUR).isoformat(),
            "--into",
            "restored3",
            "--json",
            config=path,
        )
        assert restored.returncode == 0, restored.stdout + restored.stderr

        hot = tier3(server, "hot", "m")
        for into in ("m_from_1x", "m_5m"):
            warm = {("m", t, tags): f for (_, t, tags), f in tier3(server, "warm", into).items()}
            assert_same(warm, expected)
            assert field_types3(server, "warm", into) == types
        files = sorted((tmp_path / "run" / "archive").rglob("*.parquet"))
        assert sum(pq.read_metadata(f).num_rows for f in files) == len(hot)
        assert json.loads(restored.stdout)["points"] == len(hot)
        assert tier3(server, "restored", "m") == hot
        assert column_types(server, "restored", "m") == column_types(server, "hot", "m")


# -- refusals ----------------------------------------------------------------------------------


async def test_a_line_3x_refuses_fails_the_write_naming_its_point_and_nothing_lands(
    influx3: Influx3StandIn,
) -> None:
    """3.x answers a refused line (here a field of another type than its first write) with
    "line protocol parsing error" and the line: the writer's refusal names the measurement,
    the field and the exact point (the third row of the body, not the body's first), and with
    `accept_partial=false` none of the body's points land."""
    from tierflow._archive import PointBatch
    from tierflow._engines.sql._engine import InfluxDB3Engine
    from tierflow._errors import WriteRefusedError
    from tierflow._transfer import write_batches

    influx3.write("hot", "conflict v=1.0 1")
    times = [10, 20, 30, 40]
    data = pa.record_batch(
        {
            "time": pa.array(times, pa.int64()),
            "v": pa.array([2.0, None, None, 5.0]),
            "v_int": pa.array([None, None, 3, None], pa.int64()),
            "w": pa.array([1.0, 2.0, 3.0, 4.0]),
        }
    )
    batch = PointBatch(data, keys={"v_int": "v"})

    async def batches() -> Any:
        yield "conflict", batch

    config = load_config_text(influx3)
    engine = dialect_for(config).make_engine("v3", config)
    assert isinstance(engine, InfluxDB3Engine)
    try:
        with pytest.raises(WriteRefusedError) as refused:
            await write_batches(
                engine, batches(), database="hot", retention_policy=None, max_concurrency=1
            )
    finally:
        await engine.aclose()
    error = refused.value
    assert (error.measurement, error.column, error.time_ns) == ("conflict", "v", 30)
    assert error.status == 400
    said = str(error)
    assert "first offending point at 1970-01-01T00:00:00.000000030Z" in said
    assert "line 3 of the body: invalid column type for column 'v'" in said
    assert "nothing of the body was written" in said
    assert [r[1] for r in table_rows(influx3, "hot", "conflict")] == [1]


def load_config_text(server: Influx3StandIn) -> Any:
    from tierflow._config import InfluxDB3Connection

    return InfluxDB3Connection.model_validate(
        {"kind": "influxdb3", "url": server.url, "token": {"env": TOKEN_ENV}}
    )


@pytest.mark.parametrize("site", ["", "a"])
async def test_an_archive_tags_filter_selects_the_series_influxql_selects(
    influx3: Influx3StandIn,
    influxd: ThrowawayInfluxd,
    db: str,
    tmp_path: Path,
    start: datetime,
    site: str,
) -> None:
    """A job's `tags` on a 3.x source select what InfluxQL's `WHERE "site" = '…'` selects on
    the same points (the oracle: influxd 1.x's own answer): `""` is the points without the tag
    (3.x stores them as null; a table without that column at all: all its points), any other
    value its equal (a table without the column: none). Resolved per window with
    `measurements = "*"`, exported and counted."""
    first = int(start.timestamp()) * NS
    lines = [
        f"tagged,site=a v=1.5 {first + 1}",
        f"tagged,site=b v=2.5 {first + 2}",
        f"tagged v=3.5 {first + 3}",
        f"plain v=4.5 {first + 4}",
        f"plain,host=h v=5.5 {first + 5}",
    ]
    influx3.write("hot", "\n".join(lines))
    influxd.write(lines, db=db)
    selected = {
        (series["name"], int(row[0]))
        for result in influxd.query(
            f'SELECT v FROM "tagged", "plain" WHERE "site" = \'{site}\'', db=db
        )
        for series in result.get("series", [])
        for row in series["values"]
    }
    assert selected  # the oracle selects something in both cases
    config = write_toml(
        tmp_path,
        {
            "state": sqlite_state(tmp_path),
            "connections.v3": v3(influx3),
            "tiers.hot": {"connection": "v3", "bucket": "hot"},
            "tiers.cold": {"archive": str(tmp_path / "archive")},
            "jobs.to_cold": {
                "kind": "archive",
                "source": "hot",
                "dest": "cold",
                "measurements": "*",
                "tags": {"site": site},
                "every": "1h",
                "start": start,
            },
        },
    )

    runs = await run_due(config, start + HOUR)

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [r.error for r in runs]
    archived = archived_rows(tmp_path / "archive", start, start + HOUR)
    assert {(r[0], r[1]) for r in archived} == selected


async def test_infinities_from_3x_restored_into_1x_are_refused_naming_field_and_point(
    influx3: Influx3StandIn,
    influxd: ThrowawayInfluxd,
    databases: Databases,
    tmp_path: Path,
    start: datetime,
) -> None:
    """InfluxDB 1.x stores no infinity. A 3.x archive holding one, restored into 1.x, is
    refused naming the field and the point (exit 1 from the command), and nothing of that
    measurement lands: left out of its point beside the point's other fields, the value would
    have been lost without a word."""
    first = int(start.timestamp()) * NS
    influx3.write(
        "hot", f"sensor,host=a f=1.5,i=1i {first + 1}\nsensor,host=a f=1e999,i=2i {first + 2}"
    )
    path = archive_config(tmp_path, influx3, start)
    runs = await run_due(path, start + HOUR)
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [r.error for r in runs]
    dest = databases.new()
    config = load_config(
        write_toml(
            tmp_path / "into1x",
            {
                "connections.plant": {"kind": "influxdb1", "url": influxd.url},
                "tiers.back": {"connection": "plant", "bucket": f"{dest}/warm"},
            },
        )
    )
    connection = config.connections["plant"]
    engine = dialect_for(connection).make_engine("plant", connection)
    try:
        moved = await restore(
            open_archive(str(tmp_path / "archive")),
            engine,
            config.tiers["back"],
            start=start,
            stop=start + HOUR,
            measurement=None,
            max_concurrency=1,
        )
    finally:
        await engine.aclose()

    (refusal,) = moved.failures
    assert "infinity" in str(refusal), str(refusal)
    assert "'f'" in str(refusal), str(refusal)
    assert moved.points == 0
    assert influxd.query('SELECT count(*) FROM "warm"."sensor"', db=dest)[0].get("series") is None
