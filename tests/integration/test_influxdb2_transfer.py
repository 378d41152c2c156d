"""The 2.x half of the lifecycle: relays from 1.x to 2.x and back, an archive job reading a 2.x
tier, and a restore into one.

Which parts are real:
- InfluxDB 1.x is the session's throwaway influxd 1.6: a relay's source or dest, and the oracle.
- InfluxDB 2.x is the recording stand-in of its HTTP API (`tests/influx2_standin.py`), because
  no 2.x server can be installed here. It checks the request contract only and runs no Flux:
  where it must answer a query, it answers with annotated CSV built by the test from data the
  real 1.x server computed or stored (`pivoted_csv`). What a real 2.x makes of the scripts is
  the live suite's (`test_influxdb2_live.py`, run when a 2.x URL is given); every script sent
  here is also type-checked by the official Flux checker.
- Line protocol that tierflow posted to the stand-in is replayed into the real influxd, so a
  real server parses every byte tierflow wrote, and what it stored is compared with the oracle.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fluxcheck import FluxChecker, flux_checker
from tests.influx2_standin import (
    Answer,
    Point,
    StandIn,
    annotated_csv,
    error_answer,
    error_csv,
    pivoted_csv,
    running_in_thread,
    unpivoted_csv,
)
from tests.integration._helpers import open_runner
from tests.integration.conftest import (
    Databases,
    TierData,
    field_types,
    read_tier,
    sqlite_state,
    write_toml,
)
from tierflow import RunStatus
from tierflow._archive import open_archive
from tierflow._archiving import restore
from tierflow.testing import ThrowawayInfluxd

__all__ = ["flux_checker"]

TOKEN = "stand-in-token-7"
TIERFLOW = str(Path(sys.executable).parent / "tierflow")
NS = 1_000_000_000
AGGREGATES = {"temp": ["mean", "max", "first"], "n": ["sum", "count", "last", "spread"]}
HOSTS = ("a", "b c", "d,e", "f=g")


@pytest.fixture
async def standin(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StandIn]:
    monkeypatch.setenv("TF_STANDIN_TOKEN", TOKEN)
    server = StandIn(tokens={TOKEN}, org="acme", buckets={"hot", "warm"})
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def start() -> datetime:
    # Recent: the 1.x `warm` RP (400d) refuses older points.
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)


def escape_tag(text: str) -> str:
    return text.replace(" ", "\\ ").replace(",", "\\,").replace("=", "\\=")


def raw_points(start: datetime, count: int = 2000) -> list[Point]:
    rng = random.Random(17)
    points: list[Point] = []
    for _ in range(count):
        nanos = int(start.timestamp()) * NS + rng.randrange(0, 2 * 3600 * NS)
        fields: dict[str, Any] = {"temp": rng.uniform(-20, 40), "n": rng.randint(-(2**40), 2**40)}
        if rng.random() < 0.3:
            fields["ok"] = rng.random() < 0.5
        points.append((nanos, (("host", rng.choice(HOSTS)),), tuple(sorted(fields.items()))))
    return points


def lp_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value}i" if isinstance(value, int) else repr(value)


def line(measurement: str, point: Point) -> str:
    time, tags, fields = point
    tag_text = "".join(f",{k}={escape_tag(v)}" for k, v in tags)
    values = ",".join(f"{k}={lp_value(v)}" for k, v in fields)
    return f"{measurement}{tag_text} {values} {time}"


def config(
    tmp_path: Path,
    influxd: ThrowawayInfluxd,
    standin: StandIn,
    tiers: dict[str, tuple[str, str]],
    job: tuple[str, Mapping[str, object]],
) -> Path:
    """`tmp_path/tierflow.toml`: connections `plant` (the influxd) and `cloud` (the stand-in),
    `tiers` as (connection or "archive", bucket or archive URL), and the one (name, body) `job`."""
    tables: dict[str, Mapping[str, object]] = {
        "state": sqlite_state(tmp_path),
        "connections.plant": {"kind": "influxdb1", "url": influxd.url},
        "connections.cloud": {
            "kind": "influxdb2",
            "url": standin.url,
            "org": "acme",
            "token": {"env": "TF_STANDIN_TOKEN"},
        },
    }
    for name, (connection, where) in tiers.items():
        archive = connection == "archive"
        tables[f"tiers.{name}"] = (
            {"archive": where} if archive else {"connection": connection, "bucket": where}
        )
    name, body = job
    tables[f"jobs.{name}"] = body
    return write_toml(tmp_path, tables)


def downsample(start: datetime, **overrides: object) -> tuple[str, dict[str, object]]:
    body = {
        "kind": "downsample",
        "source": "hot",
        "dest": "warm",
        "measurements": ["m"],
        "every": "10m",
        "start": start,
        **overrides,
        "aggregates": AGGREGATES,
    }
    return "down", body


async def run(path: Path, now: datetime) -> list[Any]:
    async with open_runner(path) as runner:
        return await runner.run_due(now)


def replay(influxd: ThrowawayInfluxd, standin: StandIn, db: str) -> list[dict[str, str]]:
    """Post every body the stand-in accepted (204) into the real influxd (db.warm); return the
    write requests' query parameters."""
    writes = [r for r in standin.requests if r.path == "/api/v2/write" and r.status == 204]
    for request in writes:
        influxd.write(request.body, db=db, rp="warm")
    return [r.query for r in writes]


