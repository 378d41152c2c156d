"""Several `tierflow run` workers over one PostgreSQL state and one real influxd.

Real processes (the console script), a real influxd behind a recording proxy (`tests.proxy`,
which forwards everything unchanged and only adds a delay to `/query`, so that queries take a
fixed time and a catch-up lasts long enough to act on it), a real PostgreSQL whose tables the
test reads with its own psycopg connection. The warm tier is compared with influxd's own
`SELECT … INTO` over the same windows; the ledger and history with what the workers were
observed holding and logging.

Settings are the defaults but for: the lease (4 s, not 60 s: a worker paused past its lease must
be paused longer than it, and the whole file must run in about a minute and a half),
`parallel_windows` (more than one batch per worker in flight is what limits must hold against),
and the limit each test is about (or, in the kill/pause test, one that does not decide which
worker runs).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration._helpers import Point, ns, write_points
from tests.integration._support import Tierflow, floor_to, processes, rfc3339, spawn
from tests.integration._workers import (
    StateTables,
    claim_gate,
    covering,
    covers,
    gaps_and_overlaps,
    kill_holding,
    pause_holding,
    poll,
    state_tables,
)
from tests.integration.conftest import WARM_RP, TableBody, field_types, read_tier, write_toml
from tests.proxy import Exchange, ThreadedProxy
from tierflow._state._postgres import PostgresStateStore
from tierflow.testing import ThrowawayInfluxd

JOB = "down"
MINUTE = timedelta(minutes=1)
# Two days of one-minute windows to catch up: 48 queries at the default 1h catchup_chunk.
WINDOWS = 2 * 24 * 60
# The time influxd's every answer to /query takes at the proxy: it makes the catch-up long enough
# to pause and kill workers in the middle of it, whatever the speed of this machine.
QUERY_DELAY = 0.4
# Not the default 60 s: the paused worker must stay paused past its lease (and another worker
# must then take its windows over) within this file's time budget. Long enough that a live
# worker's heartbeat (every lease/3) never misses it on a loaded 2-core machine.
LEASE = "4s"
AGGREGATES = {"temp": ["mean", "min", "max", "count"], "errors": ["sum", "max"]}
HOSTS = (("h1", "berlin"), ("h2", "berlin"), ("h3", "paris"))
ORACLE_RP = "oracle"


# -- data and config ---------------------------------------------------------------------------


def seeded_points(seed: int, start: datetime, windows: int) -> list[Point]:
    """0–3 points per one-minute window and series, from one window before `start` to `windows`
    past it; floats (some whole) and integers, a field missing now and then."""
    rng = random.Random(seed)
    step = MINUTE // timedelta(microseconds=1) * 1000
    points = []
    for host, site in HOSTS:
        for window in range(-1, windows):
            low = ns(start) + window * step
            for moment in sorted(
                {rng.randrange(low, low + step) for _ in range(rng.randint(0, 3))}
            ):
                fields: dict[str, float | int] = {}
                if rng.random() < 0.9:
                    fields["temp"] = rng.choice([rng.uniform(-20, 45), float(rng.randint(-5, 5))])
                if rng.random() < 0.6 or not fields:
                    fields["errors"] = rng.randint(0, 99)
                points.append(Point("sensor", (("host", host), ("site", site)), moment, fields))
    return points


def worker_config(
    directory: Path,
    *,
    influx: str,
    db: str,
    state: str,
    start: datetime,
    job: dict[str, object] | None = None,
    connection: dict[str, object] | None = None,
    scheduler: dict[str, object] | None = None,
) -> Path:
    """The one config every worker runs: a downsample of `db`'s `sensor` from autogen to warm,
    its state in PostgreSQL at `state`."""
    spec: dict[str, object] = {
        "kind": "downsample",
        "source": "hot",
        "dest": "warm",
        "measurements": ["sensor"],
        "every": "1m",
        "start": start,
        "aggregates": AGGREGATES,
    }
    tables: dict[str, TableBody] = {
        "state": {"url": state},
        "scheduler": {"lease": LEASE, **(scheduler or {})},
        "connections.plant": {
            "kind": "influxdb1",
            "url": influx,
            **(connection or {}),
        },
        "tiers.hot": {"connection": "plant", "bucket": f"{db}/autogen"},
        "tiers.warm": {"connection": "plant", "bucket": f"{db}/{WARM_RP}"},
        f"jobs.{JOB}": spec | (job or {}),
    }
    return write_toml(directory, tables)


@pytest.fixture
def proxy(influxd: ThrowawayInfluxd) -> Iterator[ThreadedProxy]:
    def delay(exchange: Exchange) -> float:
        return QUERY_DELAY if exchange.path == "/query" else 0.0

    with ThreadedProxy(influxd.url, delay=delay) as running:
        yield running


def begin(windows: int) -> datetime:
    """A job start `windows` whole minutes ago (more come due as the test runs)."""
    return floor_to(datetime.now(UTC), MINUTE) - windows * MINUTE


def caught_up(tables: StateTables) -> datetime | None:
    """The watermark once it is at most one window behind the wall clock, else None."""
    mark = tables.watermark(JOB)
    frontier = floor_to(datetime.now(UTC), MINUTE) - MINUTE
    return mark if mark is not None and mark >= frontier else None


def migrate(url: str) -> None:
    """Make tierflow's tables (as the first worker would), for the test to lock one."""

    async def open_once() -> None:
        async with PostgresStateStore(url):
            pass

    asyncio.run(open_once())


