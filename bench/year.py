"""Year benchmark: tierflow's own cost as its history grows, as the user meets it.

One `downsample` job, `every = "1m"`, `catchup_chunk = "1h"`, one point per hour in the source,
a span (a year by default) to catch up on a throwaway `influxd`. For each span and each state
store (SQLite and PostgreSQL), from a fresh state and an empty warm retention policy:

- `tierflow plan --json` of the catch-up: wall time, peak RSS, size of its output;
- `tierflow run-once` of it, the whole command (the `tierflow` console script, interpreter start-up,
  config, state, schema checks, every query and every state write): wall time and peak RSS
  (`wait4`'s `ru_maxrss` of that process alone);
- the floor, run just before it: a bare loop sending the same coalesced `SELECT … INTO` queries
  (the exact texts `plan --json` shows, which are those `run-once` sends) one after another
  over one keep-alive HTTP connection, and the ratio run-once / floor;
- the state's size after the run (the SQLite file with its WAL; on PostgreSQL the sum of
  `pg_total_relation_size` over the tables in the state database);
- `tierflow status --json` and `tierflow history JOB --json` on that state: wall time, RSS.

`tierflow --version`, timed once, shows what of each command is interpreter start-up.

Both ways must leave the same points in the warm tier: one output point per source hour
(counted from the points the bench wrote), and the floor's rows equal to tierflow's.

    make bench-year    # or: .venv/bin/python bench/year.py [--spans 30d,365d]
                       #     [--stores sqlite,postgresql] [--span 7d]

Results in bench/results/year.json. A year on SQLite takes minutes and, before #13's work, more
than a GB of memory; develop with `--span 7d`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import StateStores, load_average, stores_option

from tierflow.testing import ThrowawayInfluxd

DATABASE = "bench"
WARM = "warm"
SOURCE = "sensor"
DEST = "sensor_1m"
JOB = "year"
START = datetime(2025, 1, 1, tzinfo=UTC)
CHUNK = timedelta(hours=1)
RESULTS = Path(__file__).parent / "results"
# The console script next to this interpreter: what `pip install tierflow` gives a user.
TIERFLOW = str(Path(sys.executable).with_name("tierflow"))
STORES = ("sqlite", "postgresql")
# The targets of issue #13, printed next to the numbers.
GOALS = {"run_once_ratio": 1.5, "peak_rss_mb": 150, "sqlite_state_mb": 10, "plan_s": 3.0,
         "status_s": 1.0, "history_s": 1.0}  # fmt: skip


def parse_span(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([dh])", text.strip())
    if not match or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(f"span {text!r}: want e.g. 7d, 30d, 365d or 12h")
    number, unit = int(match[1]), match[2]
    return timedelta(days=number) if unit == "d" else timedelta(hours=number)


def label(span: timedelta) -> str:
    hours = int(span.total_seconds()) // 3600
    return f"{hours // 24}d" if hours % 24 == 0 else f"{hours}h"


# -- the source and the warm tier --------------------------------------------------------------


def point_time(hour: int) -> datetime:
    """The one source point of hour `hour` (17 minutes past it, so it is not on a chunk edge)."""
    return START + timedelta(hours=hour, minutes=17)


def write_source(db: ThrowawayInfluxd, hours: int) -> None:
    lines = [
        f"{SOURCE},host=h1 temp={20 + hour % 97 / 10},load={hour % 13}i "
        f"{int(point_time(hour).timestamp())}"
        for hour in range(hours)
    ]
    db.write(lines, db=DATABASE, precision="s")


def reset_warm(db: ThrowawayInfluxd) -> None:
    """An empty warm retention policy (dropping one drops its shards, every point in it)."""
    db.execute(f'DROP RETENTION POLICY "{WARM}" ON "{DATABASE}"')
    db.execute(f'CREATE RETENTION POLICY "{WARM}" ON "{DATABASE}" DURATION 0s REPLICATION 1')


def warm_rows(db: ThrowawayInfluxd) -> list[list[Any]]:
    result = db.query(f'SELECT * FROM "{DATABASE}"."{WARM}"."{DEST}"', db=DATABASE)
    series = result[0].get("series") or [{"values": []}]
    return [row for s in series for row in s["values"]]


def expected_rows(span: timedelta) -> int:
    """One output point per source point in the span: each is alone in its minute."""
    return sum(1 for hour in range(int(span / CHUNK)) if point_time(hour) < START + span)


# -- the config and the commands ---------------------------------------------------------------


def write_config(directory: Path, influx_url: str, state_url: str) -> Path:
    path = directory / "tierflow.toml"
    path.write_text(
        f"""
[state]
url = "{state_url}"

[connections.bench]
kind = "influxdb1"
url = "{influx_url}"
timeout = "300s"

[tiers.hot]
connection = "bench"
bucket = "{DATABASE}/autogen"

[tiers.warm]
connection = "bench"
bucket = "{DATABASE}/{WARM}"

