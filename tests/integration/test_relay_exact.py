"""A relay writes exactly the points `SELECT … INTO` writes, over sparse data.

A relay (source and dest tiers on different connections) reads the aggregates back and writes
them itself. Out of 1.x that read is a SELECT without INTO, and InfluxQL answers it with a row
for every bucket of the range, empty ones included (count 0, the rest null), and with a count of
0 for a field a bucket lacks while another field fills it; INTO writes neither. The oracle is
InfluxDB's own answer: the same job on one connection (`SELECT … INTO`) over the same data, and
a point count worked out by hand from the layout below.

Out of 2.x the source is the recording stand-in (`tests/influx2_standin.py`), which runs no Flux:
it answers the relay's script with the pivoted table a 2.x server builds from the oracle's
points, the cells of a window's missing columns empty (Flux's pivot leaves them null), plus an
all-empty row per empty window that a careless script could return. The real influxd stores
what tierflow wrote, which must again equal the oracle.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fluxcheck import FluxChecker, flux_checker
from tests.influx2_standin import Point, StandIn, pivoted_csv
from tests.integration._helpers import run_due
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
from tierflow.testing import ThrowawayInfluxd

__all__ = ["flux_checker"]

NS = 1_000_000_000
EVERY = timedelta(minutes=5)
BUCKETS = 12  # one hour
TOKEN = "relay-exact-token"
AGGREGATES = {"temp": ["mean", "max", "count", "stddev"], "n": ["sum", "count", "first", "spread"]}

# Per series, per 5-minute bucket: which fields its points carry, and how many points. The
# other buckets are empty; "b c" appears in two buckets only. Eight (bucket, series) pairs hold
# data, so INTO writes eight points.
LAYOUT: dict[str, dict[int, tuple[tuple[str, ...], int]]] = {
    "a": {
        0: (("temp", "n"), 2),
        1: (("temp",), 1),  # one point: stddev is null, n has nothing to count
        2: (("n",), 2),
        6: (("temp",), 2),
        8: (("n",), 1),
        11: (("temp", "n"), 3),
    },
    "b c": {6: (("temp", "n"), 2), 11: (("n",), 1)},
}
EXPECTED_POINTS = sum(len(buckets) for buckets in LAYOUT.values())


@pytest.fixture
def start() -> datetime:
    # Recent: the `warm` RP (400d) refuses older points.
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)


def sparse_lines(start: datetime) -> list[str]:
    lines = []
    for host, buckets in LAYOUT.items():
        escaped = host.replace(" ", "\\ ")
        for bucket, (fields, count) in buckets.items():
            for i in range(count):
                ns = int((start + bucket * EVERY).timestamp()) * NS + (7 + 61 * i) * NS
                values = {"temp": f"temp={bucket * 1.25 + i * 0.5!r}", "n": f"n={bucket - 3 * i}i"}
                lines.append(f"m,host={escaped} {','.join(values[f] for f in fields)} {ns}")
    return lines


def write_config(
    directory: Path,
    influxd: ThrowawayInfluxd,
    tiers: Mapping[str, tuple[str, str]],
    start: datetime,
    chunk: str,
    standin: StandIn | None = None,
) -> Path:
    """A config with two 1.x connections to the one influxd (`plant` and `remote`: a job between
    them is a relay) and, with `standin`, a 2.x connection `cloud` to it."""
    directory.mkdir()
    plant = {"kind": "influxdb1", "url": influxd.url}
    tables: dict[str, Mapping[str, object]] = {
        "state": sqlite_state(directory),
        "connections.plant": plant,
        "connections.remote": plant,
    }
    if standin is not None:
        tables["connections.cloud"] = {
            "kind": "influxdb2",
            "url": standin.url,
            "org": "acme",
            "token": {"env": "TF_RELAY_EXACT_TOKEN"},
        }
    for name, (connection, bucket) in tiers.items():
        tables[f"tiers.{name}"] = {"connection": connection, "bucket": bucket}
    tables["jobs.down"] = {
        "kind": "downsample",
        "source": "hot",
        "dest": "warm",
        "measurements": ["m"],
        "every": "5m",
        "catchup_chunk": chunk,
        "start": start,
        "aggregates": AGGREGATES,
    }
    return write_toml(directory, tables)


async def run_hour(path: Path, start: datetime, queries: int) -> None:
    runs = await run_due(path, start + BUCKETS * EVERY)
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [r.error for r in runs]
    assert len(runs) == queries
    assert sum(len(r.batch.windows) for r in runs) == BUCKETS


async def select_into(
    tmp_path: Path, influxd: ThrowawayInfluxd, source: str, start: datetime, chunk: str
) -> TierData:
    """The job on one connection (SELECT … INTO) into `source`.warm: InfluxDB's own answer."""
    tiers = {"hot": ("plant", f"{source}/autogen"), "warm": ("plant", f"{source}/warm")}
    await run_hour(write_config(tmp_path / "oracle", influxd, tiers, start, chunk), start, 1)
    expected = read_tier(influxd, source, "warm")
    assert len(expected) == EXPECTED_POINTS
    return expected


