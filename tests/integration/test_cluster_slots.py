"""Limits that hold across workers: `PostgresStateStore.slot` on a real PostgreSQL, and the
connection and `[scheduler]` limits of several `tierflow run-once` processes sharing one state
database, counted at a recording proxy in front of the real influxd (`tests.proxy`).

What the slots are is checked where PostgreSQL keeps them (`pg_locks`), how many holders there
were by the test's own counter and the proxy's, never by what tierflow reports.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.events import Events
from tests.integration._helpers import (
    EVERY,
    assert_tier,
    downsamples,
    expected_tier,
    grid,
    into_of,
    job,
    telemetry,
    write_points,
)
from tests.integration.conftest import WARM_RP, TierData, read_tier, write_toml
from tests.integration.test_cli import rfc3339
from tests.proxy import InFlight, ThreadedProxy, max_overlap
from tierflow._runner._capacity import connection_scope
from tierflow._state import RunStatus
from tierflow._state._postgres import PostgresStateStore
from tierflow._state._slots import scope_key
from tierflow.testing import ThrowawayInfluxd
from tierflow.testing.postgres import ThrowawayPostgres

TIERFLOW = Path(sys.executable).parent / "tierflow"


def slot_locks(postgres: ThrowawayPostgres, url: str, scope: str) -> list[tuple[int, int]]:
    """The slot locks of `scope` PostgreSQL holds right now: (index, backend pid)."""
    rows = postgres.execute(
        "SELECT objid::bigint, pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
        f" AND classid::bigint = {scope_key(scope) & 0xFFFFFFFF} AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " ORDER BY 1",
        url,
    )
    return [(int(index), int(pid)) for index, pid in rows]


class Holders:
    """Counts the tasks inside a slot at once, and the most seen."""

    def __init__(self) -> None:
        self.now = 0
        self.max = 0
        self.done = 0

    @asynccontextmanager
    async def inside(self) -> AsyncIterator[None]:
        self.now += 1
        self.max = max(self.max, self.now)
        try:
            yield
        finally:
            self.now -= 1
            self.done += 1


async def taken_within(slot: AbstractAsyncContextManager[None], seconds: float) -> bool:
    """Whether `slot` could be entered within `seconds` (left again at once)."""

    async def enter() -> None:
        async with slot:
            pass

    try:
        await asyncio.wait_for(enter(), seconds)
    except TimeoutError:
        return False
    return True


@pytest.fixture
async def stores(postgres_url: str) -> AsyncIterator[list[PostgresStateStore]]:
    """Four workers' stores on one database."""
    made = [PostgresStateStore(postgres_url) for _ in range(4)]
    try:
        yield made
    finally:
        await asyncio.gather(*(store.aclose() for store in made))


# -- the slots themselves --------------------------------------------------------------------


async def test_a_limit_holds_across_the_workers_of_a_database(
    postgres: ThrowawayPostgres, postgres_url: str, stores: list[PostgresStateStore]
) -> None:
    """Four workers, six tasks each, all wanting one of three slots: never more than three
    inside at once (the test's counter, and PostgreSQL's locks), and every task gets its turn."""
    holders = Holders()
    seen_locks: list[int] = []

    async def task(store: PostgresStateStore) -> None:
        async with store.slot("scope", 3), holders.inside():
            seen_locks.append(
                len(await asyncio.to_thread(slot_locks, postgres, postgres_url, "scope"))
            )
            await asyncio.sleep(0.05)

    await asyncio.gather(*(task(store) for store in stores for _ in range(6)))
    assert holders.done == 24
    assert holders.max == 3
    assert max(seen_locks) <= 3
    assert slot_locks(postgres, postgres_url, "scope") == []  # every slot given back


