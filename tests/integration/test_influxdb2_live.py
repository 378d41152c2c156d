"""The 2.x half of the lifecycle against a *live* InfluxDB 2.x: archive from a 2.x bucket,
restore into one, and relays 1.x → 2.x and 2.x → 1.x. Runs only when
`TIERFLOW_TEST_INFLUXDB2_URL`, `TIERFLOW_TEST_INFLUXDB2_TOKEN` and `TIERFLOW_TEST_INFLUXDB2_ORG`
are set (an all-access token: buckets are created and deleted here); otherwise every case is
skipped, saying so. No 2.x server can be installed on the machines that run CI, so this suite
has not run there: the stand-in suite (`test_influxdb2_transfer.py`) covers the request contract.

The 1.x side is the session's throwaway influxd. Expected values are computed in Python from
the points written (`expected_tier`), or are the points themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.integration._helpers import (
    EVERY,
    SPAN,
    WINDOWS,
    Point,
    assert_tier,
    expected_tier,
    grid,
    job,
    ns,
    open_runner,
    run_due,
    telemetry,
    write_points,
)
from tests.integration.conftest import (
    Databases,
    TableBody,
    TierData,
    read_tier,
    sqlite_state,
    write_toml,
)
from tests.integration.test_engine_contract import InfluxDB2, live_influxdb2
from tierflow import RunStatus
from tierflow._archive import open_archive
from tierflow._archiving import restore
from tierflow.testing import ThrowawayInfluxd

AGGREGATES = {"temp": ["mean", "max", "count"], "errors": ["sum", "last"]}


@pytest.fixture
def live() -> Iterator[InfluxDB2]:
    yield from live_influxdb2()


def write_config(
    directory: Path,
    tiers: dict[str, tuple[str, str]],
    job_table: dict[str, object],
    *,
    live: InfluxDB2,
    influxd: ThrowawayInfluxd,
) -> Path:
    tables: dict[str, TableBody] = {
        "state": sqlite_state(directory),
        "connections.cloud": live.connection_toml(),
        "connections.plant": {"kind": "influxdb1", "url": influxd.url},
    }
    for name, (connection, where) in tiers.items():
        archive = connection == "archive"
        tables[f"tiers.{name}"] = (
            {"archive": where} if archive else {"connection": connection, "bucket": where}
        )
    tables["jobs.job"] = job_table
    return write_toml(directory, tables)


async def relay(
    directory: Path,
    servers: tuple[InfluxDB2, ThrowawayInfluxd],
    points: list[Point],
    start: datetime,
    *,
    hot: tuple[str, str],
    warm: tuple[str, str],
) -> TierData:
    """Relay `points` over the whole span from tier `hot` to tier `warm` (each a connection and
    a bucket); the tier it must have written, computed here."""
    relay_job = {"kind": "downsample", "source": "hot", "dest": "warm"}
    live, influxd = servers
    path = write_config(
        directory,
        {"hot": hot, "warm": warm},
        {**relay_job, **job(start, aggregates=AGGREGATES)},
        live=live,
        influxd=influxd,
    )
    runs = await run_due(path, start + SPAN)
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}
    return expected_tier(points, grid(start, EVERY, WINDOWS), aggregates=AGGREGATES)


def as_tier(points: list[Point], start: datetime, stop: datetime) -> TierData:
    """The points themselves as a tier (what an exact restore gives back)."""
    chosen = [p for p in points if ns(start) <= p.time < ns(stop)]
    return {(p.measurement, p.time, frozenset(p.tags)): dict(p.fields) for p in chosen}


async def test_a_2x_bucket_archives_exactly_and_restores_into_2x(
    live: InfluxDB2, influxd: ThrowawayInfluxd, tmp_path: Path, start: datetime
) -> None:
    points = telemetry(21, start)
    live.write(points)
    path = write_config(
        tmp_path,
        {
            "hot": ("cloud", live.hot()),
            "warm": ("cloud", live.warm()),
            "cold": ("archive", str(tmp_path / "cold")),
        },
        {
            "kind": "archive",
            "source": "hot",
            "dest": "cold",
            "measurements": ["sensor"],
            "every": "1h",
            "start": start,
        },
        live=live,
        influxd=influxd,
    )
    async with open_runner(path) as runner:
        runs = await runner.run_due(start + SPAN + timedelta(minutes=1))
        assert {r.status for r in runs} == {RunStatus.SUCCEEDED}
        archive = open_archive(str(tmp_path / "cold"))
        assert archive.verify() == []
        moved = await restore(
            archive,
            runner.engine("cloud"),
            runner.config.tiers["warm"],
            start=start,
            stop=start + SPAN,
            measurement=None,
            max_concurrency=4,
        )
    expected = as_tier(points, start, start + SPAN)
    assert moved.points == len(expected)
    assert_tier(live.read_warm(), expected)


async def test_a_relay_from_1x_writes_the_aggregates_into_a_2x_bucket(
    live: InfluxDB2,
    influxd: ThrowawayInfluxd,
    databases: Databases,
    tmp_path: Path,
    start: datetime,
) -> None:
    source = databases.new()
    points = telemetry(22, start)
    write_points(influxd, source, points)
    hot, warm = ("plant", f"{source}/autogen"), ("cloud", live.warm())
    expected = await relay(tmp_path, (live, influxd), points, start, hot=hot, warm=warm)
    assert_tier(live.read_warm(), expected)


async def test_a_relay_from_2x_writes_the_aggregates_into_a_1x_database(
    live: InfluxDB2,
    influxd: ThrowawayInfluxd,
    databases: Databases,
    tmp_path: Path,
    start: datetime,
) -> None:
    dest = databases.new()
    points = telemetry(23, start)
    live.write(points)
    hot, warm = ("cloud", live.hot()), ("plant", f"{dest}/warm")
    expected = await relay(tmp_path, (live, influxd), points, start, hot=hot, warm=warm)
    assert_tier(read_tier(influxd, dest, "warm"), expected)
