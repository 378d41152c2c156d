"""Crash safety: `tierflow` killed with SIGKILL at any instant — mid-query, mid-ledger-write,
mid-catch-up — and started again must end with every window exact and the watermark right.

The process is the real console script. The expected warm tier is computed in plain Python from
the points the test wrote; the ledger and history are read straight from the SQLite file.
"""

from __future__ import annotations

import math
import random
import signal
import socket
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration._helpers import (
    Point,
    assert_tier,
    expected_tier,
    grid,
    ns,
    write_points,
)
from tests.integration._support import (
    Event,
    SlowProxy,
    Tierflow,
    add_tables,
    floor_to,
    free_port,
    http_get,
    integrity,
    ok_json,
    parse_metrics,
    processes,
    read_state,
    run_tierflow,
    sleep_past_leases,
    spawn,
)
from tests.integration.conftest import (
    WARM_RP,
    ConfigWriter,
    Databases,
    config_text,
    read_tier,
)
from tierflow.testing import ThrowawayInfluxd

MINUTE = timedelta(minutes=1)
WINDOWS = 240
LEASE = "2s"
JOB = "crash"
MEASUREMENTS = ("cpu", "disk")
HOSTS = (("h1", "a"), ("h2", "a"), ("h3", "b"), ("h4", "b"))
AGGREGATES = {"value": ["mean", "min", "max", "count", "last"], "errors": ["sum", "count"]}
KILLS_PER_SEED = 3


def points_for(seed: int, start: datetime, windows: int) -> list[Point]:
    """0–4 points per one-minute window and series over `windows` windows (and one on either
    side, which must not be aggregated), some lacking a field."""
    rng = random.Random(seed)
    step = MINUTE // timedelta(microseconds=1) * 1000
    points = []
    for measurement in MEASUREMENTS:
        for host, rack in HOSTS:
            for window in range(-1, windows + 1):
                low = ns(start) + window * step
                times = {rng.randrange(low, low + step) for _ in range(rng.randint(0, 4))}
                for moment in sorted(times):
                    fields: dict[str, float | int] = {}
                    if rng.random() < 0.9:
                        fields["value"] = rng.uniform(0, 100)
                    if rng.random() < 0.6 or not fields:
                        fields["errors"] = rng.randint(0, 9)
                    tags = (("host", host), ("rack", rack))
                    points.append(Point(measurement, tags, moment, fields))
    return points


def crash_job(start: datetime, **overrides: object) -> dict[str, object]:
    return {
        "measurements": list(MEASUREMENTS),
        "every": "1m",
        "start": start,
        "aggregates": AGGREGATES,
        "catchup_chunk": "3m",
        "parallel_windows": 2,
        **overrides,
    }


def with_scheduler(config: Path, lease: str = LEASE) -> Path:
    return add_tables(config, {"scheduler": {"lease": lease, "retry_delay": "1s"}})


def minutes_ago(count: int) -> datetime:
    """`count` whole minutes ago: that many windows are due now (one more per minute passing)."""
    return floor_to(datetime.now(UTC), MINUTE) - count * MINUTE


def for_a_minute(count: int) -> tuple[datetime, str]:
    """A start `count` whole minutes ago and an `offset` that keeps exactly those `count` windows
    due for the next 59 s: a test slower than the rest of the current minute must not see a
    new window come due halfway (another run would take it, with a first attempt)."""
    now = datetime.now(UTC)
    floor = floor_to(now, MINUTE)
    into = max(now - floor - timedelta(seconds=1), timedelta(0)) // timedelta(milliseconds=1)
    return floor - count * MINUTE, f"{into}ms"


