"""Several workers: 1, 2 and 3 `tierflow run` processes sharing one PostgreSQL state catch up the
same windows against an influxd whose every `/query` answer a proxy delays by `--delay` seconds,
so that the server's time, not this machine's 2 cores, is the limit. Reports the throughput
(windows/s) per worker count, the most requests the proxy saw in flight at once against the
connection's `max_concurrency` (the limit must hold across workers), each worker's CPU time, and
the floor: the same number of queries sent by a bare thread pool as wide as the workers may go
together, through the same proxy. Ratios in one run.

    .venv/bin/python bench/workers.py [--windows 10080] [--delay 0.2] [--parallel 2] [--limit 8]

Every run gets a fresh state database; the workers start behind a gate (the ledger table locked)
so that they begin claiming together, and the clock runs from the first claim to the last outcome
as the state's history records them. The last run, 3 workers with `--bound` as the connection
limit (below 3 × `--parallel`), shows the limit binding: throughput should follow the limit, not
the number of workers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

# The recording proxy lives with the tests (tests/proxy.py); the bench runs from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.proxy import Exchange, ThreadedProxy

from tierflow._state._postgres import PostgresStateStore
from tierflow.testing import ThrowawayInfluxd
from tierflow.testing.postgres import ThrowawayPostgres

DB = "bench"
JOB = "down"
MINUTE = timedelta(minutes=1)
HOSTS = 4
STEP_S = 30  # a point per host every 30 s
TIERFLOW = Path(sys.executable).parent / "tierflow"
RESULTS = Path(__file__).parent / "results"
AGGREGATES = '{ temp = ["mean", "max"], load = ["sum"] }'


@dataclass
class Run:
    workers: int
    limit: int
    windows: int
    span_s: float
    queries: int
    max_in_flight: int
    cpu_s: list[float]

    @property
    def windows_per_s(self) -> float:
        return self.windows / self.span_s


def floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def seed(server: ThrowawayInfluxd, start: datetime, windows: int) -> int:
    base = int(start.timestamp())
    lines = [
        f"sensor,host=h{h} temp={(s * 7 + h) % 500 / 10},load={(s + h) % 13}i "
        f"{(base + s) * 1_000_000_000}"
        for s in range(-60, (windows + 120) * 60, STEP_S)
        for h in range(HOSTS)
    ]
    for first in range(0, len(lines), 50_000):
        server.write(lines[first : first + 50_000], db=DB)
    return len(lines)


def write_config(
    directory: Path, *, influx: str, state: str, start: datetime, limit: int, parallel: int
) -> Path:
    path = directory / "tierflow.toml"
    path.write_text(
        f"""\
[state]
url = "{state}"

[connections.b]
kind = "influxdb1"
url = "{influx}"
timeout = "60s"
max_concurrency = {limit}

[tiers.hot]
connection = "b"
bucket = "{DB}/autogen"

[tiers.warm]
connection = "b"
bucket = "{DB}/warm"