def typed(tier: TierData, types: dict[str, str]) -> list[Point]:
    """A 1.x tier's points with the types `SHOW FIELD KEYS` gives (JSON says 2 for 2.0)."""
    cast = {"float": float, "integer": int, "boolean": bool, "string": str}
    return [
        (time, tuple(sorted(tags)), tuple(sorted((k, cast[types[k]](v)) for k, v in row.items())))
        for (_, time, tags), row in tier.items()
    ]


_RANGE = re.compile(r"range\(start: (\S+), stop: (\S+)\)")


def in_range(script: str, points: Iterable[Point]) -> list[Point]:
    first, stop = (
        int(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()) * NS
        for t in _RANGE.search(script).groups()  # type: ignore[union-attr]
    )
    return [p for p in points if first <= p[0] < stop]


def relay_into_standin(
    tmp_path: Path,
    influxd: ThrowawayInfluxd,
    standin: StandIn,
    source: str,
    job: tuple[str, Mapping[str, object]],
) -> Path:
    """A config running `job` from the 1.x database `source` into the stand-in's `warm`."""
    tiers = {"hot": ("plant", f"{source}/autogen"), "warm": ("cloud", "warm")}
    return config(tmp_path, influxd, standin, tiers, job)


async def oracle(
    tmp_path: Path, influxd: ThrowawayInfluxd, standin: StandIn, source: str, start: datetime
) -> tuple[str, TierData]:
    """The same job as SELECT … INTO on the real influxd: the expected warm tier."""
    local = source + "_oracle"
    influxd.execute(f'CREATE RETENTION POLICY "warm" ON "{source}" DURATION 400d REPLICATION 1')
    directory = tmp_path / "oracle"
    directory.mkdir()
    path = config(
        directory,
        influxd,
        standin,
        {"hot": ("plant", f"{source}/autogen"), "warm": ("plant", f"{source}/warm")},
        downsample(start),
    )
    runs = await run(path, start + timedelta(hours=2))
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}
    del local
    return source, read_tier(influxd, source, "warm")


async def test_a_relay_from_1x_to_2x_writes_what_select_into_writes(
    tmp_path: Path,
    influxd: ThrowawayInfluxd,
    databases: Databases,
    standin: StandIn,
    start: datetime,
) -> None:
    source, replayed = databases.new(), databases.new()
    influxd.write([line("m", p) for p in raw_points(start)], db=source)
    _, expected = await oracle(tmp_path, influxd, standin, source, start)
    path = relay_into_standin(tmp_path, influxd, standin, source, downsample(start))

    runs = await run(path, start + timedelta(hours=2))

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}
    assert sum(len(r.batch.windows) for r in runs) == 12
    sent = replay(influxd, standin, replayed)
    assert sent
    assert all(q == {"org": "acme", "bucket": "warm", "precision": "ns"} for q in sent)
    assert read_tier(influxd, replayed, "warm") == expected
    assert field_types(influxd, replayed, "warm", "m") == field_types(influxd, source, "warm", "m")
    assert sum(r.points_written for r in runs) == len(expected)


