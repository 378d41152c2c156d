"""The engine contract, stated once and run against every engine: what a downsample (or a query
job) writes to the dest tier must equal what plain Python computes from the raw points.

- `influxdb1`: the InfluxQL engine against the throwaway InfluxDB 1.6 the test session starts.
- `influxdb2-standin`: the Flux engine against the stand-in that keeps points and runs the Flux
  tierflow sends (`tests/flux_standin.py`, scripts parsed by the official parser): the 2.x
  request contract, and what the scripts compute as the Flux documentation says.
- `influxdb3-standin`: the SQL engine against the 3.x stand-in (`tests/influx3_standin.py`), whose
  SQL runs on Apache DataFusion (the engine 3.x runs SQL with): downsamples are read-aggregate-
  write there, and the raw points are written to it, and read back, with its own line protocol
  parser and `SELECT *`.
- `influxdb2`: the Flux engine against a live InfluxDB 2.x, only when
  `TIERFLOW_TEST_INFLUXDB2_URL`, `TIERFLOW_TEST_INFLUXDB2_TOKEN` and `TIERFLOW_TEST_INFLUXDB2_ORG`
  are set (an all-access token: the suite creates and deletes its own buckets); otherwise those
  cases are skipped, saying so. See README, "The live 2.x suite".
- `influxdb3`: the SQL engine against a live InfluxDB 3.x (Core or Enterprise), only when
  `TIERFLOW_TEST_INFLUXDB3_URL` and `TIERFLOW_TEST_INFLUXDB3_TOKEN` are set (an admin token: each
  test gets fresh databases, deleted afterwards); otherwise skipped, saying so. Its tiers are
  written with line protocol and read back with the server's own `SELECT *` (Parquet), through a
  plain HTTP client. See README, "The live 3.x suite".

Each backend writes and reads its tiers with its own small client (the stand-in: its store),
never through tierflow. One set of tests, parametrised by backend.
"""

from __future__ import annotations

import csv
import io
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.flux_standin import FluxStandIn, Record, points_of
from tests.fluxcheck import FluxChecker, flux_checker
from tests.influx2_standin import TOKEN, running_in_thread
from tests.influx3_standin import TOKEN as TOKEN3
from tests.influx3_standin import ThreadedInflux3StandIn
from tests.integration._helpers import (
    AGGREGATES,
    EVERY,
    NS,
    SPAN,
    WINDOWS,
    Point,
    assert_all_succeeded,
    assert_tier,
    expected_tier,
    grid,
    line,
    ns,
    open_runner,
    telemetry,
    windows_of,
    write_points,
)
from tests.integration._influx3_servers import Live3, live_influx3, read_tier3
from tests.integration.conftest import (
    WARM_RP,
    Databases,
    TierData,
    read_tier,
    toml_value,
)
from tests.integration.test_downsample import HOSTILE_MEASUREMENTS, _every_7m
from tierflow import RunStatus
from tierflow._windows import Window
from tierflow.testing import ThrowawayInfluxd

__all__ = ["flux_checker"]

LIVE_ENV = (
    "TIERFLOW_TEST_INFLUXDB2_URL",
    "TIERFLOW_TEST_INFLUXDB2_TOKEN",
    "TIERFLOW_TEST_INFLUXDB2_ORG",
)


class Backend(Protocol):
    kind: str

    def connection_toml(self) -> list[str]: ...
    def hot(self) -> str: ...
    def warm(self) -> str: ...
    def write(self, points: Iterable[Point]) -> None: ...
    def write_warm(self, points: Iterable[Point]) -> None: ...
    def read_warm(self) -> TierData: ...
    def read_hot(self) -> TierData: ...
    def delete_hot(self, measurement: str, tags: dict[str, str]) -> None: ...


@dataclass
class InfluxDB1:
    """A fresh database with a `warm` RP on the session's throwaway influxd."""

    server: ThrowawayInfluxd
    db: str
    kind: str = "influxdb1"

    def connection_toml(self) -> list[str]:
        return ['kind = "influxdb1"', f"url = {toml_value(self.server.url)}", 'timeout = "30s"']

    def hot(self) -> str:
        return f"{self.db}/autogen"

    def warm(self) -> str:
        return f"{self.db}/{WARM_RP}"

    def write(self, points: Iterable[Point]) -> None:
        write_points(self.server, self.db, points)

    def write_warm(self, points: Iterable[Point]) -> None:
        self.server.write([line(p) for p in points], db=self.db, rp=WARM_RP)

    def read_warm(self) -> TierData:
        return read_tier(self.server, self.db, WARM_RP)

    def read_hot(self) -> TierData:
        return read_tier(self.server, self.db, "autogen")

    def delete_hot(self, measurement: str, tags: dict[str, str]) -> None:
        raise AssertionError("1.x cannot delete from one policy only: no test asks it to")