def start_workers(workers: list[Tierflow], tables: StateTables, config: Path) -> None:
    """Three workers on `config`; returns once they have made the state tables."""
    workers += [spawn("run", "-c", config) for _ in range(3)]
    poll(tables.migrated, 60, "the state tables were made", explain=workers[0].describe)


def stop_all(workers: list[Tierflow]) -> None:
    """SIGTERM every live worker, then wait for each to exit cleanly."""
    live = [w for w in workers if w.process.poll() is None]
    for worker in live:
        worker.send(signal.SIGTERM)
    for worker in live:
        worker.wait_expecting({0}, timeout=60)


def events(worker: Tierflow, name: str) -> list[dict[str, Any]]:
    return [e for e in worker.events() if e.get("event") == name]


def succeeded_ranges(worker: Tierflow) -> list[tuple[datetime, datetime, str]]:
    """(window start, window stop, run id) of each batch the worker logged as succeeded."""
    return [
        (_time(e["window_start"]), _time(e["window_stop"]), str(e["run_id"]))
        for e in events(worker, "window_succeeded")
    ]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# -- the oracle --------------------------------------------------------------------------------


def oracle_into(influxd: ThrowawayInfluxd, db: str, start: datetime, stop: datetime) -> None:
    """influxd's own aggregates of the same windows, one query, into `db`.`oracle`.`sensor`."""
    influxd.execute(f'CREATE RETENTION POLICY "{ORACLE_RP}" ON "{db}" DURATION 400d REPLICATION 1')
    selectors = ", ".join(
        f'{fn}("{field}") AS "{field}_{fn}"' for field, fns in AGGREGATES.items() for fn in fns
    )
    (result,) = influxd.query(
        f'SELECT {selectors} INTO "{db}"."{ORACLE_RP}"."sensor" FROM "{db}"."autogen"."sensor"'
        f" WHERE time >= '{rfc3339(start)}' AND time < '{rfc3339(stop)}' GROUP BY time(1m), *",
        db=db,
    )
    assert "error" not in result, result


