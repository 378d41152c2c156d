"""Riding out faults against a real influxd: injected 503/429/resets/truncated answers, a frozen
and a killed server, dead and black-holed endpoints, permanent failures, parking and 401s.

The recording proxy (`tests.proxy`) stands between tierflow and the server and injects the
faults. Every run's result is compared with aggregates computed here in plain Python from the
points the test wrote, and the tiers are read back with `ThrowawayInfluxd`'s own client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.events import Events
from tests.integration._helpers import (
    NS,
    PYTHON_AGGREGATES,
    Point,
    assert_tier,
    ns,
    open_runner,
    run_due,
    write_points,
)
from tests.integration._support import (
    free_port,
    ok_json,
    read_state,
    rfc3339,
    run_tierflow,
)
from tests.integration.conftest import (
    WARM_RP,
    Databases,
    TierData,
    read_tier,
    sqlite_state,
    write_toml,
)
from tests.proxy import Exchange, Fault, FaultRule, Proxy, ThreadedProxy
from tierflow import BatchRun, JobStatus, Runner, RunStatus, SqliteStateStore, load_config
from tierflow._errors import AuthError
from tierflow.testing import ThrowawayInfluxd

MINUTE = timedelta(minutes=1)
AGGREGATES: dict[str, list[str]] = {"temp": ["mean", "max", "count"], "errors": ["sum"]}
SERIES = (("h1", "berlin"), ("h2", "paris"))
CONNECTION = "plant"
JOB = "down"


# -- data and the independent computation ---------------------------------------------------


def light_points(
    seed: int, start: datetime, windows: int, every: timedelta = MINUTE
) -> list[Point]:
    """0-3 points per series and window (some windows empty), one window of points on either
    side of the range, a float and an integer field."""
    rng = random.Random(seed)
    step, origin = int(every.total_seconds()) * NS, ns(start)
    points = []
    for host, site in SERIES:
        for window in range(-1, windows + 1):
            low = origin + window * step
            for moment in sorted(
                {rng.randrange(low, low + step) for _ in range(rng.randint(0, 3))}
            ):
                fields: dict[str, float | int] = {"temp": round(rng.uniform(-10, 40), 3)}
                if rng.random() < 0.7:
                    fields["errors"] = rng.randint(0, 9)
                points.append(Point("sensor", (("host", host), ("site", site)), moment, fields))
    return points


def expected(
    points: Iterable[Point], start: datetime, windows: int, every: timedelta = MINUTE
) -> TierData:
    """One point per (window, series) with values, at the window start, `<field>_<function>`
    for each field with values in it. Windows are `[start + i·every, start + (i+1)·every)`."""
    step, origin = int(every.total_seconds()) * NS, ns(start)
    grouped: dict[tuple[str, int, frozenset[tuple[str, str]]], dict[str, list[tuple[int, Any]]]]
    grouped = defaultdict(lambda: defaultdict(list))
    for point in points:
        index = (point.time - origin) // step
        if 0 <= index < windows:
            key = (point.measurement, origin + index * step, frozenset(point.tags))
            for name, value in point.fields.items():
                grouped[key][name].append((point.time, value))
    return {
        key: {
            f"{name}_{function}": PYTHON_AGGREGATES[function](values[name])
            for name, functions in AGGREGATES.items()
            if values.get(name)
            for function in functions
        }
        for key, values in grouped.items()
    }


def window_starts(start: datetime, windows: int, every: timedelta = MINUTE) -> list[datetime]:
    return [start + i * every for i in range(windows)]


# -- configs ---------------------------------------------------------------------------------


def write_config(
    directory: Path,
    *,
    url: str,
    db: str,
    start: datetime,
    connection: Mapping[str, object] | None = None,
    scheduler: Mapping[str, object] | None = None,
    job: Mapping[str, object] | None = None,
) -> Path:
    """A config with one connection (only `kind` and `url` unless `connection` adds keys: the
    defaults are what is under test), one 1-minute downsample job run window by window, and
    the state in `directory/state.db`."""
    tables: dict[str, Mapping[str, object]] = {
        "state": sqlite_state(directory),
        f"connections.{CONNECTION}": {"kind": "influxdb1", "url": url, **(connection or {})},
        "tiers.hot": {"connection": CONNECTION, "bucket": f"{db}/autogen"},
        "tiers.warm": {"connection": CONNECTION, "bucket": f"{db}/{WARM_RP}"},
        f"jobs.{JOB}": {
            "kind": "downsample",
            "source": "hot",
            "dest": "warm",
            "measurements": ["sensor"],
            "every": "1m",
            "catchup_chunk": "1m",
            "start": start,
            "aggregates": AGGREGATES,
            **(job or {}),
        },
    }
    if scheduler:
        tables["scheduler"] = scheduler
    return write_toml(directory, tables)


# -- what happened -----------------------------------------------------------------------------


def retries_metric(runner: Runner) -> float:
    value = runner.metrics.registry.get_sample_value(
        "tierflow_query_retries_total", {"connection": CONNECTION}
    )
    return value or 0.0


async def timed_run(config: Path, now: datetime) -> tuple[list[BatchRun], float, float]:
    """`run_due(now)` on a runner of its own: the runs, the seconds they took, and the retries
    the connection counted."""
    async with open_runner(config) as runner:
        began = time.monotonic()
        runs = await runner.run_due(now)
        took = time.monotonic() - began
        return runs, took, retries_metric(runner)


def is_downsample(exchange: Exchange) -> bool:
    return exchange.path == "/query" and "INTO" in (exchange.q or "")


def for_window(start: datetime) -> Callable[[Exchange], bool]:
    bound = f"time >= '{rfc3339(start)}'"
    return lambda exchange: is_downsample(exchange) and bound in (exchange.q or "")


def by_number(
    plan: Mapping[int, Fault], when: Callable[[Exchange], bool] = is_downsample
) -> FaultRule:
    """Inject `plan[n]` into the n-th request (1-based) that `when` accepts."""
    lock = threading.Lock()
    seen = 0

    def rule(exchange: Exchange) -> Fault | None:
        nonlocal seen
        if not when(exchange):
            return None
        with lock:
            seen += 1
            return plan.get(seen)

    return rule


def on_number(number: int, action: Callable[[], None]) -> FaultRule:
    """Run `action` when the `number`-th downsample request arrives (then forward it)."""
    lock = threading.Lock()
    seen = 0

    def rule(exchange: Exchange) -> Fault | None:
        nonlocal seen
        if is_downsample(exchange):
            with lock:
                seen += 1
                if seen == number:
                    action()
        return None

    return rule


def succeeded_windows(runs: Iterable[BatchRun]) -> list[datetime]:
    return [w.window.start for run in runs for w in run.windows if w.status is RunStatus.SUCCEEDED]


def assert_every_window_succeeded_once(runs: list[BatchRun], starts: list[datetime]) -> None:
    bad = [
        (w.window.start, w.status, w.error)
        for r in runs
        for w in r.windows
        if w.status != "succeeded"
    ]
    assert not bad, f"{len(bad)} window(s) not succeeded, e.g. {bad[:3]}"
    assert succeeded_windows(runs) == starts
    assert {w.attempts for r in runs for w in r.windows} == {1}


def assert_ledger_one_success_each(state: Path, starts: list[datetime]) -> Counter[int]:
    """Every window succeeded, with exactly one succeeded attempt; returns attempts per window."""
    watermark, ledger, attempts = read_state(state, JOB)
    assert [row.start for row in ledger] == starts
    assert {row.status for row in ledger} == {"succeeded"}
    successes = Counter(a.start for a in attempts if a.status == "succeeded")
    assert set(successes) == set(starts)
    assert set(successes.values()) == {1}, "a window succeeded twice"
    assert watermark == starts[-1] + MINUTE
    return Counter(row.attempts for row in ledger)


# -- servers ---------------------------------------------------------------------------------


@pytest.fixture
def own_influxd(tmp_path: Path) -> Iterator[ThrowawayInfluxd]:
    """A server of this test's own (it will be frozen or killed), always thawed and stopped."""
    server = ThrowawayInfluxd(data_dir=tmp_path / "influxd")
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


