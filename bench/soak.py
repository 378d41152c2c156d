"""Memory soak: the `tierflow run` daemon through 20,000+ windows on a throwaway `influxd`.

One-second windows starting far enough in the past that the daemon catches up through
`--windows` of them (coalesced `--chunk` at a time), then keeps up with new ones for `--tail`
seconds. The daemon runs as a subprocess with `--trace-memory`, logging JSON to a file; this
script samples its resident set size from /proc/PID/status meanwhile.

Reports RSS once warmed up (after `--warmup` of the windows) and at the end, the growth between,
and the allocation sites that grew most according to the last `memory_sample` event. Exits 1 if
the growth after warm-up exceeds `--max-growth-mb`.

    make soak            # or: .venv/bin/python bench/soak.py [--windows 20000] [--chunk 10]

Slow on purpose: `--trace-memory` records a 25-frame traceback for every allocation and takes
its snapshots on the event loop, which slows the daemon some 40 times: on a 2-core machine
20,000 windows took 11 minutes with it, 16 s without (`--trace-interval 0`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tierflow.testing import ThrowawayInfluxd

DB = "soak"
HOSTS = 2
POINT_EVERY_S = 2  # light data: one point per host every two seconds
TIERFLOW = Path(sys.executable).parent / "tierflow"
MB = 1024 * 1024


@dataclass
class Sample:
    at: float  # seconds since the daemon started
    rss: int
    windows: int


@dataclass
class Log:
    """Reads the daemon's JSON log as it grows: windows run, failures, memory samples."""

    path: Path
    offset: int = 0
    windows: int = 0
    failed: int = 0
    memory: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    _partial: str = ""

    def poll(self) -> None:
        with self.path.open(encoding="utf-8") as stream:
            stream.seek(self.offset)
            text = stream.read()
            self.offset = stream.tell()
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            name = event.get("event")
            if name == "window_succeeded":
                self.windows += int(event.get("windows", 1))
            elif name == "window_failed":
                self.windows += int(event.get("windows", 1))
                self.failed += int(event.get("windows", 1))
                self.errors.append(event)
            elif name == "memory_sample":
                self.memory.append(event)
            elif event.get("level") in {"error", "critical"}:
                self.errors.append(event)


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def write_data(server: ThrowawayInfluxd, start: datetime, seconds: int) -> int:
    base = int(start.timestamp())
    lines = [
        f"sensor,host=h{host} temp={(second * 7 + host) % 50 / 2},errors={second % 5}i "
        f"{(base + second) * 1_000_000_000 + host * 1_000_000}"
        for second in range(0, seconds, POINT_EVERY_S)
        for host in range(HOSTS)
    ]
    server.write(lines, db=DB)
    return len(lines)


def write_config(directory: Path, url: str, start: datetime, chunk: int) -> Path:
    path = directory / "tierflow.toml"
    path.write_text(
        f"""\
[state]
url = "sqlite:///{directory / "state.db"}"

[scheduler]
grace = "5s"

[connections.soak]
kind = "influxdb1"
url = "{url}"

[tiers.hot]
connection = "soak"
bucket = "{DB}/autogen"

[tiers.warm]
connection = "soak"
bucket = "{DB}/warm"

[jobs.down]
kind = "downsample"
source = "hot"
dest = "warm"
measurements = ["sensor"]
every = "1s"
catchup_chunk = "{chunk}s"
start = {start.isoformat().replace("+00:00", "Z")}
aggregates = {{ temp = ["mean", "max"], errors = ["sum"] }}
""",
        encoding="utf-8",
    )
    return path


def soak(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    with ThrowawayInfluxd() as server:
        server.execute(f'CREATE DATABASE "{DB}"')
        server.execute(f'CREATE RETENTION POLICY "warm" ON "{DB}" DURATION INF REPLICATION 1')
        now = datetime.now(UTC).replace(microsecond=0)
        start = now - timedelta(seconds=args.windows)
        points = write_data(server, start, args.windows + 3600)
        config = write_config(directory, server.url, start, args.chunk)
        log = Log(directory / "tierflow.log")
        print(
            f"influxd at {server.url}; {points:,} points; daemon from {start.isoformat()} "
            f"({args.windows:,} one-second windows due), chunk {args.chunk}",
            flush=True,
        )
        command = [str(TIERFLOW), "--log-level", "info", "run", "-c", str(config)]
        if args.trace_interval > 0:
            command += ["--trace-memory", str(args.trace_interval)]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
        with log.path.open("w", encoding="utf-8") as sink:
            began = time.monotonic()
            daemon = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, env=environment
            )
            try:
                samples, caught_up_at = watch(daemon, log, args, began)
            finally:
                stop(daemon)
        log.poll()
        total = time.monotonic() - began
    return report(args, samples, log, total, caught_up_at)


