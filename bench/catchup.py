"""Catch-up benchmark: 720 one-minute windows run window by window, coalesced into 6-hour
queries, and as one hand-written `SELECT … INTO` (the floor), side by side on one throwaway
`influxd`. Reports medians, the ratios, and tierflow's own overhead per window (wall time not
spent waiting on InfluxDB).

    make bench            # or: .venv/bin/python bench/catchup.py [--repeat 5] [--hosts 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tierflow import MemoryStateStore, Runner
from tierflow._config import parse_config
from tierflow.testing import ThrowawayInfluxd

WINDOWS = 720
START = datetime(2026, 11, 1, tzinfo=UTC)
STOP = START + timedelta(minutes=WINDOWS)
RESULTS = Path(__file__).parent / "results"


@dataclass
class Sample:
    wall_s: float
    server_s: float
    queries: int


def write_telemetry(db: ThrowawayInfluxd, hosts: int, step_s: int) -> int:
    lines = []
    for second in range(0, WINDOWS * 60, step_s):
        nanos = int((START + timedelta(seconds=second)).timestamp()) * 1_000_000_000
        lines.extend(
            f"sensor,host=h{h:03d},site=s{h % 4} temp={20 + (second * h) % 97 / 10},"
            f"load={(second + h) % 13}i {nanos}"
            for h in range(hosts)
        )
    db.write(lines, db="bench", precision="ns")
    return len(lines)


def config(url: str, into: str, chunk: str):  # type: ignore[no-untyped-def]
    return parse_config(
        {
            "connections": {"b": {"kind": "influxdb1", "url": url, "timeout": "300s"}},
            "tiers": {
                "hot": {"connection": "b", "bucket": "bench/autogen"},
                "warm": {"connection": "b", "bucket": "bench/warm"},
            },
            "jobs": {
                "j": {
                    "kind": "downsample",
                    "source": "hot",
                    "dest": "warm",
                    "measurements": ["sensor"],
                    "every": "1m",
                    "start": START,
                    "catchup_chunk": chunk,
                    "into": into,
                    "aggregates": {"temp": ["mean", "max"], "load": ["sum"]},
                }
            },
        },
        Path("bench.toml"),
    )


async def run_tierflow(url: str, into: str, chunk: str) -> Sample:
    runner = Runner(config(url, into, chunk), MemoryStateStore())
    began = time.perf_counter()
    runs = await runner.run_due(STOP)
    wall = time.perf_counter() - began
    await runner.aclose()
    assert sum(len(r.batch.windows) for r in runs) == WINDOWS, "every window ran"
    assert all(r.status.value == "succeeded" for r in runs), [r.error for r in runs]
    histogram = runner.metrics.registry.get_sample_value(
        "tierflow_query_duration_seconds_sum", {"connection": "b", "kind": "execute"}
    )
    return Sample(wall, histogram or 0.0, len(runs))


def run_single(url: str) -> Sample:
    query = (
        'SELECT mean("temp") AS "temp_mean", max("temp") AS "temp_max", sum("load") AS "load_sum"'
        ' INTO "bench"."warm"."sensor_single" FROM "bench"."autogen"."sensor"'
        f" WHERE time >= '{START:%Y-%m-%dT%H:%M:%SZ}' AND time < '{STOP:%Y-%m-%dT%H:%M:%SZ}'"
        " GROUP BY time(1m), *"
    )
    body = urllib.parse.urlencode({"q": query, "db": "bench"}).encode()
    began = time.perf_counter()
    with urllib.request.urlopen(url + "/query", data=body, timeout=300) as response:
        payload = json.loads(response.read())
    wall = time.perf_counter() - began
    assert "error" not in payload["results"][0], payload
    return Sample(wall, wall, 1)


def count(db: ThrowawayInfluxd, measurement: str) -> int:
    result = db.query(f'SELECT count("temp_mean") FROM "bench"."warm"."{measurement}"', db="bench")
    return int(result[0]["series"][0]["values"][0][1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--step", type=int, default=5, help="seconds between points")
    args = parser.parse_args()

    with ThrowawayInfluxd() as db:
        db.execute('CREATE DATABASE "bench"')
        db.execute('CREATE RETENTION POLICY "warm" ON "bench" DURATION 0s REPLICATION 1')
        points = write_telemetry(db, args.hosts, args.step)
        samples: dict[str, list[Sample]] = {"window": [], "coalesced": [], "single": []}
        for _ in range(args.repeat):  # interleaved, so drift hits all three alike
            samples["window"].append(asyncio.run(run_tierflow(db.url, "sensor_window", "1m")))
            samples["coalesced"].append(asyncio.run(run_tierflow(db.url, "sensor_coalesced", "6h")))
            samples["single"].append(run_single(db.url))
        counts = {name: count(db, f"sensor_{name}") for name in samples}

    assert len(set(counts.values())) == 1, f"the three ways disagree: {counts}"
    median = {name: statistics.median(s.wall_s for s in runs) for name, runs in samples.items()}
    server = {name: statistics.median(s.server_s for s in runs) for name, runs in samples.items()}
    report = {
        "points": points,
        "windows": WINDOWS,
        "output_points": counts["single"],
        "repeat": args.repeat,
        "median_wall_s": median,
        "queries": {name: runs[0].queries for name, runs in samples.items()},
        "speedup_coalesced_vs_window": median["window"] / median["coalesced"],
        "coalesced_vs_single": median["coalesced"] / median["single"],
        "overhead_per_window_ms": {
            name: 1000 * (median[name] - server[name]) / WINDOWS for name in ("window", "coalesced")
        },
    }
    print(
        f"{points:,} raw points, {WINDOWS} one-minute windows, {counts['single']:,} output "
        f"points each way, median of {args.repeat}"
    )
    for name in samples:
        print(f"  {name:10} {median[name]:8.3f} s  ({report['queries'][name]} queries)")
    print(
        f"  coalesced is {report['speedup_coalesced_vs_window']:.1f}x faster than window by "
        f"window (goal >= 10x)"
    )
    print(f"  coalesced takes {report['coalesced_vs_single']:.2f}x the single query (goal <= 1.5x)")
    for name, ms in report["overhead_per_window_ms"].items():
        print(f"  tierflow overhead per window, {name}: {ms:.3f} ms")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "catchup.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