async def test_scopes_are_independent_and_a_process_does_not_take_its_own_slot_twice(
    postgres: ThrowawayPostgres, postgres_url: str, stores: list[PostgresStateStore]
) -> None:
    one, two = stores[:2]
    async with one.slot("a", 2), one.slot("b", 1):
        # A session may lock an advisory key it holds again: the worker must skip its own.
        async with one.slot("a", 2):
            assert [i for i, _ in slot_locks(postgres, postgres_url, "a")] == [0, 1]
            assert not await taken_within(two.slot("a", 2), 0.5)
            assert not await taken_within(one.slot("a", 2), 0.5)
        assert not await taken_within(two.slot("b", 1), 0.5)
        assert await taken_within(two.slot("a", 2), 2)
        assert await taken_within(two.slot("c", 1), 2)
    assert await taken_within(two.slot("b", 1), 2)


async def test_a_smaller_limit_elsewhere_shares_the_low_slots(
    postgres_url: str, stores: list[PostgresStateStore]
) -> None:
    """Workers whose configs disagree (a rolling change) hold at most the larger limit."""
    one, two = stores[:2]
    async with one.slot("s", 1):
        assert not await taken_within(two.slot("s", 1), 0.5)
        async with two.slot("s", 3), two.slot("s", 3):
            assert not await taken_within(stores[2].slot("s", 3), 0.5)


async def test_a_waiter_cancelled_takes_no_slot_with_it(
    postgres: ThrowawayPostgres, postgres_url: str, stores: list[PostgresStateStore]
) -> None:
    one, two = stores[:2]
    async with one.slot("s", 1):
        waiter = asyncio.create_task(taken_within(two.slot("s", 1), 30))
        await asyncio.sleep(0.3)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    await asyncio.sleep(0.2)
    assert slot_locks(postgres, postgres_url, "s") == []
    assert await taken_within(stores[2].slot("s", 1), 2)


_HOLDER = """
import asyncio, sys
from tierflow._state._postgres import PostgresStateStore

async def main() -> None:
    async with PostgresStateStore(sys.argv[1]) as store, store.slot("s", 1):
        print("held", flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


def holder_process(url: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held"
    return process


async def test_a_worker_killed_while_holding_a_slot_frees_it_at_once(
    postgres: ThrowawayPostgres, postgres_url: str, stores: list[PostgresStateStore]
) -> None:
    process = holder_process(postgres_url)
    try:
        assert [i for i, _ in slot_locks(postgres, postgres_url, "s")] == [0]
        assert not await taken_within(stores[0].slot("s", 1), 1)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        began = time.monotonic()
        # No lease to wait out: the session ended with the process.
        assert await taken_within(stores[0].slot("s", 1), 5)
        assert time.monotonic() - began < 5
    finally:
        process.kill()
        process.wait(10)


async def test_a_stopped_worker_keeps_its_slot_until_it_resumes(
    postgres: ThrowawayPostgres, postgres_url: str, stores: list[PostgresStateStore]
) -> None:
    """A SIGSTOPped worker's request may still run at InfluxDB: its slot stays taken."""
    process = holder_process(postgres_url)
    try:
        os.kill(process.pid, signal.SIGSTOP)
        assert not await taken_within(stores[0].slot("s", 1), 1.5)
        os.kill(process.pid, signal.SIGCONT)
        assert not await taken_within(stores[0].slot("s", 1), 0.5)
        process.terminate()  # SIGTERM: the interpreter exits, its connection closes
        process.wait(10)
        assert await taken_within(stores[0].slot("s", 1), 5)
    finally:
        process.kill()
        process.wait(10)


def terminate_slot_connection(postgres: ThrowawayPostgres, url: str, scope: str) -> int:
    """End the backend holding `scope`'s slots, as a restart or an administrator would."""
    (pid,) = {pid for _, pid in slot_locks(postgres, url, scope)}  # one worker's connection
    postgres.execute(f"SELECT pg_terminate_backend({pid}, 5000)", url)
    return pid


