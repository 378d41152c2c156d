"""Transfer benchmark: tierflow's bulk paths against the server's own limits, side by side on one
throwaway `influxd`.

- Export: tierflow archiving 2M points (200 hosts x 2 tags; a float, an int and a bool field; one
  window) into a local Parquet archive (`plan_export` + `export_planned` into `awrite_window`),
  against `curl` reading the same range as chunked CSV into /dev/null (the server's read limit). The
  tierflow side runs in a subprocess so its peak RSS (from `wait4`) is its own; it runs for 0.5M
  points too, to show the peak does not grow with the number of points.
- Write: tierflow restoring those 2M points from the archive into another database (archive
  read, `write_batches`, 4 bodies in flight) against 4 parallel `curl` posts of pre-built
  10,000-line bodies (the server's ingest limit). The target database is dropped and created
  again before every run and holds exactly the 2M points after it.

- Whole commands, as a user meets them: `tierflow run-once` archiving the same range as one
  window of an archive job (interpreter start-up, config, state store, the schema lookups, the
  export, the Parquet file, the count check and the commit) against the curl export, and
  `tierflow restore` of it into another database against the curl write.

Each side runs `--repeat` times, interleaved, so drift hits both alike; medians are reported,
and the ratios tierflow / curl (goals: export >= 0.8x, write >= 0.85x, for the inner loops and
for the whole commands).

    make bench-transfer   # or: .venv/bin/python bench/transfer.py [--repeat 3] [--variants]
                          #     [--profile]

`--variants` also runs tierflow with other settings (gzip off, smaller bodies, more bodies in
flight, bigger chunks) and reports which is fastest; `--profile` runs one export and one restore
under cProfile (every thread, the worker threads included) and prints the top costs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import load_average

from tierflow._archive import PointBatch, open_archive
from tierflow._config import parse_config
from tierflow._engines import Engine, engine_for
from tierflow._engines.influxql._export import export_planned, export_query, plan_export
from tierflow._transfer import MAX_BODY_BYTES, write_batches
from tierflow._windows import Window
from tierflow.testing import ThrowawayInfluxd

MEASUREMENT = "telemetry"
SOURCE_DB = "bench"
TARGET_DB = "restored"
START = datetime(2026, 11, 1, tzinfo=UTC)
LINES_PER_BODY = 10_000
CURL_WRITERS = 4
RESULTS = Path(__file__).parent / "results"
EXPORT_GOAL, WRITE_GOAL = 0.8, 0.85


# -- data --------------------------------------------------------------------------------------


def build_bodies(directory: Path, hosts: int, points: int) -> list[Path]:
    """Line-protocol bodies of `LINES_PER_BODY` lines, one point per host per second, time-major
    (as an agent fleet would send them). They load the source and are the curl write side."""
    directory.mkdir(parents=True, exist_ok=True)
    start_ns = int(START.timestamp()) * 1_000_000_000
    tags = [f"{MEASUREMENT},host=h{h:03d},rack=r{h % 10}" for h in range(hosts)]
    lines: list[str] = []
    files: list[Path] = []

    def flush() -> None:
        path = directory / f"body-{len(files):04d}.lp"
        path.write_text("".join(lines))
        files.append(path)
        lines.clear()

    for second in range(points // hosts):
        nanos = start_ns + second * 1_000_000_000
        lines.extend(
            f"{tags[h]} usage={(second * 7 + h * 13) % 1000 / 10 + 0.25},"
            f"jobs={(second + h) % 97}i,up={'true' if (second + h) % 5 else 'false'} {nanos}\n"
            for h in range(hosts)
        )
        if len(lines) >= LINES_PER_BODY:
            flush()
    if lines:
        flush()
    return files


def stop_for(points: int, hosts: int) -> datetime:
    return START + timedelta(seconds=points // hosts)


def count_points(db: ThrowawayInfluxd, database: str) -> dict[str, int]:
    (result,) = db.query(f'SELECT count(*) FROM "{database}".."{MEASUREMENT}"', db=database)
    series = result.get("series") or [{"columns": [], "values": [[]]}]
    return dict(zip(series[0]["columns"][1:], series[0]["values"][0][1:], strict=True))


def recreate(db: ThrowawayInfluxd, database: str) -> None:
    db.execute(f'DROP DATABASE "{database}"')
    db.execute(f'CREATE DATABASE "{database}"')


# -- the curl sides ----------------------------------------------------------------------------


def curl_export(url: str, query: str, *, chunk_size: int = 10_000, out: str = "/dev/null") -> float:
    command = [
        "curl", "-s", "-o", out, "-w", "%{http_code}",
        "-H", "Accept: application/csv",
        "--data-urlencode", f"q={query}", "--data-urlencode", f"db={SOURCE_DB}",
        "-d", "chunked=true", "-d", f"chunk_size={chunk_size}", "-d", "epoch=ns",
        f"{url}/query",
    ]  # fmt: skip
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - began
    assert done.stdout == "200", f"curl export answered {done.stdout}"
    return wall


def curl_write(url: str, database: str, bodies: list[Path]) -> float:
    """Post every body with `CURL_WRITERS` curl processes at once (xargs -P)."""
    command = [
        "xargs", "-P", str(CURL_WRITERS), "-I{}",
        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}\\n", "--data-binary", "@{}",
        f"{url}/write?db={database}&precision=ns",
    ]  # fmt: skip
    listing = "".join(f"{path}\n" for path in bodies)
    began = time.perf_counter()
    done = subprocess.run(command, input=listing, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - began
    statuses = done.stdout.split()
    assert statuses == ["204"] * len(bodies), f"curl writes answered {set(statuses)}"
    return wall


def csv_rows(path: Path) -> int:
    """Data rows of a chunked CSV export (each chunk repeats the header)."""
    rows = 0
    with path.open("rb") as file:
        for line in file:
            if line.strip() and not line.startswith(b"name,"):
                rows += 1
    return rows


# -- the tierflow sides ------------------------------------------------------------------------


def _engine(url: str, *, gzip: bool = True, concurrency: int = 4) -> Engine:
    config = parse_config(
        {
            "connections": {
                "bench": {
                    "kind": "influxdb1",
                    "url": url,
                    "timeout": "300s",
                    "gzip": gzip,
                    "max_concurrency": concurrency,
                }
            }
        },
        Path("bench.toml"),
    )
    return engine_for("bench", config.connections["bench"])


@dataclass
class ExportRun:
    points: int
    wall_s: float  # from the first query to the committed manifest (no interpreter start-up)
    process_s: float  # the whole subprocess, start-up and imports included
    peak_rss_mb: float  # the subprocess's high-water mark (wait4's ru_maxrss)
    baseline_rss_mb: float  # its resident set after imports, before the export
    cpu_s: float  # user + system time of the subprocess


def tierflow_export(
    url: str, archive: Path, points: int, hosts: int, *, gzip: bool = True,
    chunk_size: int = 10_000, profile: Path | None = None,
) -> ExportRun:  # fmt: skip
    """Archive `[START, START + points/hosts s)` as one window, in a subprocess of this script."""
    job = {
        "url": url, "archive": str(archive), "stop": stop_for(points, hosts).isoformat(),
        "gzip": gzip, "chunk_size": chunk_size, "profile": str(profile) if profile else None,
    }  # fmt: skip
    began = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, __file__, "--child-export", json.dumps(job)], stdout=subprocess.PIPE
    )
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not every child's
    process_s = time.perf_counter() - began
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.stdout is not None
    output = child.stdout.read()
    child.stdout.close()
    assert child.returncode == 0, f"the export subprocess failed ({child.returncode})"
    report = json.loads(output)
    assert report["rows"] == points, f"archived {report['rows']} points, not {points}"
    return ExportRun(
        points=points,
        wall_s=report["wall_s"],
        process_s=process_s,
        peak_rss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
        baseline_rss_mb=report["baseline_rss_kb"] / 1024,
        cpu_s=usage.ru_utime + usage.ru_stime,
    )


def child_export(job: dict[str, Any]) -> None:
    """The export subprocess: one window, archived; prints what happened as JSON."""
    baseline = _vm("VmRSS")
    stop = datetime.fromisoformat(job["stop"])

    async def run() -> tuple[int, float]:
        engine = _engine(job["url"], gzip=job["gzip"])
        archive = open_archive(job["archive"])
        began = time.perf_counter()
        plan = await plan_export(
            engine, database=SOURCE_DB, retention_policy=None, measurement=MEASUREMENT,
            start=START, stop=stop,
        )  # fmt: skip
        assert plan is not None, "the bench's source measurement has no fields"
        batches = export_planned(engine, plan, chunk_size=job["chunk_size"])
        manifest = await archive.awrite_window(MEASUREMENT, Window(START, stop), batches)
        wall = time.perf_counter() - began
        await engine.aclose()
        return manifest.rows, wall

    with profiled(Path(job["profile"]) if job["profile"] else None):
        rows, wall = asyncio.run(run())
    print(json.dumps({"rows": rows, "wall_s": wall, "baseline_rss_kb": baseline}))


def _vm(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class WriteRun:
    points: int
    wall_s: float
    cpu_s: float
    requests: int
    bytes_sent: int


async def tierflow_restore(
    url: str, archive_dir: Path, stop: datetime, *, gzip: bool = True,
    max_body_bytes: int = MAX_BODY_BYTES, concurrency: int = 4,
) -> WriteRun:  # fmt: skip
    """Read the archived range back and write it into `TARGET_DB`, as `tierflow restore` does."""
    engine = _engine(url, gzip=gzip, concurrency=concurrency)
    archive = open_archive(str(archive_dir))

    async def batches() -> AsyncIterator[tuple[str, PointBatch]]:
        for archived in archive.read(START, stop, measurement=MEASUREMENT):
            yield archived.measurement, archived.points

    cpu = _cpu()
    began = time.perf_counter()
    moved = await write_batches(
        engine, batches(), database=TARGET_DB, retention_policy=None,
        max_concurrency=concurrency, max_body_bytes=max_body_bytes,
    )  # fmt: skip
    wall = time.perf_counter() - began
    cpu = _cpu() - cpu
    await engine.aclose()
    assert moved.dropped == 0, moved
    return WriteRun(moved.points, wall, cpu, moved.requests, moved.bytes_sent)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- whole commands ----------------------------------------------------------------------------

TIERFLOW = str(Path(sys.executable).with_name("tierflow"))


def window_hours(stop: datetime) -> int:
    """Hours of the one window that holds `[START, stop)`: a divisor of 24, so that windows
    aligned to the epoch start at START (a midnight)."""
    hours = -(-int((stop - START).total_seconds()) // 3600)
    return next(h for h in (1, 2, 3, 4, 6, 8, 12, 24) if h >= hours)


def command_config(directory: Path, url: str, stop: datetime) -> Path:
    """An archive job whose one window holds `[START, stop)`, and a restore target, in a fresh
    directory (state and archive of their own)."""
    hours = window_hours(stop)
    directory.mkdir(parents=True)
    path = directory / "tierflow.toml"
    path.write_text(
        f"""
