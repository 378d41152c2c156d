"""A `tierflow run` daemon whose PostgreSQL state goes away under it, against a real influxd:
it stops claiming, says not ready on /readyz (alive on /healthz), and resumes by itself when the
database is back; every window ends exact in the warm tier and its success is recorded once.

Two outages: a short one, which a window in flight outlives (its outcome is recorded when the
database is back, on its first attempt), and one longer than the lease (the window's outcome
cannot be recorded in time, so it is taken over once its lease expires and run again).

The database is a throwaway PostgreSQL of the test's own (stopped and started again under the
daemon), even when $TIERFLOW_TEST_POSTGRES_URL names a shared server. What the warm tier should
hold is computed in plain Python from the points written; ledger and history are read with
plain SQL.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration._helpers import (
    SPAN,
    assert_tier,
    expected_tier,
    grid,
    job,
    telemetry,
    write_points,
)
from tests.integration._support import (
    SlowProxy,
    Tierflow,
    floor_to,
    free_port,
    http_get,
    ok_json,
    processes,
    run_tierflow,
    spawn,
    wait_http,
)
from tests.integration.conftest import WARM_RP, config_tables, read_tier, write_toml
from tierflow._errors import StateUnavailableError
from tierflow._state._postgres import PostgresStateStore, describe_url
from tierflow.testing import ThrowawayInfluxd
from tierflow.testing.postgres import POSTGRES_URL_ENV_VAR, ThrowawayPostgres

EVERY = timedelta(minutes=5)
WINDOWS = SPAN // EVERY  # the windows the points cover, all due when the daemon starts


@pytest.fixture
def own_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThrowawayPostgres]:
    """A throwaway PostgreSQL this test may stop and start again."""
    monkeypatch.delenv(POSTGRES_URL_ENV_VAR, raising=False)
    with ThrowawayPostgres() as server:
        yield server


def upstream(influxd: ThrowawayInfluxd) -> tuple[str, int]:
    host, port = influxd.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def watermark(postgres: ThrowawayPostgres, url: str) -> datetime | None:
    rows = postgres.execute("SELECT watermark FROM jobs WHERE job = 'down'", url)
    return rows[0][0].astimezone(UTC) if rows else None


def attempts(postgres: ThrowawayPostgres, url: str) -> list[tuple[datetime, int, str]]:
    """Every attempt in the history: (window start, attempt, status), in order."""
    rows = postgres.execute(
        "SELECT window_start, attempt, status FROM attempts WHERE job = 'down' "
        "ORDER BY window_start, attempt",
        url,
    )
    return [(start.astimezone(UTC), attempt, status) for start, attempt, status in rows]


def wait_events(daemon: Tierflow, event: str, count: int, timeout: float) -> list[dict[str, Any]]:
    """The first `count` `event`s logged, waiting up to `timeout` seconds for them."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in daemon.events() if e["event"] == event]
        if len(found) >= count:
            return found[:count]
        assert daemon.process.poll() is None, daemon.describe()
        assert time.monotonic() < deadline, f"fewer than {count} {event!r}; {daemon.describe()}"
        time.sleep(0.05)


def wait_readyz(base: str, status: int, timeout: float, daemon: Tierflow) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, text = http_get(f"{base}/readyz")
        if code == status:
            body: dict[str, Any] = json.loads(text)
            return body
        assert time.monotonic() < deadline, f"/readyz stayed {code}: {text}; {daemon.describe()}"
        time.sleep(0.2)


