"""Per-window benchmark: what tierflow spends on each window run alone, per state store.

One `downsample` job, `every = "1m"` and `catchup_chunk = "1m"`, so that 300 one-minute windows
are not coalesced: 300 queries, each window claimed, run and recorded on its own. It runs with
the state in memory (the floor of the bookkeeping), in SQLite and in PostgreSQL, each from a
fresh state and an empty warm retention policy, interleaved `--repeat` times so that drift hits
every store alike, on one throwaway `influxd` (and one throwaway PostgreSQL).

Per store: the median wall time of `run_once` (the Python API, as in bench/catchup.py), the
server's share of it (the sum of `tierflow_query_duration_seconds`, tierflow's own histogram
of every request it sent), and the overhead per window: (wall - server) / windows. The
difference to the in-memory store is what the state store itself costs per window. Every run
must leave one output point per source point in the warm tier.

    make bench-per-window    # or: .venv/bin/python bench/per_window.py [--windows 300]
                             #     [--repeat 3] [--stores memory,sqlite,postgresql]

Results in bench/results/per_window.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import StateStores, load_average, stores_option

import tierflow
from tierflow.testing import ThrowawayInfluxd

DATABASE = "bench"
WARM = "warm"
SOURCE = "sensor"
DEST = "sensor_1m"
JOB = "alone"
START = datetime(2026, 11, 1, tzinfo=UTC)
STEP_S = 10  # seconds between source points: 6 per window
RESULTS = Path(__file__).parent / "results"
STORES = ("memory", "sqlite", "postgresql")
QUERY_SECONDS = "tierflow_query_duration_seconds"


def write_source(db: ThrowawayInfluxd, windows: int) -> int:
    lines = [
        f"{SOURCE},host=h1 temp={20 + second % 97 / 10},load={second % 13}i "
        f"{int((START + timedelta(seconds=second)).timestamp())}"
        for second in range(0, windows * 60, STEP_S)
    ]
    db.write(lines, db=DATABASE, precision="s")
    return len(lines)


def reset_warm(db: ThrowawayInfluxd) -> None:
    db.execute(f'DROP RETENTION POLICY "{WARM}" ON "{DATABASE}"')
    db.execute(f'CREATE RETENTION POLICY "{WARM}" ON "{DATABASE}" DURATION 0s REPLICATION 1')


def warm_points(db: ThrowawayInfluxd) -> int:
    result = db.query(f'SELECT count("temp_mean") FROM "{DATABASE}"."{WARM}"."{DEST}"', db=DATABASE)
    series = result[0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def config(influx_url: str, state_url: str) -> dict[str, Any]:
    return {
        "state": {"url": state_url},
        "connections": {"bench": {"kind": "influxdb1", "url": influx_url, "timeout": "300s"}},
        "tiers": {
            "hot": {"connection": "bench", "bucket": f"{DATABASE}/autogen"},
            "warm": {"connection": "bench", "bucket": f"{DATABASE}/{WARM}"},
        },
        "jobs": {
            JOB: {
                "kind": "downsample",
                "source": "hot",
                "dest": "warm",
                "measurements": [SOURCE],
                "into": DEST,
                "every": "1m",
                "catchup_chunk": "1m",
                "start": START.isoformat(),
                "aggregates": {"temp": ["mean", "max"], "load": ["sum"]},
            }
        },
    }


@dataclass
class Sample:
    wall_s: float
    server_s: float  # every request's time (the queries, the field check before them)
    queries: int  # the `SELECT … INTO`s sent


def server_side(tf: tierflow.Tierflow) -> tuple[float, int]:
    """From tierflow's own request histogram: the time spent in every request, and how many
    queries it executed."""
    seconds, queries = 0.0, 0
    for metric in tf.metrics.registry.collect():
        if metric.name != QUERY_SECONDS:
            continue
        for sample in metric.samples:
            if sample.name == QUERY_SECONDS + "_sum":
                seconds += sample.value
            elif sample.name == QUERY_SECONDS + "_count" and sample.labels["kind"] == "execute":
                queries += int(sample.value)
    return seconds, queries


async def run_alone(influx_url: str, state_url: str, windows: int) -> Sample:
    async with tierflow.open(config(influx_url, state_url)) as tf:
        # Open the state store (and migrate a fresh one) before the clock starts: the bench
        # is about each window's cost, not a store's first connection.
        await tf.status(now=START)
        began = time.perf_counter()
        await tf.run_once(now=START + timedelta(minutes=windows))
        wall = time.perf_counter() - began
        (job,) = await tf.status(now=START + timedelta(minutes=windows))
        assert job.watermark == START + timedelta(minutes=windows), job
        assert not job.failed_windows, job
        return Sample(wall, *server_side(tf))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--output", type=Path, default=RESULTS / "per_window.json")
    args = parser.parse_args()
    stores = stores_option(parser, args.stores, STORES)
    load_before = load_average("inflates the overhead")

    samples: dict[str, list[Sample]] = {store: [] for store in stores}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tierflow-window-") as scratch:
        db = stack.enter_context(ThrowawayInfluxd())
        state_stores = StateStores(stack, stores)
        db.execute(f'CREATE DATABASE "{DATABASE}"')
        db.execute(f'CREATE RETENTION POLICY "{WARM}" ON "{DATABASE}" DURATION 0s REPLICATION 1')
        points = write_source(db, args.windows)
        expected = points // (60 // STEP_S)  # one output point per minute with data
        # Untimed: the first run in a process pays one-time costs (imports, template loading).
        asyncio.run(run_alone(db.url, "memory://", args.windows))
        for repeat in range(args.repeat):
            for store in stores:  # interleaved, so drift hits every store alike
                reset_warm(db)
                directory = Path(scratch) / f"{store}-{repeat}"
                directory.mkdir()
                url = state_stores.fresh(store, directory)
                sample = asyncio.run(run_alone(db.url, url, args.windows))
                state_stores.drop(store, url)
                shutil.rmtree(directory)
                assert sample.queries == args.windows, f"{sample.queries} queries, not one a window"
                written = warm_points(db)
                assert written == expected, f"{store}: {written} output points, not {expected}"
                samples[store].append(sample)
            print(f"  repeat {repeat + 1}/{args.repeat} done", flush=True)

    report = summarise(samples, args.windows, points)
    report["load_average"] = {"before": load_before, "after": os.getloadavg()[0]}
    report["python"] = sys.version.split()[0]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults in {args.output}")


def summarise(samples: dict[str, list[Sample]], windows: int, points: int) -> dict[str, Any]:
    wall = {store: statistics.median(s.wall_s for s in runs) for store, runs in samples.items()}
    server = {store: statistics.median(s.server_s for s in runs) for store, runs in samples.items()}
    overhead = {store: 1000 * (wall[store] - server[store]) / windows for store in samples}
    print(f"\n{windows} one-minute windows run alone ({windows} queries), {points:,} source points,"
          f" median of {len(next(iter(samples.values())))}, {os.cpu_count()} CPUs\n")  # fmt: skip
    print(f"  {'store':12}{'wall s':>9}{'server s':>10}{'overhead/window ms':>20}{'vs memory':>11}")
    for store in samples:
        versus = overhead[store] - overhead["memory"] if "memory" in overhead else float("nan")
        print(f"  {store:12}{wall[store]:>9.3f}{server[store]:>10.3f}{overhead[store]:>20.3f}"
              f"{versus:>+10.3f}")  # fmt: skip
    if {"sqlite", "postgresql"} <= overhead.keys():
        print(f"\n  PostgreSQL / SQLite overhead per window: "
              f"{overhead['postgresql'] / overhead['sqlite']:.2f}x")  # fmt: skip
    return {
        "windows": windows,
        "source_points": points,
        "cpus": os.cpu_count(),
        "median_wall_s": wall,
        "median_server_s": server,
        "overhead_per_window_ms": overhead,
        "runs": {store: [asdict(s) for s in runs] for store, runs in samples.items()},
    }


if __name__ == "__main__":
    main()