async def test_a_replacing_relay_into_2x_deletes_each_dest_window_before_writing_it(
    tmp_path: Path,
    influxd: ThrowawayInfluxd,
    databases: Databases,
    standin: StandIn,
    start: datetime,
) -> None:
    source = databases.new()
    influxd.write([line("m", p) for p in raw_points(start, 300)], db=source)
    job = downsample(start, into="m_10m", replace=True)
    path = relay_into_standin(tmp_path, influxd, standin, source, job)

    runs = await run(path, start + timedelta(hours=2))

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}
    order = [r for r in standin.requests if r.path in {"/api/v2/delete", "/api/v2/write"}]
    deleted: list[tuple[str, str]] = []
    for request in order:
        if request.path == "/api/v2/delete":
            body = request.json()
            assert request.query == {"org": "acme", "bucket": "warm"}
            assert body["predicate"] == '_measurement="m_10m"'
            deleted.append((body["start"], body["stop"]))
        else:
            assert deleted, "a write came before its window was deleted"
    ranges = [(r.batch.range.start, r.batch.range.stop) for r in runs]
    assert order[0].path == "/api/v2/delete"
    assert [datetime.fromisoformat(a.replace("Z", "+00:00")) for a, _ in deleted] == [
        low for low, _ in ranges
    ]
    for (_, high), (_, stop) in zip(ranges, deleted, strict=True):
        # The delete API's stop is inclusive: one nanosecond before the window's end.
        assert stop == (high - timedelta(microseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "999Z"


async def test_a_relay_from_2x_to_1x_reads_pivoted_aggregates_and_writes_them_exactly(
    tmp_path: Path,
    influxd: ThrowawayInfluxd,
    databases: Databases,
    standin: StandIn,
    start: datetime,
    flux_checker: FluxChecker,
) -> None:
    source, dest = databases.new(), databases.new()
    influxd.write([line("m", p) for p in raw_points(start)], db=source)
    _, expected = await oracle(tmp_path, influxd, standin, source, start)
    types = field_types(influxd, source, "warm", "m")
    aggregates = typed(expected, types)  # what a 2.x server would answer, as typed points
    standin.on_query = lambda script: pivoted_csv(in_range(script, aggregates))
    path = config(
        tmp_path,
        influxd,
        standin,
        {"hot": ("cloud", "hot"), "warm": ("plant", f"{dest}/warm")},
        downsample(start),
    )

    runs = await run(path, start + timedelta(hours=2))

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}
    scripts = [r.json()["query"] for r in standin.requests if r.path == "/api/v2/query"]
    assert scripts
    for script in scripts:
        assert flux_checker.is_valid(script), script
        assert "to(" not in script
        assert "pivot(" in script
    assert read_tier(influxd, dest, "warm") == expected
    assert field_types(influxd, dest, "warm", "m") == types


def archive_job(start: datetime) -> tuple[str, dict[str, object]]:
    body = {
        "kind": "archive",
        "source": "hot",
        "dest": "cold",
        "measurements": ["m"],
        "every": "1h",
        "start": start,
    }
    return "keep", body


def counts(points: Iterable[Point]) -> dict[str, int]:
    found: dict[str, int] = {}
    for _, _, fields in points:
        for name, _ in fields:
            found[name] = found.get(name, 0) + 1
    return found


def count_csv(by_field: dict[str, int]) -> bytes:
    return annotated_csv(
        [(["_field", "_value"], ["string", "long"], [[k, str(v)]]) for k, v in by_field.items()],
        group_key=[["_field"]] * len(by_field),
    )


Export = Callable[[str, list[Point]], bytes | Answer]


def pivoted(script: str, chosen: list[Point]) -> bytes:
    return pivoted_csv(chosen)


def as_asked(script: str, chosen: list[Point]) -> bytes:
    """Pivoted if the script pivots, else one row per field value."""
    return pivoted_csv(chosen) if "pivot(" in script else unpivoted_csv(chosen)


def answer(points: list[Point], *, extra: int = 0, export: Export = pivoted) -> Any:
    """The stand-in's answers for an archive job: the points of the script's range as `export`
    gives them (pivoted unless told), or their counts per field (plus `extra` on each, to fake
    a source that changed)."""

    def on_query(script: str) -> bytes | Answer:
        chosen = in_range(script, points)
        if "count()" in script:
            return count_csv({k: v + extra for k, v in counts(chosen).items()})
        return export(script, chosen)

    return on_query


def archive_config(
    tmp_path: Path, influxd: ThrowawayInfluxd, standin: StandIn, start: datetime
) -> Path:
    """The `archive_job` from the stand-in's `hot` bucket to the archive tier `tmp_path/cold`."""
    cold = {"hot": ("cloud", "hot"), "cold": ("archive", str(tmp_path / "cold"))}
    return config(tmp_path, influxd, standin, cold, archive_job(start))


async def test_a_2x_tier_archives_to_parquet_and_restores_into_2x_point_for_point(
    tmp_path: Path,
    influxd: ThrowawayInfluxd,
    databases: Databases,
    standin: StandIn,
    start: datetime,
    flux_checker: FluxChecker,
) -> None:
    points = raw_points(start)
    standin.on_query = answer(points)
    cold = tmp_path / "cold"
    job = archive_job(start)
    path = config(
        tmp_path,
        influxd,
        standin,
        {"hot": ("cloud", "hot"), "warm": ("cloud", "warm"), "cold": ("archive", str(cold))},
        job,
    )

    runs = await run(path, start + timedelta(hours=2))

    assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * len(runs)
    assert sum(len(r.batch.windows) for r in runs) == 2
    assert sum(r.points_written for r in runs) == len(points)
    for script in (r.json()["query"] for r in standin.requests if r.path == "/api/v2/query"):
        assert flux_checker.is_valid(script), script
    archive = open_archive(str(cold))
    assert archive.verify() == []
    archived = [
        (
            time,
            tuple(sorted((t, row[t]) for t in batch.points.tags if row[t] is not None)),
            tuple(sorted((f, row[f]) for f in batch.points.fields if row[f] is not None)),
        )
        for batch in archive.read(start, start + timedelta(hours=2))
        for time, row in zip(
            batch.points.data.column("time").cast("int64").to_pylist(),
            batch.points.data.drop_columns(["time"]).to_pylist(),
            strict=True,
        )
    ]
    assert sorted(archived) == sorted(points)

    # Restore into the 2.x warm bucket; a real server parses what was posted.
    async with open_runner(path) as runner:
        moved = await restore(
            archive,
            runner.engine("cloud"),
            runner.config.tiers["warm"],
            start=start,
            stop=start + timedelta(hours=2),
            measurement=None,
            max_concurrency=2,
        )
    assert moved.points == len(points)
    assert moved.dropped == 0
    replayed = databases.new()
    sent = replay(influxd, standin, replayed)
    assert {q["bucket"] for q in sent} == {"warm"}
    assert sorted(
        typed(read_tier(influxd, replayed, "warm"), field_types(influxd, replayed, "warm", "m"))
    ) == sorted(points)
    assert field_types(influxd, replayed, "warm", "m") == {
        "temp": "float",
        "n": "integer",
        "ok": "boolean",
    }


async def test_an_archive_whose_count_disagrees_with_the_source_is_not_done(
    tmp_path: Path, influxd: ThrowawayInfluxd, standin: StandIn, start: datetime
) -> None:
    standin.on_query = answer(raw_points(start, 300), extra=1)
    path = archive_config(tmp_path, influxd, standin, start)

    runs = await run(path, start + timedelta(hours=2))

    assert runs
    assert {r.status for r in runs} == {RunStatus.FAILED}
    assert all("not recorded as done" in (r.error or "") for r in runs)


def test_the_restore_command_writes_a_1x_archive_into_a_2x_tier(
    tmp_path: Path, influxd: ThrowawayInfluxd, databases: Databases, start: datetime
) -> None:
    """Edge 1.x → cold tier → central 2.x, through the `tierflow` command; the token is never
    printed."""
    source, replayed = databases.new(), databases.new()
    points = raw_points(start, 1500)
    influxd.write([line("m", p) for p in points], db=source)
    standin = StandIn(tokens={TOKEN}, org="acme", buckets={"warm"})
    with running_in_thread(standin):
        path = config(
            tmp_path,
            influxd,
            standin,
            {
                "hot": ("plant", f"{source}/autogen"),
                "cold": ("archive", str(tmp_path / "cold")),
                "central": ("cloud", "warm"),
            },
            archive_job(start),
        )
        env = {**os.environ, "TF_STANDIN_TOKEN": TOKEN}
        until = rfc3339(start + timedelta(hours=2))
        archived = tierflow_command(path, env, "run-once", "--now", until, "--json")
        assert json.loads(archived.stdout)["succeeded"] == 2
        restored = tierflow_command(
            path, env, "restore", "cold", "--from", rfc3339(start), "--to", until,
            "--into", "central", "--json",
        )  # fmt: skip
    assert json.loads(restored.stdout)["points"] == len(points)
    replay(influxd, standin, replayed)
    types = field_types(influxd, replayed, "warm", "m")
    assert sorted(typed(read_tier(influxd, replayed, "warm"), types)) == sorted(points)
    assert types == field_types(influxd, source, "autogen", "m")
    for output in (archived, restored):
        assert TOKEN not in output.stdout + output.stderr


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def tierflow_command(
    path: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [TIERFLOW, *args, "-c", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


async def test_a_relay_into_2x_never_drops_a_refused_body(
    tmp_path: Path,
    influxd: ThrowawayInfluxd,
    databases: Databases,
    standin: StandIn,
    start: datetime,
) -> None:
    """Busy answers are retried; a refusal fails the window, which stays due and is written
    whole by the next run: the dest ends exactly like SELECT INTO, nothing lost or doubled."""
    source, replayed = databases.new(), databases.new()
    influxd.write([line("m", p) for p in raw_points(start)], db=source)
    _, expected = await oracle(tmp_path, influxd, standin, source, start)
    path = relay_into_standin(tmp_path, influxd, standin, source, downsample(start))
    busy = error_answer(503, "busy", **{"Retry-After": "0"})
    standin.script("/api/v2/write", busy, busy, error_answer(422, "points beyond retention"))

    first = await run(path, start + timedelta(hours=2))
    second = await run(path, start + timedelta(hours=2))

    assert [r.status for r in first].count(RunStatus.FAILED) == 1
    assert {r.status for r in second} == {RunStatus.SUCCEEDED}
    assert [r.batch for r in second] == [r.batch for r in first if r.status is RunStatus.FAILED]
    statuses = [r.status for r in standin.requests if r.path == "/api/v2/write"]
    assert statuses[:3] == [503, 503, 422]
    replay(influxd, standin, replayed)
    assert read_tier(influxd, replayed, "warm") == expected


COLLISION = 'schema collision detected: column "n" is both of type float and int'


@pytest.mark.parametrize(
    "collision",
    [error_csv(COLLISION), error_answer(400, COLLISION)],
    ids=["error table in the stream", "HTTP error before it"],
)
async def test_a_field_with_two_types_is_archived_unpivoted_not_crashed_on(
    tmp_path: Path,
    influxd: ThrowawayInfluxd,
    standin: StandIn,
    start: datetime,
    collision: bytes | Answer,
) -> None:
    """2.x cannot pivot a field written as an integer in one shard and a float in another; the
    archive job falls back to one row per field value and still archives every value."""
    base = int(start.timestamp()) * NS
    points: list[Point] = [
        (base + i * 60 * NS, (("host", "a" if i % 2 else "b"),), (("n", i if i < 40 else i + 0.5),))
        for i in range(80)
    ]

    def export(script: str, chosen: list[Point]) -> bytes | Answer:
        return collision if "pivot(" in script else unpivoted_csv(chosen)

    standin.on_query = answer(points, export=export)
    path = archive_config(tmp_path, influxd, standin, start)

    runs = await run(path, start + timedelta(hours=2))

    assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * 2
    scripts = [r.json()["query"] for r in standin.requests if r.path == "/api/v2/query"]
    exports = [s for s in scripts if "count()" not in s]
    assert ["pivot(" in s for s in exports] == [True, False, True, False]  # per window
    archive = open_archive(str(tmp_path / "cold"))
    assert archive.verify() == []
    found: dict[tuple[int, str], float] = {}
    for batch in archive.read(start, start + timedelta(hours=2)):
        data = batch.points.data
        # One column per type the field came as (`n::integer`, `n::float`): nothing widened.
        for name in batch.points.fields:
            assert batch.points.key(name) == "n"
            for time, host, value in zip(
                data.column("time").cast("int64").to_pylist(),
                data.column("host").to_pylist(),
                data.column(name).to_pylist(),
                strict=True,
            ):
                if value is not None:
                    found[(time, host)] = value
    expected = {(t, dict(tags)["host"]): dict(f)["n"] for t, tags, f in points}
    assert found == expected
    assert {type(v) for k, v in found.items()} == {int, float}
    assert all(type(found[key]) is type(value) for key, value in expected.items())


async def test_an_empty_string_on_2x_is_archived_as_an_empty_string_not_a_missing_value(
    tmp_path: Path, influxd: ThrowawayInfluxd, standin: StandIn, start: datetime
) -> None:
    """A pivoted row writes "" and a missing value alike (an empty cell); the count check sees
    the difference, and the window is read again unpivoted, where every row is a value."""
    base = int(start.timestamp()) * NS
    points: list[Point] = [
        (base + 1 * NS, (("host", "a"),), (("note", ""), ("n", 1))),
        (base + 2 * NS, (("host", "a"),), (("n", 2),)),
        (base + 3 * NS, (("host", "a"),), (("note", 'multi\nline "q" \\'),)),
    ]

    standin.on_query = answer(points, export=as_asked)
    path = archive_config(tmp_path, influxd, standin, start)
    runs = await run(path, start + timedelta(hours=1))
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED]
    archive = open_archive(str(tmp_path / "cold"))
    found: dict[int, dict[str, object]] = {}
    for batch in archive.read(start, start + timedelta(hours=1)):
        data = batch.points.data
        times = data.column("time").cast("int64").to_pylist()
        for name in batch.points.fields:
            for time, value in zip(times, data.column(name).to_pylist(), strict=True):
                if value is not None:
                    found.setdefault(time, {})[batch.points.key(name)] = value
    assert found == {t: dict(f) for t, _, f in points}