[state]
url = "sqlite:///{directory / "state.db"}"
[connections.bench]
kind = "influxdb1"
url = "{url}"
timeout = "300s"
[tiers.hot]
connection = "bench"
bucket = "{SOURCE_DB}"
[tiers.restored]
connection = "bench"
bucket = "{TARGET_DB}"
[tiers.cold]
archive = "{directory / "archive"}"
[jobs.to_cold]
kind = "archive"
source = "hot"
dest = "cold"
measurements = ["{MEASUREMENT}"]
every = "{hours}h"
start = "{START.isoformat()}"
""",
        encoding="utf-8",
    )
    return path


def command_archive(config: Path, stop: datetime) -> float:
    """`tierflow run-once` archiving the one window; wall time of the whole process."""
    hours = window_hours(stop)
    now = (START + timedelta(hours=hours)).isoformat()
    began = time.perf_counter()
    done = subprocess.run(
        [TIERFLOW, "run-once", "--now", now, "--json", "-c", str(config)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - began
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["succeeded"] == 1, done.stdout
    return wall


def command_restore(config: Path, stop: datetime, points: int) -> float:
    """`tierflow restore` of the archived range into `TARGET_DB`; wall time of the process."""
    began = time.perf_counter()
    done = subprocess.run(
        [TIERFLOW, "restore", "cold", "--from", START.isoformat(), "--to", stop.isoformat(),
         "--into", "restored", "--json", "-c", str(config)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - began
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["points"] == points, done.stdout
    return wall


# -- profiling ---------------------------------------------------------------------------------


@contextmanager
def profiled(path: Path | None) -> Iterator[None]:
    """cProfile every thread started meanwhile as well as this one (archive writes and reads run
    in worker threads), and dump the merged stats to `path`."""
    if path is None:
        yield
        return
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        profile.enable()
        try:
            original_run(self)
        finally:
            profile.disable()

    threading.Thread.run = run  # type: ignore[method-assign]
    main = cProfile.Profile()
    main.enable()
    try:
        yield
    finally:
        main.disable()
        threading.Thread.run = original_run  # type: ignore[method-assign]
        stats = pstats.Stats(main)
        for profile in profiles:
            profile.create_stats()
            if profile.stats:  # type: ignore[attr-defined]
                stats.add(profile)
        stats.dump_stats(path)


def top_costs(path: Path, limit: int = 18) -> str:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    return "\n".join(line for line in lines[start:] if line.strip())


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Sides:
    curl_export_s: list[float] = field(default_factory=list)
    tierflow_export: list[ExportRun] = field(default_factory=list)
    tierflow_export_small: list[ExportRun] = field(default_factory=list)
    curl_write_s: list[float] = field(default_factory=list)
    tierflow_write: list[WriteRun] = field(default_factory=list)
    command_archive_s: list[float] = field(default_factory=list)
    command_restore_s: list[float] = field(default_factory=list)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--small", type=int, default=500_000, help="points of the RSS check run")
    parser.add_argument("--variants", action="store_true", help="try other tierflow settings")
    parser.add_argument("--profile", action="store_true", help="cProfile one run of each side")
    parser.add_argument("--child-export", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_export:
        child_export(json.loads(args.child_export))
        return
    if shutil.which("curl") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "curl"], check=True)
    load_before = load_average("lowers both sides' numbers (the ratios less so)")

    points, hosts = args.points, args.hosts
    stop = stop_for(points, hosts)
    query = export_query(
        database=SOURCE_DB, retention_policy=None, measurement=MEASUREMENT, start=START, stop=stop
    )
    with tempfile.TemporaryDirectory(prefix="tierflow-bench-") as scratch, ThrowawayInfluxd() as db:
        work = Path(scratch)
        began = time.perf_counter()
        bodies = build_bodies(work / "bodies", hosts, points)
        print(f"{len(bodies)} line-protocol bodies of {LINES_PER_BODY:,} lines, "
              f"{sum(p.stat().st_size for p in bodies) / 1e6:.0f} MB, built in "
              f"{time.perf_counter() - began:.1f} s")  # fmt: skip
        db.execute(f'CREATE DATABASE "{SOURCE_DB}"')
        load_s = curl_write(db.url, SOURCE_DB, bodies)
        source = count_points(db, SOURCE_DB)
        assert set(source.values()) == {points}, source
        print(f"source loaded: {points:,} points in {load_s:.2f} s")

        # Warm-up, untimed: the curl export read back whole (every point there), and the
        # tierflow export that makes the archive every restore reads.
        csv_path = work / "export.csv"
        curl_export(db.url, query, out=str(csv_path))
        assert csv_rows(csv_path) == points, f"curl exported {csv_rows(csv_path)} rows"
        csv_path.unlink()
        archive_dir = work / "archive"
        tierflow_export(db.url, archive_dir, points, hosts)

        sides = Sides()
        for repeat in range(args.repeat):  # interleaved, so drift hits both sides alike
            sides.curl_export_s.append(curl_export(db.url, query))
            for size, runs in ((points, sides.tierflow_export),
                               (args.small, sides.tierflow_export_small)):  # fmt: skip
                target = work / f"export-{repeat}-{size}"
                runs.append(tierflow_export(db.url, target, size, hosts))
                shutil.rmtree(target)
            recreate(db, TARGET_DB)
            sides.curl_write_s.append(curl_write(db.url, TARGET_DB, bodies))
            assert set(count_points(db, TARGET_DB).values()) == {points}
            recreate(db, TARGET_DB)
            sides.tierflow_write.append(asyncio.run(tierflow_restore(db.url, archive_dir, stop)))
            restored = count_points(db, TARGET_DB)
            assert set(restored.values()) == {points}, f"restored {restored}, not {points}"
            config = command_config(work / f"command-{repeat}", db.url, stop)
            sides.command_archive_s.append(command_archive(config, stop))
            recreate(db, TARGET_DB)
            sides.command_restore_s.append(command_restore(config, stop, points))
            assert set(count_points(db, TARGET_DB).values()) == {points}
            shutil.rmtree(config.parent)
            print(f"  repeat {repeat + 1}/{args.repeat} done")

        variants = run_variants(db, work, archive_dir, points, hosts, stop, args.repeat) \
            if args.variants else {}  # fmt: skip
        profiles = run_profiles(db, work, archive_dir, points, hosts, stop) \
            if args.profile else {}  # fmt: skip

    report = summarise(sides, points, hosts, args, variants, profiles)
    report["load_average"] = {"before": load_before, "after": os.getloadavg()[0]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transfer.json").write_text(json.dumps(report, indent=2) + "\n")


def run_variants(
    db: ThrowawayInfluxd, work: Path, archive_dir: Path, points: int, hosts: int,
    stop: datetime, repeat: int,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Other tierflow settings, each run `repeat` times interleaved; median points/s."""
    exports: dict[str, dict[str, Any]] = {
        "default (gzip, chunk_size 10000)": {},
        "gzip off": {"gzip": False},
        "gzip off, chunk_size 50000": {"gzip": False, "chunk_size": 50_000},
    }
    writes: dict[str, dict[str, Any]] = {
        "default (gzip, 8 MB bodies, 4 in flight)": {},
        "gzip off": {"gzip": False},
        "gzip off, 1 MB bodies": {"gzip": False, "max_body_bytes": 1 << 20},
        "gzip off, 1 MB bodies, 8 in flight": {
            "gzip": False, "max_body_bytes": 1 << 20, "concurrency": 8
        },
        "gzip, 1 MB bodies": {"max_body_bytes": 1 << 20},
    }  # fmt: skip
    rates: dict[str, dict[str, list[float]]] = {"export": {}, "write": {}}
    for index in range(repeat):
        for name, options in exports.items():
            target = work / f"variant-{index}"
            run = tierflow_export(db.url, target, points, hosts, **options)
            shutil.rmtree(target)
            rates["export"].setdefault(name, []).append(points / run.wall_s)
        for name, options in writes.items():
            recreate(db, TARGET_DB)
            moved = asyncio.run(tierflow_restore(db.url, archive_dir, stop, **options))
            assert set(count_points(db, TARGET_DB).values()) == {points}
            rates["write"].setdefault(name, []).append(points / moved.wall_s)
    return {
        side: {name: statistics.median(values) for name, values in by_name.items()}
        for side, by_name in rates.items()
    }