async def test_a_lost_slot_connection_takes_no_new_slot_of_the_scope_while_lost_ones_run(
    postgres: ThrowawayPostgres,
    postgres_url: str,
    stores: list[PostgresStateStore],
    events: Events,
) -> None:
    """The connection dies while a request it admitted runs; another worker takes the freed
    slot; the first worker takes no further slot of that scope until its own request is done,
    and another scope's slots it may take at once."""
    one, two = stores[:2]
    running = asyncio.Event()
    finish = asyncio.Event()

    async def request() -> None:
        async with one.slot("s", 1):
            running.set()
            await finish.wait()

    in_flight = asyncio.create_task(request())
    await running.wait()
    old = terminate_slot_connection(postgres, postgres_url, "s")
    # PostgreSQL forgot the slot: another worker takes it (the overshoot a lost connection allows).
    async with two.slot("s", 1):
        assert not await taken_within(one.slot("s", 1), 0.5)  # held by two, and one's in flight
        assert await taken_within(one.slot("other", 1), 2)  # a new connection, another scope
    assert events.named("slot_connection_lost")
    # Two is done, but one's request, admitted by the lost slot, still runs: no new slot.
    assert not await taken_within(one.slot("s", 1), 0.6)
    finish.set()
    await in_flight
    assert await taken_within(one.slot("s", 1), 2)
    assert all(pid != old for _, pid in slot_locks(postgres, postgres_url, "other"))


async def test_a_reconnected_worker_takes_back_the_slots_nobody_took(
    postgres: ThrowawayPostgres,
    postgres_url: str,
    stores: list[PostgresStateStore],
    events: Events,
) -> None:
    one, two = stores[:2]
    async with one.slot("s", 2):
        old = terminate_slot_connection(postgres, postgres_url, "s")
        async with one.slot("s", 2):  # reconnects, takes index 0 back, then takes index 1
            locks = slot_locks(postgres, postgres_url, "s")
            assert [i for i, _ in locks] == [0, 1]
            assert len({pid for _, pid in locks} - {old}) == 1
            assert not await taken_within(two.slot("s", 2), 0.5)
        assert not await taken_within(two.slot("s", 1), 0.5)  # index 0 is one's again
    (restored,) = events.named("slot_connection_restored")
    assert (restored["retaken"], restored["still_lost"]) == (1, 0)
    assert await taken_within(two.slot("s", 1), 2)


async def test_a_closed_store_gives_its_slots_back(
    postgres: ThrowawayPostgres, postgres_url: str, stores: list[PostgresStateStore]
) -> None:
    one, two = stores[:2]
    async with one.slot("s", 1):
        assert slot_locks(postgres, postgres_url, "s")
        await one.aclose()
        assert await taken_within(two.slot("s", 1), 2)


async def test_memory_and_sqlite_stores_share_no_slots(tmp_path: Path) -> None:
    """One host's state: the process's own gates are the limit (`Capacity`), the store adds none."""
    from tierflow._state import MemoryStateStore, SqliteStateStore

    for store in (MemoryStateStore(), SqliteStateStore(tmp_path / "s.db")):
        async with store:
            async with store.slot("s", 1):
                assert await taken_within(store.slot("s", 1), 0.1)
            with pytest.raises(ValueError, match="at least one slot"):
                store.slot("s", 0)


# -- several tierflow processes against one influxd -------------------------------------------


def config_of(
    tmp_path: Path,
    db: str,
    state_url: str,
    urls: Mapping[str, str],
    jobs: Mapping[str, str],
    *,
    limits: Mapping[str, int] | None = None,
    total: int | None = None,
    start: datetime,
) -> Path:
    """Connections named after `urls`, hot/warm tiers on each, a downsample job per name of
    `jobs` on its connection into a measurement of its own, in 5-minute batches, four at once."""
    tables: dict[str, Mapping[str, object]] = {"state": {"url": state_url}}
    if total is not None:
        tables["scheduler"] = {"max_concurrency": total, "lease": "2m"}
    for name, url in urls.items():
        limit = {"max_concurrency": limits[name]} if limits and name in limits else {}
        tables[f"connections.{name}"] = {"kind": "influxdb1", "url": url, **limit}
        tables[f"tiers.hot_{name}"] = {"connection": name, "bucket": f"{db}/autogen"}
        tables[f"tiers.warm_{name}"] = {"connection": name, "bucket": f"{db}/{WARM_RP}"}
    for name, connection in jobs.items():
        tables[f"jobs.{name}"] = {
            "kind": "downsample",
            "source": f"hot_{connection}",
            "dest": f"warm_{connection}",
            **job(
                start,
                into="{{ measurement }}_" + name,
                parallel_windows=4,
                catchup_chunk="5m",
            ),
        }
    return write_toml(tmp_path, tables)


