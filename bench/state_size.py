"""State size and per-batch cost: a year of one-minute windows (525,600) claimed and finished as
8,760 one-hour batches of 60, straight into a state store (no InfluxDB), as a catch-up records
them. Reports the state's size, the time per claim + finish pair (median, p95, first and last
tenth: flat when the cost does not grow with history; and the CPU time per pair, which the
fsyncs of a busy disk do not blur), and how long what `status` and `history`
read takes at the end, for SQLite and PostgreSQL (a throwaway server, or
$TIERFLOW_TEST_POSTGRES_URL's).

    PYTHONPATH=src .venv/bin/python bench/state_size.py [--days 365] [--store sqlite,postgres]

Runs against any tierflow: one whose `finish` takes no `compact_before` (before ledger ranges)
is measured as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tierflow._state import Outcome, RunStatus, SqliteStateStore, StateStore
from tierflow._windows import Window

START = datetime(2025, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=1)
BATCH = 60
JOB = "down_1m"
LEASE = timedelta(minutes=1)


def windows(batch: int) -> list[Window]:
    first = START + batch * BATCH * STEP
    return [Window(first + i * STEP, first + (i + 1) * STEP) for i in range(BATCH)]


async def catch_up(store: StateStore, batches: int) -> tuple[list[float], float]:
    """Claim and finish every batch, oldest first, as the runner does; the seconds of each pair,
    and the CPU seconds of the process (the store's threads included) for them all."""
    folds = "compact_before" in inspect.signature(store.finish).parameters
    await store.ensure_job(JOB, START)
    took: list[float] = []
    cpu = time.process_time()
    for batch in range(batches):
        chunk = windows(batch)
        now = chunk[-1].stop + timedelta(seconds=30)  # as if it ran once complete
        run_id = f"{batch:08d}0123456789abcdef01234567"  # as long as a uuid4 hex
        began = time.perf_counter()
        claim = await store.claim(
            JOB,
            chunk,
            run_id=run_id,
            started_at=now,
            lease_expires_at=now + LEASE,
            reason="scheduled",
        )
        assert claim.taken == tuple(chunk), claim
        outcome = Outcome(
            RunStatus.SUCCEEDED,
            now + timedelta(milliseconds=900),
            0.9,
            query_hash="0" * 64,
            template_version="downsample-1",
        )
        extra: dict[str, Any] = {"compact_before": chunk[-1].stop} if folds else {}
        await store.finish(JOB, chunk, run_id=run_id, outcome=outcome, **extra)
        took.append(time.perf_counter() - began)
    return took, time.process_time() - cpu


async def reads(store: StateStore, batches: int) -> dict[str, float]:
    """Seconds taken by what `status` reads of the store (watermark, the ledger from it, the
    last attempt, late-data re-runs, the census of every window) and by `history`."""
    end = START + batches * BATCH * STEP

    async def status() -> None:
        mark = await store.watermark(JOB)
        assert mark == end, mark
        await store.entries(JOB, mark)
        await store.history(JOB, limit=1)
        await store.count_attempts(JOB, reason="late_data")
        census = await store.census(JOB, START, end)
        assert sum(census.counts.values()) == batches * BATCH, census.counts

    async def history() -> None:
        assert len(await store.history(JOB, limit=50)) == 50

    async def old_entries() -> None:  # a backfill planner asking for a day in the middle
        middle = START + (end - START) / 2
        assert len(await store.entries(JOB, middle, middle + timedelta(days=1))) == 1440

    found = {}
    for name, read in (("status", status), ("history", history), ("day_entries", old_entries)):
        began = time.perf_counter()
        await read()
        found[f"{name}_s"] = round(time.perf_counter() - began, 4)
    return found


@asynccontextmanager
async def sqlite_store(where: Path) -> AsyncIterator[tuple[StateStore, Callable[[], int]]]:
    path = where / "state.db"

    def size() -> int:
        return sum(p.stat().st_size for p in where.iterdir() if p.name.startswith("state.db"))

    async with SqliteStateStore(path) as store:
        yield store, size


@asynccontextmanager
async def postgres_store(_: Path) -> AsyncIterator[tuple[StateStore, Callable[[], int]]]:
    from tierflow._state._postgres import PostgresStateStore
    from tierflow.testing.postgres import ThrowawayPostgres

    with ThrowawayPostgres() as server:
        url = server.new_database("tierflow_bench")

        def size() -> int:
            server.execute("VACUUM", url)
            rows = server.execute(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r'",
                url,
            )
            return int(rows[0][0])

        async with PostgresStateStore(url) as store:
            yield store, size


async def measure(kind: str, batches: int) -> dict[str, Any]:
    opener = {"sqlite": sqlite_store, "postgres": postgres_store}[kind]
    with tempfile.TemporaryDirectory() as where:
        async with opener(Path(where)) as (store, size):
            took, cpu = await catch_up(store, batches)
            found = await reads(store, batches)
            await store.aclose()  # SQLite checkpoints its WAL into the file on closing
            size_mb = round(size() / 1e6, 3)
    tenth = max(1, batches // 10)
    return {
        "store": kind,
        "windows": batches * BATCH,
        "batches": batches,
        "size_mb": size_mb,
        "total_s": round(sum(took), 2),
        "pair_median_ms": round(statistics.median(took) * 1000, 3),
        "pair_cpu_ms": round(cpu / batches * 1000, 3),
        "pair_p95_ms": round(sorted(took)[int(len(took) * 0.95)] * 1000, 3),
        "pair_first_tenth_ms": round(statistics.mean(took[:tenth]) * 1000, 3),
        "pair_last_tenth_ms": round(statistics.mean(took[-tenth:]) * 1000, 3),
        **found,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--store", default="sqlite,postgres")
    args = parser.parse_args()
    batches = args.days * 24 * 60 // BATCH
    for kind in args.store.split(","):
        print(json.dumps(asyncio.run(measure(kind, batches))), flush=True)


if __name__ == "__main__":
    main()