[jobs.{JOB}]
kind = "downsample"
source = "hot"
dest = "warm"
measurements = ["sensor"]
every = "1m"
start = {start.isoformat().replace("+00:00", "Z")}
parallel_windows = {parallel}
aggregates = {AGGREGATES}
""",
        encoding="utf-8",
    )
    return path


def migrate(url: str) -> None:
    async def open_once() -> None:
        async with PostgresStateStore(url):
            pass

    asyncio.run(open_once())


def logged(path: Path, event: str) -> bool:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return f'"event": "{event}"' in text


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_workers(
    count: int,
    *,
    limit: int,
    args: argparse.Namespace,
    postgres: ThrowawayPostgres,
    proxy: ThreadedProxy,
    start: datetime,
    directory: Path,
) -> Run:
    url = postgres.new_database("tierflow_bench")
    migrate(url)
    config = write_config(
        directory, influx=proxy.url, state=url, start=start, limit=limit, parallel=args.parallel
    )
    target = start + args.windows * MINUTE
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    logs = [directory / f"worker{n}.log" for n in range(count)]
    workers: list[subprocess.Popen[bytes]] = []
    with psycopg.connect(url, autocommit=True) as look:
        # The gate: claims wait on the ledger's lock until every worker is up.
        gate = psycopg.connect(url)
        gate.execute("LOCK TABLE runs IN EXCLUSIVE MODE")
        try:
            for log in logs:
                with log.open("w", encoding="utf-8") as sink:
                    workers.append(
                        subprocess.Popen(
                            [str(TIERFLOW), "--log-level", "info", "run", "-c", str(config)],
                            stdin=subprocess.DEVNULL,
                            stdout=sink,
                            stderr=sink,
                            env=env,
                        )
                    )
            wait_for(lambda: all(logged(log, "daemon_started") for log in logs), 120, workers)
            time.sleep(1.0)  # their first claims reach the gate
            proxy.proxy.clear()
        finally:
            gate.commit()
            gate.close()
        wait_for(lambda: watermark(look) >= target, args.timeout, workers)
        cpu = [cpu_seconds(w.pid) for w in workers]
        first, last, failed = look.execute(
            "SELECT min(started_at), max(finished_at),"
            " count(*) FILTER (WHERE status NOT IN ('succeeded', 'abandoned'))"
            " FROM attempts WHERE job = %s AND window_start < %s",
            (JOB, target),
        ).fetchone() or (None, None, None)
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=60)
    postgres.drop_database(url)
    assert first is not None, "no attempts recorded"
    assert last is not None, "no attempts finished"
    assert failed == 0, f"{failed} attempts failed; see {logs}"
    # Windows that come due while it runs (one a minute) add a query or two.
    queries = [e for e in proxy.proxy.exchanges if e.path == "/query"]
    return Run(
        workers=count,
        limit=limit,
        windows=args.windows,
        span_s=(last - first).total_seconds(),
        queries=len(queries),
        max_in_flight=proxy.proxy.max_in_flight,
        cpu_s=[round(c, 2) for c in cpu],
    )


def watermark(db: psycopg.Connection[Any]) -> datetime:
    row = db.execute("SELECT watermark FROM jobs WHERE job = %s", (JOB,)).fetchone()
    return row[0] if row else datetime.min.replace(tzinfo=UTC)


def wait_for(check: Any, timeout: float, workers: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if any(w.poll() is not None for w in workers):
            raise RuntimeError("a worker exited early")
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {timeout:g} s")
        time.sleep(0.05)


def bare(proxy: ThreadedProxy, start: datetime, windows: int, width: int) -> tuple[float, int]:
    """The same hour-long `SELECT … INTO` queries tierflow sends (its default catchup_chunk),
    `width` at a time from a thread pool, through the proxy: (seconds, queries)."""
    hours = math.ceil(windows / 60)
    stop = start + windows * MINUTE

    def one(hour: int) -> None:
        low = start + hour * 60 * MINUTE
        high = min(low + 60 * MINUTE, stop)
        q = (
            'SELECT mean("temp") AS "temp_mean", max("temp") AS "temp_max", '
            'sum("load") AS "load_sum" INTO "bench"."warm"."sensor_bare" '
            f'FROM "bench"."autogen"."sensor" WHERE time >= \'{low:%Y-%m-%dT%H:%M:%SZ}\' '
            f"AND time < '{high:%Y-%m-%dT%H:%M:%SZ}' GROUP BY time(1m), *"
        )
        body = urllib.parse.urlencode({"q": q, "db": DB}).encode()
        with urllib.request.urlopen(proxy.url + "/query", data=body, timeout=120) as answer:
            payload = json.loads(answer.read())
        assert "error" not in payload["results"][0], payload

    began = time.perf_counter()
    with ThreadPoolExecutor(width) as pool:
        list(pool.map(one, range(hours)))
    return time.perf_counter() - began, hours


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=7 * 24 * 60, help="one-minute windows")
    parser.add_argument("--delay", type=float, default=0.2, help="seconds added to each /query")
    parser.add_argument("--parallel", type=int, default=2, help="parallel_windows per worker")
    parser.add_argument("--limit", type=int, default=8, help="connection max_concurrency")
    parser.add_argument("--bound", type=int, default=2, help="a limit below 3 × --parallel")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", type=Path, default=RESULTS / "workers.json")
    args = parser.parse_args()

    start = floor_minute(datetime.now(UTC)) - args.windows * MINUTE
    plan = [(1, args.limit), (2, args.limit), (3, args.limit), (3, args.bound)]
    runs: list[dict[str, Any]] = []
    with (
        ThrowawayInfluxd() as influxd,
        ThrowawayPostgres() as postgres,
        tempfile.TemporaryDirectory(prefix="tierflow-bench-workers-") as temp,
    ):
        influxd.execute(f'CREATE DATABASE "{DB}"')
        influxd.execute(f'CREATE RETENTION POLICY "warm" ON "{DB}" DURATION INF REPLICATION 1')
        points = seed(influxd, start, args.windows)

        def delay(exchange: Exchange) -> float:
            return args.delay if exchange.path == "/query" else 0.0

        with ThreadedProxy(influxd.url, delay=delay) as proxy:
            print(f"{points:,} points; {args.windows:,} one-minute windows; /query +{args.delay} s")
            for count, limit in plan:
                run = run_workers(
                    count,
                    limit=limit,
                    args=args,
                    postgres=postgres,
                    proxy=proxy,
                    start=start,
                    directory=Path(temp),
                )
                width = min(count * args.parallel, limit)
                proxy.proxy.clear()
                bare_s, bare_queries = bare(proxy, start, args.windows, width)
                row = {
                    "workers": count,
                    "connection_max_concurrency": limit,
                    "parallel_windows": args.parallel,
                    "allowed_in_flight": width,
                    "max_in_flight": run.max_in_flight,
                    "limit_held": run.max_in_flight <= limit,
                    "queries": run.queries,
                    "span_s": round(run.span_s, 2),
                    "windows_per_s": round(run.windows_per_s, 1),
                    "bare_queries": bare_queries,
                    "bare_s": round(bare_s, 2),
                    "bare_windows_per_s": round(args.windows / bare_s, 1),
                    "vs_bare": round(run.windows_per_s / (args.windows / bare_s), 3),
                    "worker_cpu_s": run.cpu_s,
                }
                runs.append(row)
                print(
                    f"  {count} worker(s), limit {limit}: {row['windows_per_s']} windows/s "
                    f"({row['vs_bare']}× the bare pool of {width}), max {run.max_in_flight} "
                    f"in flight, CPU {run.cpu_s} s",
                    flush=True,
                )
    one = runs[0]["windows_per_s"]
    report = {
        "windows": args.windows,
        "points": points,
        "query_delay_s": args.delay,
        "runs": runs,
        "speedup_vs_one_worker": {
            f"{r['workers']}w_limit{r['connection_max_concurrency']}": round(
                r["windows_per_s"] / one, 2
            )
            for r in runs
        },
        "limits_held": all(r["limit_held"] for r in runs),
    }
    text = json.dumps(report, indent=2)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if report["limits_held"] else 1


if __name__ == "__main__":
    sys.exit(main())