# catchup_chunk → queries for the hour: one window per query, or the hour coalesced into one.
CHUNKS = {"5m": BUCKETS, "1h": 1}


@pytest.mark.parametrize("chunk", list(CHUNKS))
async def test_a_1x_relay_over_sparse_data_writes_exactly_what_select_into_writes(
    tmp_path: Path,
    influxd: ThrowawayInfluxd,
    databases: Databases,
    start: datetime,
    chunk: str,
) -> None:
    source, dest = databases.new(), databases.new()
    influxd.write(sparse_lines(start), db=source)
    # The oracle runs coalesced: INTO's answer does not depend on the chunk.
    expected = await select_into(tmp_path, influxd, source, start, "1h")
    tiers = {"hot": ("plant", f"{source}/autogen"), "warm": ("remote", f"{dest}/warm")}

    await run_hour(
        write_config(tmp_path / "relay", influxd, tiers, start, chunk), start, CHUNKS[chunk]
    )

    relayed = read_tier(influxd, dest, "warm")
    assert len(relayed) == EXPECTED_POINTS  # coalesced without fill(none): 24, every bucket
    assert relayed.keys() == expected.keys()  # no point for an empty bucket, none missing
    assert relayed == expected  # no field INTO leaves out (n_count = 0 where only temp was)
    assert field_types(influxd, dest, "warm", "m") == field_types(influxd, source, "warm", "m")
    # And by hand: where host a had one temp point and no n, the point has no n field at all.
    lone = relayed[("m", int((start + EVERY).timestamp()) * NS, frozenset({("host", "a")}))]
    assert lone == {"temp_mean": 1.25, "temp_max": 1.25, "temp_count": 1}


async def test_a_2x_relay_over_sparse_data_writes_exactly_what_select_into_writes(
    tmp_path: Path,
    influxd: ThrowawayInfluxd,
    databases: Databases,
    start: datetime,
    flux_checker: FluxChecker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, dest = databases.new(), databases.new()
    influxd.write(sparse_lines(start), db=source)
    expected = await select_into(tmp_path, influxd, source, start, "1h")
    answer: list[Point] = typed(expected, field_types(influxd, source, "warm", "m"))
    # An all-empty row for every window a series has no data in: none may become a point.
    present = {(time, tags) for time, tags, _ in answer}
    answer += [
        (time, tags, ())
        for time in (int((start + b * EVERY).timestamp()) * NS for b in range(BUCKETS))
        for tags in ((("host", host),) for host in LAYOUT)
        if (time, tags) not in present
    ]
    monkeypatch.setenv("TF_RELAY_EXACT_TOKEN", TOKEN)
    standin = StandIn(tokens={TOKEN}, org="acme", buckets={"hot"})
    standin.on_query = lambda script: pivoted_csv(in_range(script, answer))
    await standin.start()
    try:
        tiers = {"hot": ("cloud", "hot"), "warm": ("plant", f"{dest}/warm")}
        path = write_config(tmp_path / "relay", influxd, tiers, start, "1h", standin)
        await run_hour(path, start, 1)
    finally:
        await standin.stop()

    (script,) = [r.json()["query"] for r in standin.requests if r.path == "/api/v2/query"]
    assert flux_checker.is_valid(script), script
    assert script.count("createEmpty: false") == 8  # one aggregateWindow per (field, function)
    assert read_tier(influxd, dest, "warm") == expected
    assert field_types(influxd, dest, "warm", "m") == field_types(influxd, source, "warm", "m")