def wait_caught_up(postgres: ThrowawayPostgres, url: str, until: datetime, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (watermark(postgres, url) or until - EVERY) < until:
        assert time.monotonic() < deadline, f"the watermark stayed {watermark(postgres, url)}"
        time.sleep(0.1)


def outage(
    influxd: ThrowawayInfluxd,
    db: str,
    tmp_path: Path,
    postgres: ThrowawayPostgres,
    seed: int,
    *,
    down_for: float,
    scheduler: dict[str, object],
) -> tuple[Path, str, datetime, Tierflow, dict[str, Any]]:
    """Run a daemon catching up on WINDOWS windows (one query each, each held 0.5 s by a proxy
    in front of influxd), stop PostgreSQL while the fourth query is in flight (held until then)
    for `down_for` seconds, and let the daemon catch up; check the warm tier, the history and
    /readyz along the way. Returns the config, the state URL, the first window's start, the
    stopped daemon and what /readyz said during the outage."""
    url = postgres.new_database()
    start = floor_to(datetime.now(UTC), EVERY) - SPAN
    points = telemetry(seed, start)
    write_points(influxd, db, points)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with SlowProxy(upstream(influxd), request_delay=0.5) as proxy, processes() as spawned:
        jobs = {"down": job(start, catchup_chunk="5m")}
        tables = config_tables(url=proxy.url, db=db, state=tmp_path / "unused", jobs=jobs)
        tables["state"] = {"url": url}
        tables["server"] = {"listen": f"127.0.0.1:{port}"}
        tables["scheduler"] = dict(scheduler)
        config = write_toml(tmp_path, tables)
        daemon = spawn("run", "-c", config, log_level="debug")
        spawned.append(daemon)
        wait_http(f"{base}/healthz", timeout=30, process=daemon)
        wait_events(daemon, "window_started", 4, timeout=60)
        proxy.request_delay = math.inf  # the fourth query stays in flight until PostgreSQL is down
        postgres.halt()
        halted = time.monotonic()
        proxy.request_delay = 0.5
        try:
            daemon.wait_for("state_unavailable", timeout=20)
            not_ready = wait_readyz(base, 503, timeout=10, daemon=daemon)
            assert http_get(f"{base}/healthz")[0] == 200
            time.sleep(max(0.0, down_for - (time.monotonic() - halted)))
        finally:
            postgres.resume()
        daemon.wait_for("state_available", timeout=30)
        wait_readyz(base, 200, timeout=30, daemon=daemon)
        wait_caught_up(postgres, url, start + SPAN, timeout=120)
        status = ok_json(run_tierflow("status", "-c", config, "--json"))
        daemon.send(signal.SIGTERM)
        daemon.wait_expecting({0}, timeout=30)

    # Exact: what the warm tier holds equals plain Python's aggregates of every window run.
    mark = watermark(postgres, url)
    assert mark is not None
    spans = grid(start, EVERY, (mark - start) // EVERY)
    assert len(spans) >= WINDOWS
    assert_tier(read_tier(influxd, db, WARM_RP), expected_tier(points, spans))
    # Every window's success is recorded once, and nothing else is left running.
    history = attempts(postgres, url)
    successes = Counter(start for start, _, status in history if status == "succeeded")
    assert successes == Counter(start for start, _ in spans)
    assert {status for _, _, status in history} <= {"succeeded", "abandoned"}
    # While it ran, `status` showed this daemon live.
    (me,) = status["workers"]
    assert (me["pid"], me["state"], me["jobs"]) == (daemon.process.pid, "live", ["down"])
    return config, url, start, daemon, not_ready


def test_a_short_outage_stops_claims_and_the_window_in_flight_is_recorded_once_back(
    influxd: ThrowawayInfluxd,
    db: str,
    tmp_path: Path,
    own_postgres: ThrowawayPostgres,
) -> None:
    """PostgreSQL down for 8 s, less than the default lease: the window in flight finishes its
    query meanwhile and records its outcome once the database is back; no window is run twice."""
    config, url, start, daemon, not_ready = outage(
        influxd, db, tmp_path, own_postgres, 31, down_for=8, scheduler={}
    )
    assert not_ready["ready"] is False
    assert not_ready["checks"]["state"].startswith("unavailable, not claiming: state store ")
    assert not_ready["checks"]["connection:plant"] == "ok"
    # Every window ran once, on its first attempt: the outage cost no re-run.
    assert {(attempt, status) for _, attempt, status in attempts(own_postgres, url)} == {
        (1, "succeeded")
    }
    events = daemon.events()
    names = [e["event"] for e in events]
    assert "window_finish_retry" in names
    assert "window_outcome_unrecorded" not in names
    # No window was claimed while the database was down (until the window in flight could
    # record its outcome, which needed it back), and the loop did not spin meanwhile.
    lost = names.index("state_unavailable")
    back = names.index("window_succeeded", lost)
    assert "window_started" not in names[lost:back]
    assert names[lost:back].count("job_loop_error") <= 2
    # Stopped cleanly, the worker says so.
    body = ok_json(run_tierflow("status", "-c", config, "--json"))
    (me,) = body["workers"]
    assert (me["pid"], me["state"]) == (daemon.process.pid, "stopped")
    assert (
        start < datetime.fromisoformat(me["started_at"]) < datetime.fromisoformat(me["stopped_at"])
    )


def test_an_outage_past_the_lease_reruns_the_window_whose_outcome_was_lost_once(
    influxd: ThrowawayInfluxd,
    db: str,
    tmp_path: Path,
    own_postgres: ThrowawayPostgres,
) -> None:
    """PostgreSQL down for 16 s with a 6 s lease: the window in flight cannot record its
    outcome before its lease expires; once the database is back the daemon takes it over and
    runs it again (SELECT … INTO writes the same points again), recording its success once."""
    _, url, _, daemon, _ = outage(
        influxd, db, tmp_path, own_postgres, 32, down_for=16, scheduler={"lease": "6s"}
    )
    names = [e["event"] for e in daemon.events()]
    assert names.count("window_outcome_unrecorded") == 1, daemon.describe()
    history = attempts(own_postgres, url)
    rerun = [start for start, attempt, _ in history if attempt == 2]
    assert len(rerun) == 1, history
    mine = [(attempt, status) for start, attempt, status in history if start == rerun[0]]
    assert mine == [(1, "abandoned"), (2, "succeeded")]
    assert all(attempt == 1 for start, attempt, _ in history if start != rerun[0])


async def test_the_store_says_unavailable_while_the_server_is_down_and_reconnects_after(
    own_postgres: ThrowawayPostgres,
) -> None:
    """A call while the server is down is a StateUnavailableError naming the database; the first
    call after it is back succeeds, although every idle connection died with the server."""
    url = own_postgres.new_database()
    origin = datetime(2026, 11, 1, tzinfo=UTC)
    async with PostgresStateStore(url) as store:
        await store.ensure_job("j", origin)
        # Four calls at once: four connections, idle after.
        assert await asyncio.gather(*(store.watermark("j") for _ in range(4))) == [origin] * 4
        own_postgres.halt()
        try:
            with pytest.raises(StateUnavailableError) as caught:
                await store.watermark("j")
        finally:
            own_postgres.resume()
        assert describe_url(url) in str(caught.value)
        assert await store.watermark("j") == origin
        assert await asyncio.gather(*(store.watermark("j") for _ in range(4))) == [origin] * 4