class BlackHole:
    """A TCP endpoint that accepts connections and never reads or answers a byte."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.accepted: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                connection, _ = self._listener.accept()
                self.accepted.append(connection)  # held open, never read

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        for connection in self.accepted:
            connection.close()
        self._listener.close()


# -- scattered transient faults ----------------------------------------------------------------


async def test_scattered_transient_faults_are_retried_and_every_window_is_exact(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime, events: Events
) -> None:
    windows = 30
    points = light_points(1, start, windows)
    write_points(influxd, db, points)
    # By number of downsample request (retries are requests too): one fault per window hit.
    plan = {
        3: Fault.unavailable(retry_after=1),
        8: Fault.unavailable(retry_after=None),
        13: Fault.too_many_requests(retry_after=1),
        18: Fault(reset=True),
        23: Fault(truncate=10),
        28: Fault.too_many_requests(retry_after=None),
        33: Fault(status=502, body=b"bad gateway"),
        35: Fault(status=504, body=b"gateway timeout"),
    }
    async with Proxy(influxd.url, fault=by_number(plan)) as proxy:
        config = write_config(tmp_path, url=proxy.url, db=db, start=start)
        runs, took, retries = await timed_run(config, start + windows * MINUTE)
    queries = [e for e in proxy.exchanges if is_downsample(e)]
    faulted = [e for e in queries if e.fault is not None]
    print(f"\n30 windows, {len(faulted)} faults injected, {retries:g} retries, {took:.2f} s")

    starts = window_starts(start, windows)
    assert_every_window_succeeded_once(runs, starts)
    assert_tier(read_tier(influxd, db, WARM_RP), expected(points, start, windows))
    assert len(faulted) == len(plan)
    assert len(queries) == windows + len(plan)
    assert retries == len(plan)
    logged = events.named("query_retry")
    assert len(logged) == len(plan)
    assert {e["connection"] for e in logged} == {CONNECTION}
    # Each faulted request was followed by the same query again, and by it alone.
    for exchange in faulted:
        following = queries[queries.index(exchange) + 1]
        assert following.q == exchange.q
        assert following.fault is None
    # Retry-After: 1 was honoured; without it the first backoff is at most `initial` (500 ms).
    for exchange in faulted:
        following = queries[queries.index(exchange) + 1]
        assert exchange.ended is not None
        gap = following.started - exchange.ended
        if exchange.fault is not None and "Retry-After" in exchange.fault.headers:
            assert gap >= 1.0, f"request {exchange.id}: retried after {gap:.3f} s"
        else:
            assert gap < 0.5 + 0.25, f"request {exchange.id}: retried after {gap:.3f} s"
    assert events.named("circuit_open") == []
    _, ledger, _ = read_state(tmp_path / "state.db", JOB)
    assert {row.attempts for row in ledger} == {1}


# -- a blip longer than the circuit's threshold, default settings ------------------------------


def test_a_five_failure_blip_is_ridden_out_by_run_once_with_default_settings(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime
) -> None:
    """503, 503, 503 (the circuit opens), a reset, a 429 with Retry-After: the window that meets
    them waits for the probe, which finds the server back, and every window is exact, exit 0."""
    windows, first = 12, 5
    points = light_points(8, start, windows)
    write_points(influxd, db, points)
    plan = {
        first: Fault.unavailable(retry_after=None),
        first + 1: Fault.unavailable(retry_after=None),
        first + 2: Fault.unavailable(retry_after=None),
        first + 3: Fault(reset=True),
        first + 4: Fault.too_many_requests(retry_after=1),
    }
    now = rfc3339(start + windows * MINUTE)
    with ThreadedProxy(influxd.url, fault=by_number(plan)) as threaded:
        config = write_config(tmp_path, url=threaded.url, db=db, start=start)
        began = time.monotonic()
        result = run_tierflow("run-once", "-c", config, "--now", now, "--json", timeout=120)
        took = time.monotonic() - began
        exchanges = threaded.proxy.exchanges
    print(f"\nfive-failure blip, default settings: run-once took {took:.1f} s")

    body = ok_json(result)  # exit 0
    assert (body["succeeded"], body["failed"]) == (windows, 0)
    starts = window_starts(start, windows)
    attempts = assert_ledger_one_success_each(tmp_path / "state.db", starts)
    assert attempts == Counter({1: windows})  # the blip stayed inside one window's call
    assert_tier(read_tier(influxd, db, WARM_RP), expected(points, start, windows))
    queries = [e for e in exchanges if is_downsample(e)]
    faulted = [e for e in queries if e.fault is not None]
    assert len(faulted) == len(plan)
    assert len({e.q for e in faulted}) == 1  # one window met all five, and retried them
    assert len(queries) == windows + len(plan)
    # One probe, after the cool-down (30 s), between the third failure and the fourth.
    (probe,) = [e for e in exchanges if e.path == "/ping"]
    assert faulted[2].started < probe.started < faulted[3].started
    assert probe.started - faulted[2].started >= 30 - 1
    assert probe.status == 204
    assert took < 60


# -- a frozen server ---------------------------------------------------------------------------


async def test_a_server_frozen_longer_than_the_timeout_is_ridden_out(
    own_influxd: ThrowawayInfluxd, tmp_path: Path, start: datetime, events: Events
) -> None:
    server = own_influxd
    assert server.process is not None
    pid = server.process.pid
    db = Databases(server).new()
    windows, frozen_for = 30, 3.0
    points = light_points(2, start, windows)
    write_points(server, db, points)
    thawed: list[float] = []

    def thaw() -> None:
        os.kill(pid, signal.SIGCONT)
        thawed.append(time.monotonic())

    timer = threading.Timer(frozen_for, thaw)

    def freeze() -> None:
        os.kill(pid, signal.SIGSTOP)
        timer.start()

    try:
        async with Proxy(server.url, fault=on_number(10, freeze)) as proxy:
            config = write_config(
                tmp_path,
                url=proxy.url,
                db=db,
                start=start,
                connection={
                    "timeout": "1s",
                    "retry": {"attempts": 20, "max": "2s", "deadline": "30s"},
                    "circuit": {"failures": 100},
                },
            )
            runs, took, retries = await timed_run(config, start + windows * MINUTE)
    finally:
        timer.cancel()
        os.kill(pid, signal.SIGCONT)
    print(f"\nfrozen {frozen_for:g} s: {retries:g} retries, run took {took:.2f} s")

    assert thawed, "the server was never thawed by the timer"
    assert_every_window_succeeded_once(runs, window_starts(start, windows))
    assert_tier(read_tier(server, db, WARM_RP), expected(points, start, windows))
    assert retries >= 2  # at least two 1 s timeouts fit in a 3 s freeze
    assert all("timed out" in e["error"] for e in events.named("query_retry"))
    assert took >= frozen_for


# -- a killed and restarted server -------------------------------------------------------------


async def test_a_server_killed_mid_run_and_restarted_on_its_data_loses_and_doubles_nothing(
    tmp_path: Path, start: datetime
) -> None:
    """Default settings: the proxy answers 502 while the server is down and the circuit opens
    after three of them; the server is back (on its data) within the cool-down, so the window
    that met the outage waits for the probe and the first run-once completes every window.
    A second run-once (a fresh runner) finds nothing left to do."""
    data_dir = tmp_path / "influxd"
    first = ThrowawayInfluxd(data_dir=data_dir).start()
    servers = [first]
    restarted = threading.Event()
    restarters: list[threading.Thread] = []
    windows, killed_at = 30, 10
    try:
        db = Databases(first).new()
        points = light_points(3, start, windows)
        write_points(first, db, points)

        async with Proxy(first.url) as proxy:

            def restart() -> None:
                time.sleep(2.0)  # longer than three quick failures take: the circuit opens
                second = ThrowawayInfluxd(data_dir=data_dir).start()
                servers.append(second)
                proxy.upstream = second.url
                restarted.set()

            def crash() -> None:
                first.kill()
                restarters.append(threading.Thread(target=restart, daemon=True))
                restarters[0].start()

            proxy.fault = on_number(killed_at, crash)
            config = write_config(tmp_path / "run", url=proxy.url, db=db, start=start)
            now = start + windows * MINUTE
            first_runs = await run_due(config, now)
            assert await asyncio.to_thread(restarted.wait, 30)
            async with open_runner(config) as runner:
                second_runs = await runner.run_due(now)
        server = servers[-1]

        starts = window_starts(start, windows)
        print(
            f"\nkilled at query {killed_at}: first run-once "
            f"{len(succeeded_windows(first_runs))} succeeded; second ran {len(second_runs)}"
        )
        assert_every_window_succeeded_once(first_runs, starts)
        assert second_runs == []
        attempts = assert_ledger_one_success_each(tmp_path / "run" / "state.db", starts)
        assert attempts == Counter({1: windows})
        assert_tier(read_tier(server, db, WARM_RP), expected(points, start, windows))
    finally:
        for thread in restarters:
            thread.join(timeout=60)  # so that no server it starts outlives the test
        for server in servers:
            server.stop()


# -- dead and black-holed endpoints, default settings ------------------------------------------

DUE = 500


def give_up_then_recover(
    influxd: ThrowawayInfluxd, db: str, directory: Path, start: datetime, dead_url: str
) -> float:
    """run-once against `dead_url` with default retry/circuit settings and DUE windows due:
    exit 1, every window recorded failed. Then, pointed at the live server, the next run-once
    completes every window exactly. Returns how long the first run-once took."""
    points = light_points(4, start, DUE)
    write_points(influxd, db, points)
    now = rfc3339(start + DUE * MINUTE)
    config = write_config(directory, url=dead_url, db=db, start=start)

    began = time.monotonic()
    result = run_tierflow("run-once", "-c", config, "--now", now, "--json", timeout=180)
    took = time.monotonic() - began
    assert result.returncode == 1, result.stderr[-2000:]
    body = json.loads(result.stdout)
    assert (body["succeeded"], body["failed"]) == (0, DUE)

    (status,) = ok_json(run_tierflow("status", "-c", config, "--now", now, "--json"))["jobs"]
    assert status["failed_windows"] == DUE
    assert status["pending_windows"] == DUE
    assert status["parked_windows"] == 0
    assert status["watermark"] == rfc3339(start)
    watermark, ledger, attempts = read_state(directory / "state.db", JOB)
    assert watermark == start
    assert [row.start for row in ledger] == window_starts(start, DUE)
    assert {row.status for row in ledger} == {"failed"}
    assert len(attempts) == DUE
    assert {a.status for a in attempts} == {"failed"}
    errors = Counter("circuit open" in (a.error or "") for a in attempts)
    assert errors[True] >= DUE - 1, errors  # all but the window that opened it fail fast

    write_config(directory, url=influxd.url, db=db, start=start)
    recovered = ok_json(run_tierflow("run-once", "-c", config, "--now", now, "--json"))
    assert (recovered["succeeded"], recovered["failed"]) == (DUE, 0)
    assert {run["attempts"] for run in recovered["runs"]} == {2}
    starts = window_starts(start, DUE)
    assert_ledger_one_success_each(directory / "state.db", starts)
    assert_tier(read_tier(influxd, db, WARM_RP), expected(points, start, DUE))
    return took


def test_run_once_against_a_dead_endpoint_gives_up_within_a_minute_and_recovers(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    took = give_up_then_recover(influxd, db, tmp_path, start, dead)
    print(f"\ndead endpoint, {DUE} due windows, default settings: run-once gave up in {took:.1f} s")
    assert took < 60
    # The CLI's own account of the failed attempts, and of the ones that then succeeded.
    config = tmp_path / "tierflow.toml"
    history = ok_json(run_tierflow("history", JOB, "-c", config, "--limit", "2000", "--json"))
    by_attempt = Counter((a["attempt"], a["status"]) for a in history["attempts"])
    assert by_attempt == Counter({(1, "failed"): DUE, (2, "succeeded"): DUE})
    first = [a for a in history["attempts"] if a["attempt"] == 1]
    assert sum("circuit open" in a["error"] for a in first) >= DUE - 1
    assert any("unreachable" in a["error"] for a in first)


def test_run_once_against_a_black_hole_gives_up_within_a_minute_and_recovers(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime
) -> None:
    hole = BlackHole()
    try:
        took = give_up_then_recover(influxd, db, tmp_path, start, hole.url)
        connections = len(hole.accepted)
    finally:
        hole.close()
    print(
        f"\nblack hole, {DUE} due windows, default settings: run-once gave up in {took:.1f} s "
        f"after {connections} connection(s)"
    )
    # Three 15 s read timeouts open the circuit; nothing is sent after that.
    assert connections == 3
    assert took < 60


# -- many windows, 2 % random faults -----------------------------------------------------------


async def test_two_thousand_windows_with_two_percent_random_faults_are_exact(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime, events: Events
) -> None:
    windows = 2000
    rng = random.Random(20240611)
    kinds = [
        Fault.unavailable(retry_after=None),
        Fault.too_many_requests(retry_after=None),
        Fault(reset=True),
    ]
    plan = {n: rng.choice(kinds) for n in range(1, 2 * windows) if rng.random() < 0.02}
    # The default circuit opens after three failures in a row: this seed never has three.
    assert not any(n + 1 in plan and n + 2 in plan for n in plan)
    points = light_points(5, start, windows)
    write_points(influxd, db, points)

    async with Proxy(influxd.url, fault=by_number(plan)) as proxy:
        config = write_config(
            tmp_path,
            url=proxy.url,
            db=db,
            start=start,
            # Short backoff so the run stays short; the circuit keeps its defaults.
            connection={"retry": {"initial": "20ms", "max": "200ms"}},
        )
        runs, took, retries = await timed_run(config, start + windows * MINUTE)
    queries = [e for e in proxy.exchanges if is_downsample(e)]
    faults = Counter(
        "reset" if e.fault.reset else str(e.fault.status) for e in queries if e.fault is not None
    )
    print(
        f"\n{windows} windows, {len(queries)} queries in {took:.1f} s: {retries:g} retries "
        f"after {sum(faults.values())} injected faults {dict(faults)}"
    )

    starts = window_starts(start, windows)
    assert_every_window_succeeded_once(runs, starts)
    assert retries == sum(faults.values())
    assert len(events.named("query_retry")) == retries
    assert len(queries) == windows + retries
    attempts = assert_ledger_one_success_each(tmp_path / "state.db", starts)
    assert attempts == Counter({1: windows})  # retries stayed inside the engine call
    _, _, attempt_rows = read_state(tmp_path / "state.db", JOB)
    assert len(attempt_rows) == windows
    assert_tier(read_tier(influxd, db, WARM_RP), expected(points, start, windows))


# -- permanent failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, b'{"error":"error parsing query: found BANG"}'),
        (403, b'{"error":"forbidden"}'),
        (404, b"404 page not found"),
        (413, b'{"error":"Request Entity Too Large"}'),
        (422, b'{"error":"unprocessable"}'),
    ],
)
async def test_a_permanent_error_fails_its_window_after_one_request(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime, status: int, body: bytes
) -> None:
    windows, bad = 4, start + 2 * MINUTE
    points = light_points(6, start, windows)
    write_points(influxd, db, points)
    fault = Fault(status=status, body=body, headers={"Content-Type": "application/json"})
    rule = for_window(bad)
    async with Proxy(influxd.url, fault=lambda e: fault if rule(e) else None) as proxy:
        config = write_config(tmp_path, url=proxy.url, db=db, start=start)
        async with open_runner(config) as runner:
            runs = await runner.run_due(start + windows * MINUTE)
            retries = retries_metric(runner)
            breaker = runner.engine(CONNECTION).breaker  # type: ignore[attr-defined]

    assert len([e for e in proxy.exchanges if rule(e)]) == 1
    assert retries == 0
    assert breaker.state == "closed"
    outcome = {w.window.start: (w.status, w.error) for r in runs for w in r.windows}
    status_of_bad, error = outcome.pop(bad)
    assert status_of_bad is RunStatus.FAILED
    assert error is not None
    assert f"HTTP {status}" in error
    assert {s for s, _ in outcome.values()} == {RunStatus.SUCCEEDED}
    done = [s for s in window_starts(start, windows) if s != bad]
    assert_tier(
        read_tier(influxd, db, WARM_RP),
        {k: v for k, v in expected(points, start, windows).items() if k[1] != ns(bad)},
    )
    assert sorted(outcome) == done


def test_a_job_whose_source_retention_policy_does_not_exist_fails_at_once(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime
) -> None:
    """Default settings: one request, no retry, no probe, no circuit; exit 1, and the error
    names the policy and says how to create it."""
    now = rfc3339(start + MINUTE)
    with ThreadedProxy(influxd.url) as threaded:
        config = write_config(tmp_path, url=threaded.url, db=db, start=start)
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace(f"{db}/autogen", f"{db}/no_such_rp"), encoding="utf-8")
        result = run_tierflow("run-once", "-c", config, "--now", now, "--json")
        exchanges = threaded.proxy.exchanges
    assert result.returncode == 1, result.stderr[-2000:]
    body = json.loads(result.stdout)
    assert (body["succeeded"], body["failed"]) == (0, 1)
    (run,) = body["runs"]
    assert "retention policy not found: no_such_rp" in run["error"]
    assert "tierflow apply" in run["error"]
    assert "circuit open" not in run["error"] + result.stderr
    assert len([e for e in exchanges if is_downsample(e)]) == 1
    assert [e for e in exchanges if e.path == "/ping"] == []


async def test_a_write_to_a_missing_retention_policy_is_refused_once_not_retried(
    influxd: ThrowawayInfluxd, db: str
) -> None:
    """1.x answers a write to an unknown policy with HTTP 500: still permanent (default
    settings: one request, the circuit stays closed)."""
    from tierflow._config import InfluxDB1Connection
    from tierflow._engines import engine_for
    from tierflow._errors import QueryError

    async with Proxy(influxd.url) as proxy:
        # gzip off: the proxy hands bodies on decompressed (aiohttp reads them so) and would
        # keep the Content-Encoding; the retry and circuit settings are the defaults.
        connection = InfluxDB1Connection(kind="influxdb1", url=proxy.url, gzip=False)
        engine = engine_for(CONNECTION, connection)
        try:
            for _ in range(5):  # more than the circuit's threshold
                with pytest.raises(QueryError) as raised:
                    await engine.write(b"m f=1 1", database=db, retention_policy="nope")
            breaker = engine.breaker  # type: ignore[attr-defined]
        finally:
            await engine.aclose()
    assert str(raised.value) == (
        f"connection {CONNECTION}: HTTP 500: retention policy not found: nope "
        "(create it with `tierflow apply`)"
    )
    writes = [e for e in proxy.exchanges if e.path == "/write"]
    assert [e.status for e in writes] == [500] * 5
    assert [e for e in proxy.exchanges if e.path == "/ping"] == []
    assert breaker.state == "closed"


# -- parking ----------------------------------------------------------------------------------


async def test_a_window_that_keeps_failing_is_parked_skipped_and_requeued_by_retry(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime
) -> None:
    windows, bad_index = 8, 3
    bad = start + bad_index * MINUTE
    later = 3  # windows that become due after the window was parked
    points = light_points(7, start, windows + later)
    write_points(influxd, db, points)
    rule = for_window(bad)
    refuse = Fault(status=400, body=b'{"error":"error parsing query: injected"}')

    def requests_for_bad() -> int:
        return len([e for e in proxy.proxy.exchanges if rule(e)])

    def run_once(now: datetime) -> tuple[int, Any]:
        result = run_tierflow("run-once", "-c", config, "--now", rfc3339(now), "--json")
        return result.returncode, json.loads(result.stdout)

    async def status(now: datetime) -> tuple[int, int, int, datetime | None]:
        """(failed, parked, pending windows, watermark), as `tierflow status` reports them."""
        (row,) = await job_status(config, now)
        return row.failed_windows, row.parked_windows, row.pending_windows, row.watermark

    with ThreadedProxy(influxd.url, fault=lambda e: refuse if rule(e) else None) as proxy:
        config = write_config(
            tmp_path, url=proxy.url, db=db, start=start, scheduler={"max_window_attempts": 2}
        )
        now = start + windows * MINUTE

        code, first = run_once(now)
        assert code == 1
        assert (first["succeeded"], first["failed"]) == (windows - 1, 1)
        assert requests_for_bad() == 1  # a 400 is permanent: not retried
        assert await status(now) == (1, 0, 1, bad)

        code, second = run_once(now)
        assert code == 1
        assert [(r["start"], r["status"], r["attempts"]) for r in second["runs"]] == [
            (rfc3339(bad), "failed", 2)
        ]
        assert requests_for_bad() == 2
        (row,) = ok_json(run_tierflow("status", "-c", config, "--now", rfc3339(now), "--json"))[
            "jobs"
        ]
        assert (row["failed_windows"], row["parked_windows"], row["pending_windows"]) == (1, 1, 0)
        assert row["watermark"] == rfc3339(bad)

        # Later windows run; the parked one is not touched and holds the watermark.
        later_now = now + later * MINUTE
        code, third = run_once(later_now)
        assert [(r["start"], r["status"]) for r in third["runs"]] == [
            (rfc3339(now + i * MINUTE), "succeeded") for i in range(later)
        ]
        assert requests_for_bad() == 2
        assert await status(later_now) == (1, 1, 0, bad)
        assert await parked_gauge(config, later_now) == 1
        print(f"\nthird run-once, the parked window left behind: exit {code}")

        requeued = ok_json(run_tierflow("retry", JOB, "-c", config, "--all-failed", "--json"))
        assert requeued == {"job": JOB, "requeued": 1}
        assert await status(later_now) == (1, 0, 1, bad)

        proxy.proxy.fault = None  # whatever broke the window is fixed
        code, fourth = run_once(later_now)
        assert code == 0
        assert [(r["start"], r["status"], r["attempts"]) for r in fourth["runs"]] == [
            (rfc3339(bad), "succeeded", 3)
        ]
        assert requests_for_bad() == 3
        assert await status(later_now) == (0, 0, 0, later_now)
        assert await parked_gauge(config, later_now) == 0
    assert_tier(read_tier(influxd, db, WARM_RP), expected(points, start, windows + later))


async def job_status(config: Path, now: datetime) -> list[JobStatus]:
    runner = Runner(load_config(config), SqliteStateStore(config.parent / "state.db"))
    try:
        return await runner.status(now)
    finally:
        await runner.store.aclose()


async def parked_gauge(config: Path, now: datetime) -> float | None:
    runner = Runner(load_config(config), SqliteStateStore(config.parent / "state.db"))
    try:
        await runner.status(now)
        return runner.metrics.registry.get_sample_value("tierflow_windows_parked", {"job": JOB})
    finally:
        await runner.store.aclose()


# -- 401 and a rotated password ----------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def authorization(exchange: Exchange) -> str | None:
    return next((v for k, v in exchange.headers.items() if k.lower() == "authorization"), None)


UNAUTHORIZED = Fault(
    status=401,
    body=b'{"error":"authorization failed"}',
    headers={"Content-Type": "application/json", "WWW-Authenticate": 'Basic realm="InfluxDB"'},
)


def password_file_config(directory: Path, url: str, db: str, start: datetime, secret: Path) -> Path:
    """`write_config` for user `tierflow` whose password is read from the file `secret`."""
    connection = {"username": "tierflow", "password": {"file": str(secret)}}
    return write_config(directory, url=url, db=db, start=start, connection=connection)


async def test_a_401_fetches_the_rotated_password_once_and_the_window_succeeds(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime
) -> None:
    windows = 3
    points = light_points(8, start, windows)
    write_points(influxd, db, points)
    secret = tmp_path / "password"
    secret.write_text("old-secret\n", encoding="utf-8")

    def rule(exchange: Exchange) -> Fault | None:
        if authorization(exchange) == basic("tierflow", "old-secret"):
            secret.write_text("new-secret\n", encoding="utf-8")  # rotated at its source
            return UNAUTHORIZED
        return None

    async with Proxy(influxd.url, fault=rule) as proxy:
        config = password_file_config(tmp_path, proxy.url, db, start, secret)
        async with open_runner(config) as runner:
            runs = await runner.run_due(start + windows * MINUTE)
            retries = retries_metric(runner)

    assert_every_window_succeeded_once(runs, window_starts(start, windows))
    sent = [(authorization(e), e.status) for e in proxy.exchanges if is_downsample(e)]
    new = basic("tierflow", "new-secret")
    assert sent == [(basic("tierflow", "old-secret"), 401), (new, 200), (new, 200), (new, 200)]
    assert retries == 0
    assert_tier(read_tier(influxd, db, WARM_RP), expected(points, start, windows))


async def test_a_persistent_401_is_an_auth_error_sent_twice_at_most(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime
) -> None:
    secret = tmp_path / "password"
    secret.write_text("wrong\n", encoding="utf-8")
    async with Proxy(influxd.url, fault=lambda e: UNAUTHORIZED) as proxy:
        config = password_file_config(tmp_path, proxy.url, db, start, secret)
        async with open_runner(config) as runner:
            (run,) = await runner.run_due(start + MINUTE)
            after_window = len(proxy.exchanges)
            with pytest.raises(AuthError, match="HTTP 401"):
                await runner.engine(CONNECTION).query("SHOW DATABASES")
            retries = retries_metric(runner)
            breaker = runner.engine(CONNECTION).breaker  # type: ignore[attr-defined]

    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "HTTP 401" in run.error
    assert after_window == 2  # the request, and one more after fetching the password again
    assert len(proxy.exchanges) == 4
    assert retries == 0
    assert breaker.state == "closed"


# -- the window deadline -----------------------------------------------------------------------


async def test_the_window_deadline_fails_a_window_that_takes_too_long(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime
) -> None:
    windows, slow = 3, start + MINUTE
    points = light_points(9, start, windows)
    write_points(influxd, db, points)
    rule = for_window(slow)
    stall = Fault(delay=3.0)
    async with Proxy(influxd.url, fault=lambda e: stall if rule(e) else None) as proxy:
        config = write_config(
            tmp_path, url=proxy.url, db=db, start=start, scheduler={"window_deadline": "1s"}
        )
        async with open_runner(config) as runner:
            began = time.monotonic()
            runs = await runner.run_due(start + windows * MINUTE)
            took = time.monotonic() - began
            proxy.fault = None
            again = await runner.run_due(start + windows * MINUTE)

    outcome = {w.window.start: (w.status, w.error) for r in runs for w in r.windows}
    status, error = outcome.pop(slow)
    assert status is RunStatus.FAILED
    assert error is not None
    assert "window deadline" in error
    assert {s for s, _ in outcome.values()} == {RunStatus.SUCCEEDED}
    assert took < 3.0  # the stalled window was given up after 1 s, not waited for
    # The stalled request still reached the server once the proxy let it go (a deadline cannot
    # unsend a query), so the window is only right once it has run again.
    assert [(w.window.start, w.status, w.attempts) for r in again for w in r.windows] == [
        (slow, RunStatus.SUCCEEDED, 2)
    ]
    assert_tier(read_tier(influxd, db, WARM_RP), expected(points, start, windows))
