"""Where a long catch-up's time and memory go: one `downsample` job (`every = "1m"`,
`catchup_chunk = "1h"`), a span of one point per hour in the source, SQLite state, on one
throwaway `influxd`.

Measures, each as a whole command under `/usr/bin/time -v` (wall time, peak RSS):
`tierflow plan --json`, `tierflow plan` (text), `tierflow run-once`; and the floor: a bare loop
sending the same one-hour queries one after another over one aiohttp session.

    PYTHONPATH=src .venv/bin/python bench/profile_catchup.py [--days 30 --days 365] [--profile F]

`--profile` runs `run-once` under cProfile instead (its wall time then counts the profiler).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from tierflow._config import load_config
from tierflow._jobs import render_job
from tierflow._planner import coalesce
from tierflow._windows import iter_windows
from tierflow.testing import ThrowawayInfluxd

START = datetime(2025, 1, 1, tzinfo=UTC)
PYTHON = sys.executable
#: The `tierflow` command, from this checkout's `src` (the console script may point elsewhere).
TIERFLOW = [
    PYTHON,
    "-c",
    "import sys; from tierflow._cli import main; sys.argv[0] = 'tierflow'; main()",
]
SRC = str(Path(__file__).resolve().parent.parent / "src")


def write_source(db: ThrowawayInfluxd, days: int) -> int:
    lines = [
        f"sensor,host=h1 temp={20 + hour % 17 / 10},load={hour % 13}i "
        f"{int((START + timedelta(hours=hour)).timestamp())}"
        for hour in range(days * 24)
    ]
    db.write(lines, db="bench", precision="s")
    return len(lines)


def write_config(directory: Path, url: str) -> Path:
    path = directory / "tierflow.toml"
    path.write_text(
        f"""
[state]
url = "sqlite:///{directory / "state.db"}"

[connections.b]
kind = "influxdb1"
url = "{url}"
timeout = "300s"

[tiers.hot]
connection = "b"
bucket = "bench/autogen"

[tiers.warm]
connection = "b"
bucket = "bench/warm"

[jobs.down]
kind = "downsample"
source = "hot"
dest = "warm"
measurements = ["sensor"]
every = "1m"
catchup_chunk = "1h"
start = "{START.isoformat()}"
aggregates = {{ temp = ["mean", "max"], load = ["sum"] }}
"""
    )
    return path


def fresh_dest(db: ThrowawayInfluxd) -> None:
    """An empty dest tier, so each run writes its points anew."""
    db.execute('DROP RETENTION POLICY "warm" ON "bench"')
    db.execute('CREATE RETENTION POLICY "warm" ON "bench" DURATION 0s REPLICATION 1')


def timed(args: list[str], *, stdout: Path | None = None) -> dict[str, float]:
    """Run a tierflow command under /usr/bin/time -v: wall seconds, peak RSS in MB."""
    env = os.environ | {"PYTHONPATH": SRC}
    with open(stdout or os.devnull, "wb") as sink:
        done = subprocess.run(
            ["/usr/bin/time", "-v", *TIERFLOW, *args],
            stdout=sink,
            stderr=subprocess.PIPE,
            env=env,
            check=False,
        )
    text = done.stderr.decode()
    if done.returncode != 0:
        raise SystemExit(f"{args} exited {done.returncode}:\n{text[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    assert wall, text
    assert rss, text
    parts = [float(p) for p in wall.group(1).split(":")]
    seconds = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return {"wall_s": round(seconds, 2), "peak_rss_mb": round(int(rss.group(1)) / 1024, 1)}


async def bare_loop(url: str, queries: list[str]) -> float:
    began = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        for query in queries:
            async with session.post(url + "/query", data={"q": query, "db": "bench"}) as response:
                payload = await response.json()
                assert "error" not in payload["results"][0], payload
    return time.perf_counter() - began


def queries_of(config: Path, now: datetime) -> list[str]:
    loaded = load_config(config)
    spec = loaded.jobs["down"]
    windows = iter_windows(spec.schedule, spec.schedule.first_window(START), now)
    return [render_job(loaded, "down", batch).text for batch in coalesce(windows, spec.chunk)]


def measure(db: ThrowawayInfluxd, days: int, profile: str | None) -> dict[str, object]:
    now = START + timedelta(days=days)
    at = now.isoformat()
    result: dict[str, object] = {"days": days, "windows": days * 24 * 60}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        config = write_config(directory, db.url)
        fresh_dest(db)
        plan_json = directory / "plan.json"
        result["plan_json"] = timed(
            ["plan", "-c", str(config), "--now", at, "--json"], stdout=plan_json
        )
        result["plan_json"]["bytes"] = plan_json.stat().st_size  # type: ignore[index]
        result["plan_text"] = timed(["plan", "-c", str(config), "--now", at])
        if profile:
            env = os.environ | {"PYTHONPATH": SRC}
            began = time.perf_counter()
            launcher = directory / "tierflow_cmd.py"
            launcher.write_text(TIERFLOW[2].replace("; ", "\n"))
            subprocess.run(
                [
                    PYTHON,
                    "-m",
                    "cProfile",
                    "-o",
                    profile,
                    str(launcher),
                    "run-once",
                    "-c",
                    str(config),
                    "--now",
                    at,
                ],
                env=env,
                check=False,
                stdout=subprocess.DEVNULL,
            )
            result["run_once_profiled_s"] = round(time.perf_counter() - began, 2)
        else:
            result["run_once"] = timed(["run-once", "-c", str(config), "--now", at])
        result["state_mb"] = round((directory / "state.db").stat().st_size / 2**20, 1)
        # The same queries (the same text: they write where run-once wrote) into an empty dest.
        queries = queries_of(config, now)
        fresh_dest(db)
        result["queries"] = len(queries)
        result["bare_loop_s"] = round(asyncio.run(bare_loop(db.url, queries)), 2)
    if "run_once" in result:
        result["ratio"] = round(result["run_once"]["wall_s"] / result["bare_loop_s"], 2)  # type: ignore[index]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, action="append")
    parser.add_argument("--profile", help="cProfile run-once into this file")
    args = parser.parse_args()
    spans = args.days or [30, 365]
    with ThrowawayInfluxd() as db:
        db.execute('CREATE DATABASE "bench"')
        db.execute('CREATE RETENTION POLICY "warm" ON "bench" DURATION 0s REPLICATION 1')
        write_source(db, max(spans))
        for days in spans:
            print(json.dumps(measure(db, days, args.profile)), flush=True)


if __name__ == "__main__":
    main()