[jobs.{JOB}]
kind = "downsample"
source = "hot"
dest = "warm"
measurements = ["{SOURCE}"]
into = "{DEST}"
every = "1m"
catchup_chunk = "1h"
start = "{START.isoformat()}"
aggregates = {{ temp = ["mean", "max"], load = ["sum"] }}
""",
        encoding="utf-8",
    )
    return path


@dataclass
class Command:
    argv: list[str]
    wall_s: float
    peak_rss_mb: float  # ru_maxrss of the command's own process (see LAUNCHER)
    output_bytes: int
    exit_code: int


# A process's ru_maxrss starts at the high-water mark of the memory it was spawned from (Linux
# keeps it across exec; subprocess spawns with vfork, sharing the spawner's memory): spawned
# from this bench, which holds a year's plan, every command would "peak" at the bench's own
# size. So a small launcher forks the command from its own few MB, waits for it and reports its
# wall time and ru_maxrss (what `/usr/bin/time -v` does, without needing it installed).
LAUNCHER = """
import json, os, sys, time
argv, report = json.loads(sys.argv[1]), sys.argv[2]
began = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - began
with open(report, "w") as file:
    json.dump({"exit_code": os.waitstatus_to_exitcode(status), "wall_s": wall,
               "maxrss_kb": usage.ru_maxrss}, file)
"""


def tierflow(directory: Path, name: str, *args: str) -> tuple[Command, Path]:
    """`tierflow ARGS` as a user runs it, its stdout into a file (no terminal, so no progress
    bar); its wall time and its own peak RSS."""
    out_path, err_path = directory / f"{name}.out", directory / f"{name}.err"
    report_path = directory / f"{name}.rusage.json"
    launcher = [sys.executable, "-c", LAUNCHER, json.dumps([TIERFLOW, *args]), str(report_path)]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        subprocess.run(launcher, stdout=out, stderr=err, stdin=subprocess.DEVNULL, check=True)
    report = json.loads(report_path.read_text())
    report_path.unlink()
    command = Command(
        ["tierflow", *args], report["wall_s"], report["maxrss_kb"] / 1024,
        out_path.stat().st_size, report["exit_code"],
    )  # fmt: skip
    if command.exit_code != 0:
        tail = err_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"tierflow {' '.join(args)} exited with {command.exit_code}:\n{tail}")
    return command, out_path


def plan_queries(path: Path) -> list[str]:
    """Every query text `plan --json` shows, in order, each once (a plan may repeat a batch's
    query for each of its windows): the queries `run-once` sends for that plan."""
    queries: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "query" and isinstance(value, str):
                    if not queries or queries[-1] != value:
                        queries.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    with path.open("rb") as file:
        walk(json.load(file))
    return queries


# -- the floor ---------------------------------------------------------------------------------


def bare_loop(url: str, queries: list[str]) -> float:
    """Send each query, one after another, over one keep-alive connection, as tierflow sends
    them (POST /query, form `q` and `db`); the wall time of the loop."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=300)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    began = time.perf_counter()
    for query in queries:
        body = urllib.parse.urlencode({"q": query, "db": DATABASE})
        connection.request("POST", "/query", body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200 or b'"error"' in payload:
            raise SystemExit(f"the bare loop's query failed ({response.status}): {payload[:500]!r}")
    wall = time.perf_counter() - began
    connection.close()
    return wall


# -- the state stores --------------------------------------------------------------------------


class Stores(StateStores):
    """Fresh state for each run (a new SQLite file, or a new database on one PostgreSQL), and
    its size."""

    def size(self, store: str, directory: Path, url: str) -> dict[str, int]:
        if store == "sqlite":
            path = directory / "state.db"
            sizes = {
                suffix or "file": os.stat(f"{path}{suffix}").st_size
                for suffix in ("", "-wal", "-shm")
                if os.path.exists(f"{path}{suffix}")
            }
            return {"bytes": sizes.get("file", 0) + sizes.get("-wal", 0), **sizes}
        ((tables,),) = self.postgres.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%'",
            url=url,
        )
        ((database,),) = self.postgres.execute(
            "SELECT pg_database_size(current_database())", url=url
        )
        return {"bytes": int(tables), "database_bytes": int(database)}


# -- one measured run --------------------------------------------------------------------------


@dataclass
class Run:
    store: str
    span: str
    windows: int
    queries: int
    floor_s: float
    run_once: Command
    ratio: float
    plan: Command
    status: Command
    history: Command
    state: dict[str, int]
    output_points: int