@dataclass
class InfluxDB2:
    """Two fresh buckets (hot, warm) in the live server's org, deleted afterwards."""

    url: str
    token: str
    org: str
    kind: str = "influxdb2"
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    ids: list[str] = field(default_factory=list)

    def _call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
        **params: str,
    ) -> bytes:
        url = self.url.rstrip("/") + path + ("?" + urllib.parse.urlencode(params) if params else "")
        request = urllib.request.Request(
            url,
            data=body,
            method=method,
            headers={
                "Authorization": f"Token {self.token}",
                "Content-Type": content_type,
                "Accept": "application/csv, application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(
                f"{method} {path}: HTTP {exc.code}: {exc.read()[:300]!r}"
            ) from None

    def create(self) -> None:
        orgs = json.loads(self._call("GET", "/api/v2/orgs", org=self.org))["orgs"]
        org_id = orgs[0]["id"]
        for name in (self.hot(), self.warm()):
            body = json.dumps({"orgID": org_id, "name": name, "retentionRules": []}).encode()
            self.ids.append(json.loads(self._call("POST", "/api/v2/buckets", body))["id"])

    def drop(self) -> None:
        for bucket_id in self.ids:
            self._call("DELETE", f"/api/v2/buckets/{bucket_id}")

    def connection_toml(self) -> list[str]:
        return [
            'kind = "influxdb2"',
            f"url = {toml_value(self.url)}",
            f"org = {toml_value(self.org)}",
            'token = { env = "TIERFLOW_TEST_INFLUXDB2_TOKEN" }',
            'timeout = "120s"',
        ]

    def hot(self) -> str:
        return f"tierflow_hot_{self.suffix}"

    def warm(self) -> str:
        return f"tierflow_warm_{self.suffix}"

    def write(self, points: Iterable[Point], bucket: str | None = None) -> None:
        body = "\n".join(line(p) for p in points).encode()
        self._call(
            "POST",
            "/api/v2/write",
            body,
            "text/plain; charset=utf-8",
            org=self.org,
            bucket=bucket or self.hot(),
            precision="ns",
        )

    def write_warm(self, points: Iterable[Point]) -> None:
        self.write(points, self.warm())

    def _read(self, bucket: str) -> TierData:
        from tierflow._engines.flux._literals import flux_string

        script = f"from(bucket: {flux_string(bucket)}) |> range(start: 0)"
        body = json.dumps(
            {
                "query": script,
                "type": "flux",
                "dialect": {"header": True, "annotations": ["datatype"]},
            }
        ).encode()
        text = self._call("POST", "/api/v2/query", body, org=self.org).decode()
        data: TierData = {}
        datatypes: list[str] = []
        header: list[str] = []
        for cells in csv.reader(io.StringIO(text)):
            if not cells or cells == [""]:
                header = []
                continue
            if cells[0] == "#datatype":
                datatypes, header = cells, []
                continue
            if not header:
                header = cells
                continue
            row = dict(zip(header, cells, strict=True))
            kinds = dict(zip(header, datatypes, strict=True))
            tags = frozenset(
                (k, v)
                for k, v in row.items()
                if k and not k.startswith("_") and k not in {"result", "table"} and v != ""
            )
            moment = _rfc3339_ns(row["_time"])
            value: Any = (
                int(row["_value"])
                if kinds["_value"] in {"long", "unsignedLong"}
                else float(row["_value"])
            )
            data.setdefault((row["_measurement"], moment, tags), {})[row["_field"]] = value
        return data

    def read_warm(self) -> TierData:
        return self._read(self.warm())

    def read_hot(self) -> TierData:
        return self._read(self.hot())

    def delete_hot(self, measurement: str, tags: dict[str, str]) -> None:
        """Delete every point of the series with the 2.x API (`/api/v2/delete`)."""
        predicate = " AND ".join(
            [f'_measurement="{measurement}"', *(f'{k}="{v}"' for k, v in tags.items())]
        )
        body = {"start": "1970-01-01T00:00:00Z", "stop": "2100-01-01T00:00:00Z"}
        self._call(
            "POST",
            "/api/v2/delete",
            json.dumps({**body, "predicate": predicate}).encode(),
            org=self.org,
            bucket=self.hot(),
        )


@dataclass
class InfluxDB2StandIn:
    """The stand-in that keeps points and runs Flux (`tests/flux_standin.py`), served from a
    thread; its `hot` and `warm` buckets are read and written in its store directly."""

    server: FluxStandIn
    token_file: Path
    kind: str = "influxdb2"

    def connection_toml(self) -> list[str]:
        return [
            'kind = "influxdb2"',
            f"url = {toml_value(self.server.url)}",
            f"org = {toml_value(self.server.org)}",
            f"token = {{ file = {toml_value(str(self.token_file))} }}",
            'timeout = "30s"',
        ]

    def hot(self) -> str:
        return "hot"

    def warm(self) -> str:
        return "warm"

    def write(self, points: Iterable[Point], bucket: str = "hot") -> None:
        self.server.store(
            bucket,
            (
                {"_measurement": p.measurement, **dict(p.tags), "_time": p.time}
                | {"_field": name, "_value": value}
                for p in points
                for name, value in p.fields.items()
            ),
        )

    def write_warm(self, points: Iterable[Point]) -> None:
        self.write(points, "warm")

    def _read(self, bucket: str) -> TierData:
        data: TierData = {}
        records: list[Record] = self.server.stored.get(bucket, [])
        for measurement, moment, tags, name, value in points_of(records):
            data.setdefault((measurement, moment, tags), {})[name] = value
        return data

    def read_warm(self) -> TierData:
        return self._read("warm")

    def read_hot(self) -> TierData:
        return self._read("hot")

    def delete_hot(self, measurement: str, tags: dict[str, str]) -> None:
        pairs = [f'_measurement="{measurement}"', *(f'"{k}"="{v}"' for k, v in tags.items())]
        start, stop = "1970-01-01T00:00:00Z", "2100-01-01T00:00:00Z"
        self.server.delete("hot", start, stop, " AND ".join(pairs))


@dataclass
class InfluxDB3StandIn:
    """The DataFusion-backed 3.x stand-in served from a thread: databases `hot` and `warm`,
    written with line protocol and read with `SELECT *` in its store directly."""

    server: ThreadedInflux3StandIn
    token_file: Path
    kind: str = "influxdb3"

    def connection_toml(self) -> list[str]:
        return [
            'kind = "influxdb3"',
            f"url = {toml_value(self.server.url)}",
            f"token = {{ file = {toml_value(str(self.token_file))} }}",
            'timeout = "30s"',
        ]

    def hot(self) -> str:
        return "hot"

    def warm(self) -> str:
        return "warm"

    def write(self, points: Iterable[Point], db: str = "hot") -> None:
        self.server.write(db, "\n".join(line(p) for p in points))

    def write_warm(self, points: Iterable[Point]) -> None:
        self.write(points, "warm")

    def _read(self, db: str) -> TierData:
        if db not in self.server.databases:
            return {}
        tables = self.server.sql(
            db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'iox'"
        )
        data: TierData = {}
        for name in tables.column("table_name").to_pylist():
            ident = '"' + name.replace('"', '""') + '"'
            table = self.server.sql(db, f"SELECT * FROM {ident}")
            tags = {
                f.name for f in table.schema if f.name != "time" and "dictionary" in str(f.type)
            }
            times = table.column("time").cast("int64").to_pylist()
            for moment, row in zip(times, table.drop_columns(["time"]).to_pylist(), strict=True):
                key = (name, moment, frozenset((k, row[k]) for k in tags if row[k] is not None))
                assert key not in data, f"two rows for one point {key}"
                data[key] = {k: v for k, v in row.items() if k not in tags and v is not None}
        return data

    def read_warm(self) -> TierData:
        return self._read("warm")

    def read_hot(self) -> TierData:
        return self._read("hot")

    def delete_hot(self, measurement: str, tags: dict[str, str]) -> None:
        raise AssertionError("3.x cannot delete a time range: no test asks it to")


@dataclass
class InfluxDB3:
    """Two fresh databases (hot, warm) on the live 3.x server, deleted afterwards."""

    server: Live3
    kind: str = "influxdb3"

    def connection_toml(self) -> list[str]:
        return [
            'kind = "influxdb3"',
            f"url = {toml_value(self.server.url)}",
            'token = { env = "TIERFLOW_TEST_INFLUXDB3_TOKEN" }',
            'timeout = "120s"',
        ]

    def hot(self) -> str:
        return self.server.name("hot")

    def warm(self) -> str:
        return self.server.name("warm")

    def write(self, points: Iterable[Point]) -> None:
        self.server.write("hot", "\n".join(line(p) for p in points))

    def write_warm(self, points: Iterable[Point]) -> None:
        self.server.write("warm", "\n".join(line(p) for p in points))

    def read_warm(self) -> TierData:
        return read_tier3(self.server, "warm")

    def read_hot(self) -> TierData:
        return read_tier3(self.server, "hot")

    def delete_hot(self, measurement: str, tags: dict[str, str]) -> None:
        raise AssertionError("3.x cannot delete a time range: no test asks it to")


def _rfc3339_ns(text: str) -> int:
    seconds, _, fraction = text.rstrip("Z").partition(".")
    whole = datetime.fromisoformat(seconds + "+00:00")
    return round(whole.timestamp()) * NS + int((fraction + "000000000")[:9])


@pytest.fixture(
    params=["influxdb1", "influxdb2-standin", "influxdb3-standin", "influxdb2", "influxdb3"]
)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "influxdb1":
        server: ThrowawayInfluxd = request.getfixturevalue("influxd")
        databases: Databases = request.getfixturevalue("databases")
        yield InfluxDB1(server, databases.new())
        return
    if request.param == "influxdb2-standin":
        checker: FluxChecker = request.getfixturevalue("flux_checker")
        token_file: Path = request.getfixturevalue("tmp_path_factory").mktemp("token") / "token"
        token_file.write_text(TOKEN + "\n", encoding="utf-8")
        standin = FluxStandIn(checker=checker)
        with running_in_thread(standin):
            yield InfluxDB2StandIn(standin, token_file)
        return
    if request.param == "influxdb3-standin":
        token_file = request.getfixturevalue("tmp_path_factory").mktemp("token3") / "token"
        token_file.write_text(TOKEN3 + "\n", encoding="utf-8")
        with ThreadedInflux3StandIn() as server3:
            yield InfluxDB3StandIn(server3, token_file)
        return
    if request.param == "influxdb3":
        for live3 in live_influx3():
            yield InfluxDB3(live3)
        return
    yield from live_influxdb2()


def live_influxdb2() -> Iterator[InfluxDB2]:
    """Fresh buckets on the live 2.x server, deleted afterwards; skips, saying why, without one."""
    missing = [name for name in LIVE_ENV if not os.environ.get(name)]
    if missing:
        pytest.skip(f"live InfluxDB 2.x suite: set {', '.join(missing)} to run it")
    url, token, org = (os.environ[name] for name in LIVE_ENV)
    live = InfluxDB2(url, token, org)
    live.create()
    try:
        yield live
    finally:
        live.drop()


def write_config(backend: Backend, directory: Path, jobs: dict[str, dict[str, object]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "[state]",
        f"url = {toml_value('sqlite:///' + str(directory / 'state.db'))}",
        "",
        "[connections.db]",
        *backend.connection_toml(),
        "",
        "[tiers.hot]",
        'connection = "db"',
        f"bucket = {toml_value(backend.hot())}",
        "",
        "[tiers.warm]",
        'connection = "db"',
        f"bucket = {toml_value(backend.warm())}",
    ]
    for name, job in jobs.items():
        body = {"kind": "downsample", "source": "hot", "dest": "warm", **job}
        lines += ["", f"[jobs.{name}]"]
        lines += [f"{key} = {_toml(value)}" for key, value in body.items() if value is not None]
    path = directory / "tierflow.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _toml(value: object) -> str:
    """`toml_value`, plus floats (query job params)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{toml_value(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
        )
    return toml_value(value)


def job(start: datetime, **overrides: object) -> dict[str, object]:
    return {
        "measurements": ["sensor"],
        "every": "5m",
        "start": start,
        "aggregates": AGGREGATES,
        **overrides,
    }


# -- the contract ------------------------------------------------------------------------------


async def test_every_window_series_and_field_equals_the_raw_points(
    backend: Backend, tmp_path: Path, start: datetime
) -> None:
    points = telemetry(21, start)
    backend.write(points)
    expected = expected_tier(points, grid(start, EVERY, WINDOWS))

    async with open_runner(write_config(backend, tmp_path, {"down": job(start)})) as runner:
        runs = await runner.run_due(start + SPAN)

    assert_all_succeeded(runs)
    assert len(runs) == 2  # coalesced into 1h chunks
    assert windows_of(runs) == grid(start, EVERY, WINDOWS)
    assert_tier(backend.read_warm(), expected)


async def test_window_by_window_equals_coalesced(
    backend: Backend, tmp_path: Path, start: datetime
) -> None:
    points = telemetry(22, start)
    backend.write(points)
    async with open_runner(
        write_config(
            backend,
            tmp_path / "a",
            {"one": job(start, catchup_chunk="5m", into="{{ measurement }}_one")},
        )
    ) as runner:
        one = await runner.run_due(start + SPAN)
    async with open_runner(
        write_config(backend, tmp_path / "b", {"all": job(start, into="{{ measurement }}_all")})
    ) as runner:
        coalesced = await runner.run_due(start + SPAN)

    assert (len(one), len(coalesced)) == (WINDOWS, 2)
    warm = backend.read_warm()
    by_name = {
        name: {(t, tags): f for (m, t, tags), f in warm.items() if m == name}
        for name in ("sensor_one", "sensor_all")
    }
    assert by_name["sensor_one"] == by_name["sensor_all"]
    assert_tier(
        warm,
        {
            **expected_tier(points, grid(start, EVERY, WINDOWS), into=lambda m: f"{m}_one"),
            **expected_tier(points, grid(start, EVERY, WINDOWS), into=lambda m: f"{m}_all"),
        },
    )


async def test_a_tag_filter_and_windows_not_aligned_to_the_hour(
    backend: Backend, tmp_path: Path, start: datetime
) -> None:
    now = start + timedelta(hours=1)
    spans = _every_7m(start, now)
    points = telemetry(23, start)
    backend.write(points)
    spec = job(start, every="7m", tags={"site": "berlin"})

    async with open_runner(write_config(backend, tmp_path, {"down": spec})) as runner:
        runs = await runner.run_due(now)

    assert_all_succeeded(runs)
    assert windows_of(runs) == spans
    expected = expected_tier(points, spans, keep=lambda p: dict(p.tags)["site"] == "berlin")
    assert expected
    assert_tier(backend.read_warm(), expected)


@pytest.mark.parametrize("measurement", HOSTILE_MEASUREMENTS[:3])
async def test_hostile_names_select_exactly_their_series(
    backend: Backend, tmp_path: Path, start: datetime, measurement: str
) -> None:
    key = "ta\"g 'key',="
    target = ((key, "v'al ue\\b"), ("host", "a"))
    series = [(measurement, target), (measurement, ((key, "v"), ("host", "a"))), ("sensor", target)]
    points = [
        Point(name, tags, ns(start) + offset * NS, {"temp": float(i + offset)})
        for i, (name, tags) in enumerate(series)
        for offset in (0, 1, 250)
    ]
    backend.write(points)
    spec = job(
        start,
        measurements=[measurement],
        tags={key: "v'al ue\\b"},
        aggregates={"temp": ["mean", "count"]},
        into="{{ measurement }} 5m",
    )

    async with open_runner(write_config(backend, tmp_path, {"down": spec})) as runner:
        assert_all_succeeded(await runner.run_due(start + EVERY))

    expected = expected_tier(
        points,
        grid(start, EVERY, 1),
        aggregates={"temp": ["mean", "count"]},
        keep=lambda p: (p.measurement, p.tags) == (measurement, target),
        into=lambda m: f"{m} 5m",
    )
    assert len(expected) == 1
    assert_tier(backend.read_warm(), expected)


async def test_replace_removes_series_that_vanished_from_the_source(
    backend: Backend, tmp_path: Path, start: datetime
) -> None:
    spec = job(start, aggregates={"temp": ["count"]}, replace=True)
    config = write_config(backend, tmp_path, {"down": spec})
    if backend.kind == "influxdb1":
        from tierflow import ConfigError, load_config

        with pytest.raises(ConfigError, match=r"replace = True: not supported on InfluxDB 1\.x"):
            load_config(config)
        return
    if backend.kind == "influxdb3":
        from tierflow import ConfigError, load_config

        with pytest.raises(ConfigError, match=r"InfluxDB 3 cannot delete a time range"):
            load_config(config)
        return
    # A first run writes two series; then one series is (as if) re-tagged at the source: the
    # re-run must leave only what the source now says.
    stale = Point("sensor", (("host", "old"), ("site", "x")), ns(start) + NS, {"temp": 1.0})
    kept = Point("sensor", (("host", "new"), ("site", "x")), ns(start) + 2 * NS, {"temp": 2.0})
    backend.write([stale, kept])
    async with open_runner(config) as runner:
        assert_all_succeeded(await runner.run_due(start + EVERY))
        assert len(backend.read_warm()) == 2
        # Delete the stale source point, then backfill the window.
        backend.delete_hot("sensor", {"host": "old"})
        rerun = await runner.backfill("down", start, start + EVERY, start + EVERY)

    assert {run.status for run in rerun} == {RunStatus.SUCCEEDED}
    assert_tier(
        backend.read_warm(),
        expected_tier([kept], grid(start, EVERY, 1), aggregates={"temp": ["count"]}),
    )


TEMPLATES = {
    # A user's own template per dialect: the window's max temp, scaled by a param, per series,
    # into "<measurement>_scaled". Both must write the same points.
    "influxdb1": (
        "scaled.influxql.j2",
        "SELECT max({{ 'temp' | influxql_ident }}) * {{ params.factor | influxql_number }}"
        " AS {{ 'temp_max' | influxql_ident }}\n"
        "INTO {{ dest.database | influxql_ident }}.{{ dest.retention_policy | influxql_ident }}"
        ".{{ (source.measurements[0] ~ '_scaled') | influxql_ident }}\n"
        "FROM {{ source.database | influxql_ident }}.."
        "{{ source.measurements[0] | influxql_ident }}\n"
        "WHERE time >= {{ window.start | influxql_time }}"
        " AND time < {{ window.stop | influxql_time }}\n"
        "-- the bucket is the window: coalesced batches stay per window\n"
        "GROUP BY time({{ window.every | influxql_duration }}), *\n",
    ),
    "influxdb2": (
        "scaled.flux.j2",
        "// the window's max temp per series, scaled\n"
        "from(bucket: {{ source.bucket | flux_string }})\n"
        "  |> range(start: {{ window.start | flux_time }}, stop: {{ window.stop | flux_time }})\n"
        "  |> filter(fn: (r) => r._measurement == {{ source.measurements[0] | flux_string }}"
        ' and r._field == "temp")\n'
        "  |> aggregateWindow(every: {{ window.every | flux_duration }}, fn: max,"
        ' createEmpty: false, timeSrc: "_start")\n'
        "  |> map(fn: (r) => ({r with _value: r._value * {{ params.factor | flux_number }}}))\n"
        '  |> set(key: "_field", value: "temp_max")\n'
        '  |> set(key: "_measurement", value: '
        "{{ (source.measurements[0] ~ '_scaled') | flux_string }})\n"
        "  |> to(bucket: {{ dest.bucket | flux_string }}, org: {{ dest.org | flux_string }})\n",
    ),
    "influxdb3": (
        "scaled.sql.j2",
        "-- the window's max temp per series, scaled; 3.x has no SELECT … INTO, so the dest\n"
        "-- is named as INSERT INTO and tierflow writes the rows\n"
        "INSERT INTO {{ dest.database | sql_ident }}"
        ".{{ (source.measurements[0] ~ '_scaled') | sql_ident }}\n"
        'SELECT date_bin({{ window.every | sql_interval }}, "time") AS "time",'
        ' "host", "site",\n'
        '  max("temp") * {{ params.factor | sql_literal }} AS "temp_max"\n'
        "FROM {{ source.database | sql_ident }}.{{ source.measurements[0] | sql_ident }}\n"
        'WHERE "time" >= {{ window.start | sql_time }} AND "time" < {{ window.stop | sql_time }}\n'
        'GROUP BY date_bin({{ window.every | sql_interval }}, "time"), "host", "site"\n',
    ),
}


async def test_a_user_template_writes_what_it_says(
    backend: Backend, tmp_path: Path, start: datetime
) -> None:
    name, text = TEMPLATES[backend.kind]
    (tmp_path / name).write_text(text, encoding="utf-8")
    points = telemetry(24, start)
    backend.write(points)
    spec = {
        "kind": "query",
        "template": name,
        "measurements": ["sensor"],
        "every": "5m",
        "start": start,
        "params": {"factor": 0.5},
        "catchup_chunk": "1h",
    }

    async with open_runner(write_config(backend, tmp_path, {"scaled": spec})) as runner:
        runs = await runner.run_due(start + SPAN)
        history = await runner.store.history("scaled", limit=1)

    assert_all_succeeded(runs)
    assert len(runs) == 2
    maxima = expected_tier(
        points,
        grid(start, EVERY, WINDOWS),
        aggregates={"temp": ["max"]},
        into=lambda m: f"{m}_scaled",
    )
    expected = {
        key: {"temp_max": fields["temp_max"] * 0.5}
        for key, fields in maxima.items()
        if "temp_max" in fields
    }
    assert expected
    assert_tier(backend.read_warm(), expected)
    import hashlib

    assert history[0].template_version == hashlib.sha256(text.encode()).hexdigest()[:12]


async def test_the_measurements_listed_are_those_with_points_in_the_window_of_the_tier(
    backend: Backend, tmp_path: Path, start: datetime
) -> None:
    """`Dialect.list_measurements` (what `measurements = "*"` resolves against): exactly the
    measurements with a point in `[start, stop)` of the tier itself, whatever else the
    database or org holds (1.x: another retention policy of the same database)."""
    at, width = ns(start), EVERY // timedelta(microseconds=1) * 1000

    def point(measurement: str, time: int, *tags: tuple[str, str]) -> Point:
        return Point(measurement, tags, time, {"v": 1})

    backend.write(
        [
            point("first", at),
            point("last", at + width - 1),
            point("tagged", at + 5, ("site", "paris")),
            point("h\u00f6stile, name=x", at + 7),
            point("before", at - 1),
            point("at_stop", at + width),
        ]
    )
    backend.write_warm([point("elsewhere", at + 3), point("first", at + 4)])
    window = Window(start, start + EVERY)
    async with open_runner(write_config(backend, tmp_path, {})) as runner:
        engine, tier = runner.engine("db"), runner.config.tiers["hot"]

        async def listed(tags: dict[str, str], wanted: Callable[[str], bool]) -> list[str]:
            return await engine.dialect.list_measurements(engine, tier, window, tags, wanted)

        everything = await listed({}, lambda _: True)
        paris = await listed({"site": "paris"}, lambda _: True)
        berlin = await listed({"site": "berlin"}, lambda _: True)
        some = await listed({}, wanted)

    assert everything == sorted(["first", "last", "tagged", "h\u00f6stile, name=x"])
    assert paris == ["tagged"]
    assert berlin == []
    # A dialect may skip what `wanted` refuses (the caller matches again), never add.
    assert set(some) <= set(everything)
    assert {name for name in some if wanted(name)} == {"first", "last"}


def wanted(name: str) -> bool:
    return name.startswith(("f", "l", "b", "a"))


async def test_listing_a_tier_whose_place_does_not_exist_fails_rather_than_finds_nothing(
    backend: Backend, tmp_path: Path, start: datetime
) -> None:
    """A pattern resolved against a database, retention policy or bucket that is not there must
    fail the window (an `EngineError`), never read as "no measurement had points" (a window
    recorded done with nothing archived)."""
    from tierflow._errors import EngineError

    backend.write([Point("first", (), ns(start), {"v": 1})])
    window = Window(start, start + EVERY)
    async with open_runner(write_config(backend, tmp_path, {})) as runner:
        engine, tier = runner.engine("db"), runner.config.tiers["hot"]
        database, slash, policy = tier.bucket.partition("/")
        gone = [tier.model_copy(update={"bucket": f"{database}_gone{slash}{policy}"})]
        if slash:  # 1.x: a retention policy missing from a database that exists
            gone.append(tier.model_copy(update={"bucket": f"{database}/{policy}_gone"}))
        for missing in gone:
            with pytest.raises(EngineError):
                await engine.dialect.list_measurements(engine, missing, window, {}, wanted)