def watch(
    daemon: subprocess.Popen[bytes], log: Log, args: argparse.Namespace, began: float
) -> tuple[list[Sample], float]:
    """Sample RSS and read the log until `args.windows` windows ran, `args.tail` seconds more
    passed, and one more memory sample was logged after that (so the one reported is current)."""
    samples: list[Sample] = []
    caught_up_at: float | None = None
    tail_ended: tuple[float, int] | None = None  # (when, memory samples by then)
    while True:
        time.sleep(args.sample_every)
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited with status {daemon.returncode}")
        log.poll()
        elapsed = time.monotonic() - began
        samples.append(Sample(elapsed, rss_of(daemon.pid), log.windows))
        if caught_up_at is None and log.windows >= args.windows:
            caught_up_at = elapsed
            print(f"  {log.windows:,} windows after {elapsed:.1f} s", flush=True)
        if caught_up_at is not None and tail_ended is None and elapsed - caught_up_at >= args.tail:
            tail_ended = (elapsed, len(log.memory))
        if tail_ended is not None:
            waited = elapsed - tail_ended[0]
            if len(log.memory) > tail_ended[1] or waited > max(2 * args.trace_interval, 1):
                assert caught_up_at is not None
                return samples, caught_up_at
        if elapsed > args.timeout:
            raise RuntimeError(f"only {log.windows:,} windows after {elapsed:.0f} s; giving up")


def stop(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def report(
    args: argparse.Namespace,
    samples: list[Sample],
    log: Log,
    total: float,
    caught_up_at: float | None,
) -> dict[str, Any]:
    warm_windows = int(args.windows * args.warmup)
    warm = [s for s in samples if s.windows >= warm_windows]
    if len(warm) < 2:
        raise RuntimeError("too few RSS samples after warm-up to judge growth")
    # A median of the first and of the last few samples, so one GC pause does not decide.
    head = statistics.median(s.rss for s in warm[:5])
    tail = statistics.median(s.rss for s in warm[-5:])
    last = log.memory[-1] if log.memory else {}
    top = sorted(last.get("top", []), key=lambda site: site["growth_bytes"], reverse=True)
    return {
        "windows_run": log.windows,
        "windows_failed": log.failed,
        "seconds": round(total, 1),
        "caught_up_after_s": round(caught_up_at, 1) if caught_up_at is not None else None,
        "windows_per_s": round(log.windows / caught_up_at, 1) if caught_up_at else None,
        "rss_start_mb": round(samples[0].rss / MB, 2),
        "rss_warm_mb": round(head / MB, 2),
        "rss_end_mb": round(tail / MB, 2),
        "rss_peak_mb": round(max(s.rss for s in samples) / MB, 2),
        "rss_growth_after_warmup_mb": round((tail - head) / MB, 2),
        "warmup_windows": warm_windows,
        "memory_samples": len(log.memory),
        "traced_mb": round(last.get("traced_bytes", 0) / MB, 2),
        "top_growth_sites": [
            {
                "site": site["site"],
                "growth_kb": round(site["growth_bytes"] / 1024, 1),
                "size_kb": round(site["size_bytes"] / 1024, 1),
                "count": site["count"],
            }
            for site in top[:10]
        ],
        "errors": log.errors[:5],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=20_000, help="one-second windows to run")
    parser.add_argument("--chunk", type=int, default=10, help="windows per query")
    parser.add_argument(
        "--trace-interval", type=float, default=5.0, help="--trace-memory N (0: no tracing)"
    )
    parser.add_argument("--sample-every", type=float, default=0.5, help="RSS sampling, seconds")
    parser.add_argument(
        "--warmup", type=float, default=0.25, help="share of the windows that is warm-up"
    )
    parser.add_argument("--tail", type=float, default=15.0, help="seconds to run once caught up")
    parser.add_argument("--max-growth-mb", type=float, default=5.0, help="fail above this")
    parser.add_argument("--timeout", type=float, default=1200.0, help="give up after, seconds")
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tierflow-soak-") as temp:
        result = soak(args, Path(temp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    growth = result["rss_growth_after_warmup_mb"]
    if result["windows_failed"]:
        print(f"FAIL: {result['windows_failed']} window(s) failed", file=sys.stderr)
        return 1
    if growth > args.max_growth_mb:
        print(f"FAIL: RSS grew {growth} MB after warm-up (limit {args.max_growth_mb} MB)")
        return 1
    print(f"OK: RSS grew {growth} MB after warm-up (limit {args.max_growth_mb} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