def assert_exact(influxd: ThrowawayInfluxd, db: str, start: datetime, stop: datetime) -> int:
    """The warm tier equals influxd's own SELECT … INTO over [start, stop), point for point and
    field type for field type; returns the number of points."""
    oracle_into(influxd, db, start, stop)
    warm, oracle = read_tier(influxd, db, WARM_RP), read_tier(influxd, db, ORACLE_RP)
    assert len(oracle) > WINDOWS, "the oracle has points in most windows"
    assert warm.keys() == oracle.keys(), (
        f"{len(warm.keys() - oracle.keys())} points only in warm, "
        f"{len(oracle.keys() - warm.keys())} only in the oracle"
    )
    wrong = [key for key in warm if warm[key] != oracle[key]]
    assert not wrong, [(key, warm[key], oracle[key]) for key in wrong[:5]]
    types = field_types(influxd, db, WARM_RP, "sensor")
    assert types == field_types(influxd, db, ORACLE_RP, "sensor")
    assert set(types.values()) == {"float", "integer"}  # both kinds were compared
    return len(warm)


# -- the tests ---------------------------------------------------------------------------------


def test_three_workers_one_killed_one_paused_past_its_lease_catch_up_exactly_once(
    influxd: ThrowawayInfluxd,
    db: str,
    postgres_url: str,
    proxy: ThreadedProxy,
    tmp_path: Path,
) -> None:
    """Three workers catch up thousands of windows, two batches each at a time. One is killed
    (SIGKILL) while it holds windows; another is paused (SIGSTOP) while it holds windows, past
    its lease, until the last worker has taken those windows over and finished them, then
    resumed: its late outcome is refused (`window_claim_lost`) and the ledger and history keep
    the taker's. In the end every window is exact, each window's success is recorded once, and
    every worker ran windows."""
    start = begin(WINDOWS)
    write_points(influxd, db, seeded_points(13, start, WINDOWS + 30))
    config = worker_config(
        tmp_path,
        influx=proxy.url,
        db=db,
        state=postgres_url,
        start=start,
        job={"parallel_windows": 2},
        # Not the default 4: with limits held across workers, 4 would let two workers' batches
        # take every slot (3 × 2 want 6), and which worker runs would depend on who asks first
        # for a freed slot. This test is about claims and fencing; the next one about limits.
        connection={"max_concurrency": 6},
    )

    migrate(postgres_url)
    with processes() as workers, state_tables(postgres_url) as tables:
        # Workers start seconds apart on a loaded machine: claims wait until all three are up,
        # so that the first does not run the whole catch-up alone.
        with claim_gate(postgres_url):
            start_workers(workers, tables, config)
            poll(lambda: all(events(w, "daemon_started") for w in workers), 60, "workers up")
            poll(lambda: tables.ports_waiting_for("runs"), 30, "a claim waits at the gate")
            time.sleep(0.5)  # the others' first claims reach the gate too
        killed, paused, taker = workers

        def progress() -> str:
            return f"{tables.succeeded(JOB)} windows succeeded; {killed.describe()[-2000:]}"

        # Mid catch-up, once each worker has run windows (so all three share the work).
        poll(
            lambda: all(events(w, "window_succeeded") for w in workers),
            60,
            "each worker ran windows",
            explain=progress,
        )
        died_holding = kill_holding(killed, tables, JOB, timeout=30)
        held = pause_holding(paused, tables, JOB, timeout=30)
        assert tables.succeeded(JOB) < WINDOWS, "the workers were stopped mid catch-up"
        held_runs = {h.run_id for h in held}
        stale_runs = held_runs | {h.run_id for h in died_holding}

        # The last worker takes the paused one's windows over once its lease expires, and
        # finishes them (and the killed one's, whose holder is gone).
        def taken_over() -> bool:
            won = tables.attempts(JOB, status="succeeded")
            return all(
                any(covers(a, h) and a.run_id not in stale_runs for a in won)
                for h in held + died_holding
            )

        poll(taken_over, 90, "the held windows were taken over and succeeded", every=0.2)
        paused.send(signal.SIGCONT)
        lost = paused.wait_for("window_claim_lost", timeout=60)
        mark = poll(lambda: caught_up(tables), 120, "the workers caught up", every=0.2)
        assert mark >= start + WINDOWS * MINUTE
        stop_all(workers)

        watermark = tables.watermark(JOB)
        ledger = tables.ledger(JOB)
        attempts = tables.attempts(JOB)
        won = tables.attempts(JOB, status="succeeded")

    assert watermark is not None

    # Fencing: the paused worker's late outcome was refused, and the taker's stands.
    assert lost["run_id"] in held_runs, lost
    taker_ranges = succeeded_ranges(taker)
    live_ranges = taker_ranges + succeeded_ranges(paused)
    for window in held + died_holding:
        (success,) = [a for a in won if covers(a, window)]
        # The paused worker's windows by the taker; the killed one's by either live worker.
        by = taker_ranges if window in held else live_ranges
        assert success.run_id in covering([window], by), (window, success)
        mine = [a.status for a in attempts if a.run_id == window.run_id and covers(a, window)]
        assert mine == ["abandoned"], (window, mine)
        (row,) = [row for row in ledger if covers(row, window)]
        assert row.status == "succeeded", row
        assert row.run_id in {None, success.run_id}, (row, success)  # None: folded in a range
    assert not covering(held, succeeded_ranges(paused)), "a refused outcome was logged as a success"

    # Every window succeeded once: the ledger is whole, and the succeeded attempts' ranges tile
    # the job's range with no gap and no overlap (whether the history has a row per window or
    # one per batch).
    assert watermark >= start + WINDOWS * MINUTE
    assert gaps_and_overlaps(ledger, start, watermark) == []
    assert {row.status for row in ledger} == {"succeeded"}
    assert gaps_and_overlaps(won, start, watermark) == []
    assert {a.status for a in attempts} <= {"succeeded", "abandoned"}, attempts

    # The work spread: each worker ran windows (the test waited for it before the kill).
    assert all(events(worker, "window_succeeded") for worker in workers)

    # Every window exact: the warm tier equals influxd's own SELECT … INTO of the same range.
    assert_exact(influxd, db, start, watermark)
    assert {e.status for e in proxy.proxy.exchanges} <= {200, 204}