def measure(db: ThrowawayInfluxd, stores: Stores, store: str, span: timedelta, work: Path) -> Run:
    directory = work / f"{store}-{label(span)}"
    directory.mkdir()
    state_url = stores.fresh(store, directory)
    config = str(write_config(directory, db.url, state_url))
    now = (START + span).isoformat()

    plan, plan_out = tierflow(directory, "plan", "plan", "-c", config, "--now", now, "--json")
    queries = plan_queries(plan_out)
    plan_out.unlink()
    assert len(queries) == span / CHUNK, f"plan shows {len(queries)} queries, not {span / CHUNK}"
    assert all(" INTO " in q for q in queries), "plan shows a query that is not a SELECT … INTO"

    reset_warm(db)
    floor_s = bare_loop(db.url, queries)
    floor_rows = warm_rows(db)
    assert len(floor_rows) == expected_rows(span), (len(floor_rows), expected_rows(span))

    reset_warm(db)
    run_once, _ = tierflow(directory, "run-once", "run-once", "-c", config, "--now", now)
    rows = warm_rows(db)
    assert rows == floor_rows, "tierflow and the bare loop left different points in the warm tier"

    state = stores.size(store, directory, state_url)
    status, status_out = tierflow(directory, "status", "status", "-c", config, "--now", now,
                                  "--json")  # fmt: skip
    (job,) = json.loads(status_out.read_text())["jobs"]
    assert datetime.fromisoformat(job["watermark"]) == START + span, job["watermark"]
    history, _ = tierflow(directory, "history", "history", JOB, "-c", config, "--json")
    stores.drop(store, state_url)
    shutil.rmtree(directory)
    return Run(
        store=store, span=label(span), windows=int(span / timedelta(minutes=1)),
        queries=len(queries), floor_s=floor_s, run_once=run_once,
        ratio=run_once.wall_s / floor_s, plan=plan, status=status, history=history,
        state=state, output_points=len(rows),
    )  # fmt: skip


# -- the report --------------------------------------------------------------------------------


def print_table(runs: list[Run]) -> None:
    print(
        f"\n{'store':11}{'span':>6}{'windows':>9}{'queries':>8}{'floor s':>9}{'run-once s':>11}"
        f"{'ratio':>9}{'RSS MB':>8}{'state MB':>9}{'plan s':>8}{'plan MB':>8}{'plan out MB':>12}"
        f"{'status s':>9}{'history s':>10}"
    )
    for r in runs:
        print(
            f"{r.store:11}{r.span:>6}{r.windows:>9,}{r.queries:>8,}{r.floor_s:>9.2f}"
            f"{r.run_once.wall_s:>11.2f}{r.ratio:>8.2f}x{r.run_once.peak_rss_mb:>8.0f}"
            f"{r.state['bytes'] / 1e6:>9.2f}{r.plan.wall_s:>8.2f}{r.plan.peak_rss_mb:>8.0f}"
            f"{r.plan.output_bytes / 1e6:>12.2f}{r.status.wall_s:>9.2f}{r.history.wall_s:>10.2f}"
        )
    print(
        f"\ngoals (#13): run-once <= {GOALS['run_once_ratio']}x the floor, peak RSS < "
        f"{GOALS['peak_rss_mb']} MB flat across spans, SQLite state < {GOALS['sqlite_state_mb']} "
        f"MB for a year, plan < {GOALS['plan_s']} s, status and history < {GOALS['status_s']} s"
    )


def spans_of(args: argparse.Namespace) -> list[timedelta]:
    if args.span is not None:
        return [args.span]
    return [parse_span(text) for text in args.spans.split(",")]


def iterate(spans: list[timedelta], stores: list[str]) -> Iterator[tuple[timedelta, str]]:
    for span in spans:
        for store in stores:
            yield span, store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", default="30d,365d", help="comma-separated spans to catch up")
    parser.add_argument("--span", type=parse_span, help="one span only (e.g. 7d), over --spans")
    parser.add_argument("--stores", default=",".join(STORES), help="sqlite, postgresql or both")
    parser.add_argument("--output", type=Path, default=RESULTS / "year.json")
    args = parser.parse_args()
    spans = spans_of(args)
    stores = stores_option(parser, args.stores, STORES)
    load_before = load_average("slows both sides (the ratios less so)")

    runs: list[Run] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tierflow-year-") as scratch:
        db = stack.enter_context(ThrowawayInfluxd())
        state_stores = Stores(stack, stores)
        db.execute(f'CREATE DATABASE "{DATABASE}"')
        db.execute(f'CREATE RETENTION POLICY "{WARM}" ON "{DATABASE}" DURATION 0s REPLICATION 1')
        startup, _ = tierflow(Path(scratch), "version", "--version")
        print(f"start-up: `tierflow --version` takes {startup.wall_s:.2f} s, "
              f"{startup.peak_rss_mb:.0f} MB")  # fmt: skip
        hours = int(max(spans) / CHUNK)
        write_source(db, hours)
        print(f"source: {hours:,} points (one per hour) from {START:%Y-%m-%d}")
        for span, store in iterate(spans, stores):
            run = measure(db, state_stores, store, span, Path(scratch))
            runs.append(run)
            print(f"  {store} {run.span}: run-once {run.run_once.wall_s:.2f} s, floor "
                  f"{run.floor_s:.2f} s ({run.ratio:.2f}x), peak RSS "
                  f"{run.run_once.peak_rss_mb:.0f} MB", flush=True)  # fmt: skip
            write_report(args.output, runs, startup, load_before)
    print_table(runs)
    print(f"\nresults in {args.output}")


def write_report(path: Path, runs: list[Run], startup: Command, load_before: float) -> None:
    """The results so far (written after each run: a long run that dies leaves what it did)."""
    report = {
        "job": {"every": "1m", "catchup_chunk": "1h", "source_points_per_hour": 1},
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
        "goals": GOALS,
        "startup": asdict(startup),
        "runs": [asdict(r) for r in runs],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