def upstream(influxd: ThrowawayInfluxd) -> tuple[str, int]:
    host, port = influxd.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def assert_settled(
    influxd: ThrowawayInfluxd,
    db: str,
    state: Path,
    points: list[Point],
    start: datetime,
    *,
    at_least: int,
) -> Counter[str]:
    """Every window from `start` to the watermark succeeded in the end (each attempt before the
    last one abandoned), none is left running, the ledger has no gap and nothing past the
    watermark, the watermark is the last window's stop, the state file is sound, and the warm
    tier equals the aggregates of `points` over exactly those windows. Returns the attempts
    by status."""
    assert integrity(state) == ["ok"]
    watermark, ledger, attempts = read_state(state, JOB)
    assert watermark is not None
    windows = (watermark - start) // MINUTE
    assert watermark == start + windows * MINUTE
    assert windows >= at_least
    spans = grid(start, MINUTE, windows)
    assert [(row.start, row.stop) for row in ledger] == spans, "a gap or an extra ledger row"
    assert {row.status for row in ledger} == {"succeeded"}
    assert {row.lease_expires_at for row in ledger} == {None}
    by_window: dict[datetime, list[str]] = defaultdict(list)
    for attempt in attempts:
        assert attempt.attempt == len(by_window[attempt.start]) + 1, "attempt numbers skip"
        by_window[attempt.start].append(attempt.status)
        assert attempt.finished_at is not None, f"attempt left open: {attempt}"
        if attempt.status == "abandoned":
            assert attempt.error
    assert sorted(by_window) == [low for low, _ in spans]
    for low, statuses in by_window.items():
        # Every attempt before the last was cut short by a kill; the last one succeeded.
        assert statuses[-1] == "succeeded", (low, statuses)
        assert set(statuses[:-1]) <= {"abandoned"}, (low, statuses)
    for row in ledger:
        assert row.attempts == len(by_window[row.start])
    assert_tier(
        read_tier(influxd, db, WARM_RP), expected_tier(points, spans, aggregates=AGGREGATES)
    )
    return Counter(a.status for a in attempts)


# -- how long a catch-up takes ----------------------------------------------------------------

_catchup_seconds: list[float] = []


def catchup_seconds(
    influxd: ThrowawayInfluxd, databases: Databases, write_config: ConfigWriter, where: Path
) -> float:
    """How long an uninterrupted catch-up takes (first claim to last finish), measured once on
    a database of its own (and checked exact on the way)."""
    if not _catchup_seconds:
        db = databases.new()
        start = minutes_ago(WINDOWS)
        points = points_for(0, start, WINDOWS)
        write_points(influxd, db, points)
        config = write_config(db, {JOB: crash_job(start)}, directory=where)
        ok_json(run_tierflow("run-once", "--json", "-c", with_scheduler(config)))
        state = where / "state.db"
        assert_settled(influxd, db, state, points, start, at_least=WINDOWS)
        _, _, attempts = read_state(state, JOB)
        first = min(a.started_at for a in attempts)
        last = max(a.finished_at for a in attempts if a.finished_at is not None)
        _catchup_seconds.append((last - first).total_seconds())
        databases.drop(db)
    return _catchup_seconds[0]


def first_query(process: Tierflow, timeout: float) -> bool:
    """Wait for the process to send its first query; False if it ended without one."""
    try:
        process.wait_for("window_started", timeout)
    except AssertionError as missing:
        try:
            process.process.wait(timeout=5)  # ended, or ending, with nothing left to run
        except subprocess.TimeoutExpired:
            raise missing from None
        return False
    return True