def test_a_connection_limit_holds_across_workers(
    influxd: ThrowawayInfluxd,
    db: str,
    postgres_url: str,
    proxy: ThreadedProxy,
    tmp_path: Path,
) -> None:
    """A connection's `max_concurrency = 2` holds across three workers each allowed four
    batches at once: influxd never has more than two requests of theirs in flight (and has
    two). Each worker alone would send up to two, so three would send six."""
    windows = 12 * 60  # 12 queries, each taking QUERY_DELAY at least
    start = begin(windows)
    write_points(influxd, db, seeded_points(29, start, windows + 30))
    config = worker_config(
        tmp_path,
        influx=proxy.url,
        db=db,
        state=postgres_url,
        start=start,
        job={"parallel_windows": 4},
        connection={"max_concurrency": 2},
    )
    with processes() as workers, state_tables(postgres_url) as tables:
        start_workers(workers, tables, config)
        poll(lambda: caught_up(tables), 120, "the workers caught up", every=0.2)
        stop_all(workers)
        watermark = tables.watermark(JOB)
        ran = [sum(int(e["windows"]) for e in events(w, "window_succeeded")) for w in workers]

    assert watermark is not None
    assert watermark >= start + windows * MINUTE
    assert sum(ran) == (watermark - start) // MINUTE, ran  # each window ran once
    queries = [e for e in proxy.proxy.exchanges if e.path == "/query"]
    assert len(queries) >= windows // 60
    assert proxy.proxy.max_in_flight == 2, (
        f"{proxy.proxy.max_in_flight} requests in flight at once at influxd; windows run by "
        f"each worker: {ran}"
    )