#: The advisory lock a PostgreSQL store migrates under, first thing on connecting (queries.sql).
MIGRATION_LOCK = 8388347322973319031


def run_workers(url: str, config: Path, now: datetime, workers: int) -> None:
    """`tierflow run-once --wait` in `workers` processes, started together: the test holds the
    lock every worker takes first (to migrate the schema) until all of them wait for it, so the
    slowest to start is not left with nothing to do. Each must exit 0."""
    import psycopg

    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    command = [str(TIERFLOW), "run-once", "--wait", "-c", str(config), "--now", rfc3339(now)]
    spawned: list[subprocess.Popen[str]] = []
    try:
        with psycopg.connect(url, autocommit=True) as barrier:
            barrier.execute(f"SELECT pg_advisory_lock({MIGRATION_LOCK})".encode())
            spawned += [
                subprocess.Popen(
                    command,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                    cwd=config.parent,
                )
                for _ in range(workers)
            ]
            deadline = time.monotonic() + 60
            while _waiting_for(barrier) < workers:
                assert time.monotonic() < deadline, "the workers did not all start"
                assert all(p.poll() is None for p in spawned), "a worker ended early"
                time.sleep(0.05)
            barrier.execute(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})".encode())
        for process in spawned:
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, f"exit {process.returncode}\n{err}"
    finally:
        for process in spawned:
            process.kill()
            process.wait(10)


def _waiting_for(barrier: Any) -> int:
    """How many sessions wait for the migration lock the barrier holds."""
    row = barrier.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        f"AND objsubid = 1 AND objid::bigint = {MIGRATION_LOCK & 0xFFFFFFFF} "
        f"AND classid::bigint = {MIGRATION_LOCK >> 32}".encode()
    ).fetchone()
    return int(row[0])


async def succeeded_once(url: str, jobs: list[str], count: int, start: datetime) -> set[int]:
    """Every window of every job succeeded, on its first and only attempt (nothing ran twice)."""
    holders: set[int] = set()
    async with PostgresStateStore(url) as store:
        for name in jobs:
            entries = await store.entries(name, start)
            assert [(e.window.start, e.window.stop) for e in entries] == grid(start, EVERY, count)
            assert {(e.status, e.attempts) for e in entries} == {(RunStatus.SUCCEEDED, 1)}
            attempts = await store.history(name, limit=1000)
            assert len(attempts) == count
            holders.update(e.holder.pid for e in entries if e.holder is not None)
    return holders


def suffixed(name: str) -> Callable[[str], str]:
    return lambda measurement: f"{measurement}_{name}"


async def test_a_connection_limit_holds_across_worker_processes(
    influxd: ThrowawayInfluxd,
    db: str,
    postgres_url: str,
    start: datetime,
    tmp_path: Path,
) -> None:
    """Three workers, each able to run twelve batches at once on a connection whose limit is
    two: the server never sees more than two of their queries at once (not 3 x 2)."""
    points = telemetry(31, start)
    write_points(influxd, db, points)
    count = 8
    names = ["a", "b", "c"]
    with ThreadedProxy(influxd.url, delay=0.15, group=into_of) as proxy:
        config = config_of(
            tmp_path,
            db,
            postgres_url,
            {"plant": proxy.url},
            dict.fromkeys(names, "plant"),
            limits={"plant": 2},
            start=start,
        )
        await asyncio.to_thread(run_workers, postgres_url, config, start + count * EVERY, 3)
        exchanges = proxy.proxy.exchanges

    queries = downsamples(exchanges)
    assert len(queries) == len(names) * count  # each window's query sent once, by one worker
    assert proxy.proxy.max_in_flight == 2
    assert max_overlap(exchanges) == 2
    await succeeded_once(postgres_url, names, count, start)
    expected: TierData = {}
    for name in names:
        expected |= expected_tier(points, grid(start, EVERY, count), into=suffixed(name))
    assert_tier(read_tier(influxd, db, WARM_RP), expected)