# -- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "response_delay"),
    [(1, 0.0), (2, 0.0), (3, 0.03)],
    ids=["seed1", "seed2", "seed3-slow-server"],
)
def test_killed_at_random_instants_and_restarted_every_window_is_exact(
    influxd: ThrowawayInfluxd,
    databases: Databases,
    write_config: ConfigWriter,
    tmp_path: Path,
    seed: int,
    response_delay: float,
) -> None:
    catchup = catchup_seconds(influxd, databases, write_config, tmp_path / "calibration")
    rng = random.Random(seed)
    db = databases.new()
    start = minutes_ago(WINDOWS)
    points = points_for(seed, start, WINDOWS)
    write_points(influxd, db, points)
    where = tmp_path / "run"
    with (
        SlowProxy(upstream(influxd), response_delay=response_delay) as proxy,
        processes() as spawned,
    ):
        config = with_scheduler(
            write_config(db, {JOB: crash_job(start)}, url=proxy.url, directory=where)
        )
        kills = []
        for _ in range(KILLS_PER_SEED):
            command = rng.choice(["run", "run-once"])
            process = spawn(command, "-c", config, log_level="debug")
            spawned.append(process)
            # Windows a killed run still holds come back once their lease expires.
            if first_query(process, timeout=15):
                time.sleep(rng.uniform(0.0, 1.0) * catchup)
            process.process.send_signal(signal.SIGKILL)
            process.wait_expecting({-signal.SIGKILL, 0}, timeout=10)
            kills.append((command, sum(e["event"] == "window_succeeded" for e in process.events())))
        # Once the leases the killed runs held have expired, a clean run finishes the job.
        sleep_past_leases(where / "state.db", JOB)
        proxy.response_delay = 0.0
        report = ok_json(run_tierflow("run-once", "--json", "-c", config))
    assert report["failed"] == 0

    attempts = assert_settled(influxd, db, where / "state.db", points, start, at_least=WINDOWS)
    print(f"seed {seed}: catch-up {catchup:.2f} s; kills {kills}; attempts {dict(attempts)}")


@pytest.fixture
def proxy(influxd: ThrowawayInfluxd) -> Iterator[SlowProxy]:
    with SlowProxy(upstream(influxd)) as slow:
        yield slow


def test_killed_mid_query_the_windows_are_rerun_at_once_their_holder_being_dead(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter, proxy: SlowProxy
) -> None:
    # The server ran the query (its points are in the warm tier) but tierflow died before it
    # heard back: the ledger still says running, and the windows must run again.
    start = minutes_ago(6)
    points = points_for(7, start, 6)
    write_points(influxd, db, points)
    spec = crash_job(start, catchup_chunk="1h", parallel_windows=1)
    # A lease far longer than the test: the windows come back because their holder died.
    config = with_scheduler(write_config(db, {JOB: spec}, url=proxy.url), lease="10m")
    state = config.parent / "state.db"
    proxy.response_delay = math.inf
    with processes() as spawned:
        daemon = spawn("run", "-c", config, log_level="debug")
        spawned.append(daemon)
        begun = daemon.wait_for("window_started", timeout=15)
        time.sleep(0.3)  # the server has run the query; its answer is held
        daemon.process.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)

    watermark, ledger, attempts = read_state(state, JOB)
    assert watermark == start
    assert len(ledger) == begun["windows"] >= 6
    assert {(row.status, row.run_id) for row in ledger} == {("running", begun["run_id"])}
    assert {a.status for a in attempts} == {"running"}
    assert read_tier(influxd, db, WARM_RP), "the server should have run the query already"

    proxy.response_delay = 0.0
    (lease,) = {row.lease_expires_at for row in ledger}
    assert lease is not None
    late = ok_json(run_tierflow("run-once", "--json", "-c", config))
    assert late["failed"] == 0
    assert datetime.now(UTC) < lease, "the takeover must not have waited for the lease"

    attempts_by_status = assert_settled(influxd, db, state, points, start, at_least=6)
    _, _, attempts = read_state(state, JOB)
    abandoned = [a for a in attempts if a.status == "abandoned"]
    assert attempts_by_status["abandoned"] == len(ledger)
    assert {a.run_id for a in abandoned} == {begun["run_id"]}
    holder = f"pid {daemon.process.pid} on host {socket.gethostname()}"
    assert {a.error for a in abandoned} == {f"holder {holder} died before the run finished"}