def run_profiles(
    db: ThrowawayInfluxd, work: Path, archive_dir: Path, points: int, hosts: int, stop: datetime
) -> dict[str, str]:
    """One export and one restore under cProfile (slower than unprofiled: costs are relative)."""
    export_stats, write_stats = work / "export.prof", work / "write.prof"
    tierflow_export(db.url, work / "profiled", points, hosts, profile=export_stats)
    recreate(db, TARGET_DB)
    with profiled(write_stats):
        asyncio.run(tierflow_restore(db.url, archive_dir, stop))
    return {"export": top_costs(export_stats), "write": top_costs(write_stats)}


def summarise(
    sides: Sides, points: int, hosts: int, args: argparse.Namespace,
    variants: dict[str, dict[str, float]], profiles: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    med: Callable[[list[float]], float] = statistics.median
    curl_export_rate = points / med(sides.curl_export_s)
    export_rate = points / med([r.wall_s for r in sides.tierflow_export])
    small_rate = args.small / med([r.wall_s for r in sides.tierflow_export_small])
    curl_write_rate = points / med(sides.curl_write_s)
    write_rate = points / med([r.wall_s for r in sides.tierflow_write])
    peak = {
        "small": max(r.peak_rss_mb for r in sides.tierflow_export_small),
        "full": max(r.peak_rss_mb for r in sides.tierflow_export),
    }
    baseline = med([r.baseline_rss_mb for r in sides.tierflow_export])
    report = {
        "points": points,
        "hosts": hosts,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "export": {
            "curl_points_per_s": curl_export_rate,
            "tierflow_points_per_s": export_rate,
            "ratio": export_rate / curl_export_rate,
            "goal": EXPORT_GOAL,
            "tierflow_small_points_per_s": small_rate,
            "tierflow_cpu_s": med([r.cpu_s for r in sides.tierflow_export]),
            "tierflow_process_s": med([r.process_s for r in sides.tierflow_export]),
            "peak_rss_mb": {str(args.small): peak["small"], str(points): peak["full"]},
            "baseline_rss_mb": baseline,
            "runs": {
                "curl_s": sides.curl_export_s,
                "tierflow": [asdict(r) for r in sides.tierflow_export],
                "tierflow_small": [asdict(r) for r in sides.tierflow_export_small],
            },
        },
        "write": {
            "curl_points_per_s": curl_write_rate,
            "tierflow_points_per_s": write_rate,
            "ratio": write_rate / curl_write_rate,
            "goal": WRITE_GOAL,
            "tierflow_cpu_s": med([r.cpu_s for r in sides.tierflow_write]),
            "tierflow_requests": sides.tierflow_write[0].requests,
            "tierflow_bytes_sent": sides.tierflow_write[0].bytes_sent,
            "curl_requests": -(-points // LINES_PER_BODY),
            "runs": {
                "curl_s": sides.curl_write_s,
                "tierflow": [asdict(r) for r in sides.tierflow_write],
            },
        },
        "commands": {
            "archive_points_per_s": points / med(sides.command_archive_s),
            "archive_ratio": points / med(sides.command_archive_s) / curl_export_rate,
            "restore_points_per_s": points / med(sides.command_restore_s),
            "restore_ratio": points / med(sides.command_restore_s) / curl_write_rate,
            "runs": {
                "archive_s": sides.command_archive_s,
                "restore_s": sides.command_restore_s,
            },
        },
        "variants_points_per_s": variants,
    }

    def mark(ratio: float, goal: float) -> str:
        return "meets" if ratio >= goal else "MISSES"

    e, w = report["export"], report["write"]
    print(
        f"\n{points:,} points ({hosts} hosts x 2 tags; float, int, bool fields), "
        f"median of {args.repeat}, {os.cpu_count()} CPUs\n"
    )
    print(f"  {'':32}{'curl':>14}{'tierflow':>14}{'ratio':>8}  goal")
    print(
        f"  {'export (points/s)':32}{curl_export_rate:>14,.0f}{export_rate:>14,.0f}"
        f"{e['ratio']:>7.2f}x  >= {EXPORT_GOAL}x ({mark(e['ratio'], EXPORT_GOAL)})"
    )
    print(
        f"  {'write (points/s)':32}{curl_write_rate:>14,.0f}{write_rate:>14,.0f}"
        f"{w['ratio']:>7.2f}x  >= {WRITE_GOAL}x ({mark(w['ratio'], WRITE_GOAL)})"
    )
    c = report["commands"]
    print(
        f"  {'tierflow run-once (archive)':32}{curl_export_rate:>14,.0f}"
        f"{c['archive_points_per_s']:>14,.0f}{c['archive_ratio']:>7.2f}x  >= {EXPORT_GOAL}x "
        f"({mark(c['archive_ratio'], EXPORT_GOAL)})"
    )
    print(f"  {'tierflow restore':32}{curl_write_rate:>14,.0f}"
          f"{c['restore_points_per_s']:>14,.0f}{c['restore_ratio']:>7.2f}x  >= {WRITE_GOAL}x "
          f"({mark(c['restore_ratio'], WRITE_GOAL)})")  # fmt: skip
    print(
        f"\n  tierflow export, peak RSS of its process: {peak['small']:.0f} MB at "
        f"{args.small:,} points, {peak['full']:.0f} MB at {points:,} "
        f"(after imports: {baseline:.0f} MB)"
    )
    print(
        f"  tierflow export at {args.small:,} points: {small_rate:,.0f} points/s; "
        f"CPU {e['tierflow_cpu_s']:.2f} s for {points:,}"
    )
    print(f"  tierflow write: {w['tierflow_requests']} requests, "
          f"{w['tierflow_bytes_sent'] / 1e6:.0f} MB sent, CPU {w['tierflow_cpu_s']:.2f} s "
          f"(curl: {w['curl_requests']} requests)")  # fmt: skip
    for side, by_name in variants.items():
        reference = curl_export_rate if side == "export" else curl_write_rate
        print(f"\n  tierflow {side} variants (median points/s, ratio to curl):")
        for name, rate in sorted(by_name.items(), key=lambda item: -item[1]):
            print(f"    {name:44}{rate:>12,.0f}{rate / reference:>7.2f}x")
    for side, text in profiles.items():
        print(f"\n  cProfile of one tierflow {side} (all threads, by own time):\n{text}")
    return report


if __name__ == "__main__":
    main()