@pytest.mark.parametrize("total", [1, 3])
async def test_the_scheduler_limit_holds_across_worker_processes_and_connections(
    influxd: ThrowawayInfluxd,
    db: str,
    postgres_url: str,
    start: datetime,
    tmp_path: Path,
    total: int,
) -> None:
    points = telemetry(32, start)
    write_points(influxd, db, points)
    count = 6
    both = InFlight()
    with (
        ThreadedProxy(influxd.url, delay=0.12, shared=both) as one,
        ThreadedProxy(influxd.url, delay=0.12, shared=both) as two,
    ):
        config = config_of(
            tmp_path,
            db,
            postgres_url,
            {"one": one.url, "two": two.url},
            {"x": "one", "y": "two"},
            total=total,
            start=start,
        )
        await asyncio.to_thread(run_workers, postgres_url, config, start + count * EVERY, 3)
        exchanges = one.proxy.exchanges + two.proxy.exchanges

    assert len(downsamples(exchanges)) == 2 * count
    assert both.max == total
    assert max_overlap(exchanges) == total
    await succeeded_once(postgres_url, ["x", "y"], count, start)
    expected = {
        **expected_tier(points, grid(start, EVERY, count), into=suffixed("x")),
        **expected_tier(points, grid(start, EVERY, count), into=suffixed("y")),
    }
    assert_tier(read_tier(influxd, db, WARM_RP), expected)


def test_scope_keys_are_fixed() -> None:
    """Workers of different tierflow versions must agree on a scope's lock key: the keys are
    part of the contract between them, fixed here."""
    assert connection_scope("plant") == "connection:plant"
    assert scope_key("scheduler") == -495168814
    assert scope_key("connection:plant") == 1337156608


async def test_a_worker_that_cannot_reach_postgresql_takes_no_slot() -> None:
    """No slot without the database: the batch fails with a StateError naming it (the daemon
    pauses and tries again), it does not run unbounded."""
    from tierflow._errors import StateError

    store = PostgresStateStore("postgresql://nobody@127.0.0.1:1/db", timeout=2)
    with pytest.raises(StateError, match=r"postgresql://nobody@127\.0\.0\.1:1/db"):
        async with store.slot("s", 1):
            pytest.fail("ran without a slot")
    await store.aclose()


def test_a_tierflow_worker_killed_mid_query_frees_its_slots_at_once(
    influxd: ThrowawayInfluxd,
    db: str,
    postgres: ThrowawayPostgres,
    postgres_url: str,
    start: datetime,
    tmp_path: Path,
) -> None:
    """`kill -9` on a `tierflow run-once` whose query is in flight: PostgreSQL ends its session,
    and the slots (connection and scheduler) are free within a second, no lease to wait out."""
    write_points(influxd, db, telemetry(33, start))
    # The downsample queries last long enough to kill the worker under one; the rest do not.
    slow = ThreadedProxy(influxd.url, delay=lambda e: 8.0 if into_of(e) else 0.0)
    with slow as proxy:
        config = config_of(
            tmp_path,
            db,
            postgres_url,
            {"plant": proxy.url},
            {"a": "plant"},
            limits={"plant": 1},
            start=start,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
        now = rfc3339(start + 4 * EVERY)
        worker = subprocess.Popen(
            [str(TIERFLOW), "run-once", "-c", str(config), "--now", now],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 60
            while not downsamples(proxy.proxy.exchanges):  # its first query is in flight
                assert worker.poll() is None, "the worker ended early"
                assert time.monotonic() < deadline, "the worker sent no query"
                time.sleep(0.05)
            scopes = (connection_scope("plant"), "scheduler")
            assert [len(slot_locks(postgres, postgres_url, s)) for s in scopes] == [1, 1]
            worker.kill()
            worker.wait(10)
            killed = time.monotonic()
            while any(slot_locks(postgres, postgres_url, s) for s in scopes):
                assert time.monotonic() - killed < 1, "the slots outlived the worker"
                time.sleep(0.02)
        finally:
            worker.kill()
            worker.wait(10)