@dataclass
class Takeover:
    """A daemon frozen (SIGSTOP) mid-query past its lease, a run-once that took its windows
    over, and what the daemon said once it was let go again (SIGCONT)."""

    db: str
    state: Path
    start: datetime
    points: list[Point]
    frozen: Event
    lost: Event
    takeover: dict[str, Any]
    daemon_events: list[Event]
    daemon_metrics: str
    daemon_exit: int


@pytest.fixture(scope="module")
def takeover(
    influxd: ThrowawayInfluxd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Takeover]:
    databases = Databases(influxd)
    db = databases.new()
    start, offset = for_a_minute(4)
    points = points_for(8, start, 4)
    write_points(influxd, db, points)
    where = tmp_path_factory.mktemp("takeover")
    port = free_port()
    with SlowProxy(upstream(influxd), request_delay=math.inf) as proxy, processes() as spawned:
        spec = crash_job(start, catchup_chunk="1h", parallel_windows=1, offset=offset)
        text = config_text(url=proxy.url, db=db, state=where / "state.db", jobs={JOB: spec})
        config = where / "tierflow.toml"
        config.write_text(text, encoding="utf-8")
        add_tables(with_scheduler(config), {"server": {"listen": f"127.0.0.1:{port}"}})
        daemon = spawn("run", "-c", config, log_level="debug")
        spawned.append(daemon)
        frozen = daemon.wait_for("window_started", timeout=15)
        daemon.process.send_signal(signal.SIGSTOP)
        try:
            sleep_past_leases(where / "state.db", JOB)
            # The frozen run's query now reaches the server too; its answer waits in the socket.
            proxy.request_delay = 0.0
            report = ok_json(run_tierflow("run-once", "--json", "-c", config))
        finally:
            daemon.process.send_signal(signal.SIGCONT)
        lost = daemon.wait_for("window_claim_lost", timeout=10)
        status, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        daemon.send(signal.SIGTERM)
        code = daemon.wait_expecting({0}, timeout=15)
    yield Takeover(
        db,
        where / "state.db",
        start,
        points,
        frozen,
        lost,
        report,
        daemon.events(),
        metrics,
        code,
    )
    databases.drop_all()


def test_a_frozen_run_loses_its_windows_once_its_lease_expires_and_cannot_overwrite_them(
    influxd: ThrowawayInfluxd, takeover: Takeover
) -> None:
    # A daemon stopped mid-query sends no heartbeat: once its lease expires another run takes
    # the windows over. When the frozen one resumes, its late outcome must not replace the
    # newer one (and its query, run late, writes the same points).
    assert takeover.daemon_exit == 0
    assert takeover.takeover["failed"] == 0
    assert {(r["status"], r["attempts"]) for r in takeover.takeover["runs"]} == {("succeeded", 2)}
    assert takeover.lost["run_id"] == takeover.frozen["run_id"]
    attempts_by_status = assert_settled(
        influxd, takeover.db, takeover.state, takeover.points, takeover.start, at_least=4
    )
    _, ledger, attempts = read_state(takeover.state, JOB)
    assert attempts_by_status["abandoned"] == takeover.frozen["windows"]
    assert {a.run_id for a in attempts if a.status == "abandoned"} == {takeover.frozen["run_id"]}
    assert takeover.frozen["run_id"] not in {row.run_id for row in ledger}


def test_a_run_that_lost_its_windows_is_not_reported_as_a_success(takeover: Takeover) -> None:
    succeeded = [e for e in takeover.daemon_events if e["event"] == "window_succeeded"]
    assert takeover.frozen["run_id"] not in {e["run_id"] for e in succeeded}
    _, samples = parse_metrics(takeover.daemon_metrics)
    runs = {
        dict(labels)["status"]: value
        for (name, labels), value in samples.items()
        if name == "tierflow_window_runs_total"
    }
    assert runs.get("succeeded", 0) == 0, runs
