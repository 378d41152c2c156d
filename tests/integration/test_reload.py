"""SIGHUP reloads `tierflow run`'s config, as a real process against a real influxd.

A config that does not pass `validate`'s offline checks is logged (`config_reload_failed`) and
the running one is kept; a job added starts; a job removed finishes the window it has in
flight (recorded) and starts no other; a job changed follows the rules of redefinition (a
change of what it writes, once it wrote something, is refused until `tierflow reset`).

What the warm tier should hold is computed in plain Python from the points the test wrote.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration._helpers import (
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
    add_tables,
    ceil_to,
    floor_to,
    free_port,
    http_get,
    parse_metrics,
    processes,
    read_state,
    run_tierflow,
    sample,
    spawn,
    wait_http,
)
from tests.integration.conftest import WARM_RP, ConfigWriter, read_tier
from tests.integration.test_daemon import upstream
from tierflow.testing import ThrowawayInfluxd

pytestmark = pytest.mark.integration

SECOND = timedelta(seconds=1)
FIVE_MINUTES = timedelta(minutes=5)
SPAN = timedelta(hours=2)


def named(process: Tierflow, event: str) -> list[dict[str, Any]]:
    return [e for e in process.events() if e.get("event") == event]


def wait_until(condition: Any, timeout: float, process: Tierflow, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout:g} s; {process.describe()}"
        assert process.process.poll() is None, f"{what}: the daemon ended; {process.describe()}"
        time.sleep(0.05)


def caught_up(state: Path, name: str, until: datetime) -> Any:
    return lambda: (read_state(state, name)[0] or datetime.min.replace(tzinfo=UTC)) >= until


def test_a_bad_config_on_sighup_is_logged_and_the_running_one_keeps_going(
    db: str, write_config: ConfigWriter
) -> None:
    start = ceil_to(datetime.now(UTC) + SECOND, 2 * SECOND)
    port = free_port()
    config = add_tables(
        write_config(db, {"live": job(start, every="2s", offset="300ms")}),
        {"scheduler": {"grace": "5s"}, "server": {"listen": f"127.0.0.1:{port}"}},
    )
    good = config.read_text(encoding="utf-8")
    secret = "hunter2-not-for-logs"
    with processes() as spawned:
        daemon = spawn("run", "-c", config)
        spawned.append(daemon)
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=15, process=daemon)
        daemon.wait_for("window_succeeded", timeout=15)
        # Two problems (a bad duration, an unknown table) and a password in a URL.
        config.write_text(
            good.replace('every = "2s"', 'every = "banana"').replace(
                "http://", f"http://tf:{secret}@"
            )
            + '\n[oops]\nkey = "value"\n',
            encoding="utf-8",
        )
        for _ in range(3):  # asks arriving during a reload make one more reload, not a crash
            daemon.send(signal.SIGHUP)
        failed = daemon.wait_for("config_reload_failed", timeout=15)
        before = len(named(daemon, "window_succeeded"))
        wait_until(
            lambda: len(named(daemon, "window_succeeded")) >= before + 2,
            timeout=15,
            process=daemon,
            what="two more windows under the running config",
        )
        _, samples = parse_metrics(http_get(f"http://127.0.0.1:{port}/metrics")[1])
        code, _ = daemon.stop(signal.SIGTERM)

    assert code == 0, daemon.describe()
    problems = "\n".join(failed["problems"])
    assert "[jobs.live] every" in problems, problems
    assert "[oops]" in problems or "oops" in problems, problems
    assert failed["kept"] == "the running config"
    assert secret not in "\n".join(daemon.stderr)
    assert 1 <= len(named(daemon, "config_reload_failed")) <= 3
    assert not named(daemon, "config_reloaded")
    failures = sample(samples, "tierflow_config_reloads_total", result="failure")
    assert 1 <= failures <= 3
    assert sample(samples, "tierflow_config_reloads_total", result="success") == 0
    assert sample(samples, "tierflow_config_last_reload_successful") == 0
    loaded_at = sample(samples, "tierflow_config_last_reload_success_timestamp_seconds")
    assert abs(loaded_at - time.time()) < 60  # when the daemon started: no reload succeeded
    # Every window ran under the one config, back to back from the start.
    watermark, ledger, _ = read_state(config.parent / "state.db", "live")
    assert watermark is not None
    spans = grid(start, 2 * SECOND, (watermark - start) // (2 * SECOND))
    assert [(row.start, row.stop, row.status) for row in ledger] == [
        (low, high, "succeeded") for low, high in spans
    ]


def test_a_job_added_by_sighup_runs_its_windows(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter
) -> None:
    start = floor_to(datetime.now(UTC), FIVE_MINUTES) - SPAN
    sensor, other = telemetry(31, start), telemetry(32, start, measurement="other")
    write_points(influxd, db, sensor + other)
    first = job(start, catchup_chunk="30m")
    port = free_port()
    server = {"server": {"listen": f"127.0.0.1:{port}"}}
    config = add_tables(write_config(db, {"a": first}), server)
    state = config.parent / "state.db"
    with processes() as spawned:
        daemon = spawn("run", "-c", config)
        spawned.append(daemon)
        daemon.wait_for("daemon_started", timeout=15)
        wait_until(caught_up(state, "a", start + SPAN), 30, daemon, "job a caught up")
        add_tables(write_config(db, {"a": first, "b": job(start, measurements=["other"])}), server)
        daemon.send(signal.SIGHUP)
        reloaded = daemon.wait_for("config_reloaded", timeout=15)
        wait_until(caught_up(state, "b", start + SPAN), 30, daemon, "job b caught up")
        # The status page's API reads the running config, not the one the daemon started with.
        listed = json.loads(http_get(f"http://127.0.0.1:{port}/api/status")[1])
        code, _ = daemon.stop(signal.SIGTERM)

    assert [j["job"] for j in listed["jobs"]] == ["a", "b"], listed

    assert code == 0, daemon.describe()
    assert (reloaded["jobs_added"], reloaded["jobs_removed"], reloaded["jobs_changed"]) == (
        ["b"],
        [],
        [],
    )
    spans = {}
    for name in ("a", "b"):
        watermark, ledger, _ = read_state(state, name)
        assert watermark is not None
        spans[name] = grid(start, FIVE_MINUTES, (watermark - start) // FIVE_MINUTES)
        assert [(r.start, r.stop, r.status) for r in ledger] == [
            (low, high, "succeeded") for low, high in spans[name]
        ]
    expected = expected_tier(sensor, spans["a"]) | expected_tier(other, spans["b"])
    assert_tier(read_tier(influxd, db, WARM_RP), expected)
    (recorded,) = [e for e in named(daemon, "definition_recorded") if e["job"] == "b"]
    assert recorded["previous"] == "new"


def test_a_job_removed_while_a_window_is_in_flight_finishes_it_and_starts_no_other(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter
) -> None:
    start = floor_to(datetime.now(UTC), FIVE_MINUTES) - 2 * FIVE_MINUTES
    points = telemetry(33, start)
    write_points(influxd, db, points)
    later = datetime.now(UTC) + timedelta(days=1)  # the job left in: no window of it is due
    with SlowProxy(upstream(influxd), request_delay=3.0) as proxy, processes() as spawned:
        config = write_config(db, {"down": job(start, catchup_chunk="5m")}, url=proxy.url)
        daemon = spawn("run", "-c", config, log_level="debug")
        spawned.append(daemon)
        begun = daemon.wait_for("window_started", timeout=15)
        write_config(db, {"idle": job(later, measurements=["other"])}, url=proxy.url)
        daemon.send(signal.SIGHUP)
        reloaded = daemon.wait_for("config_reloaded", timeout=15)
        assert not named(daemon, "window_succeeded"), "the window was not in flight at reload"
        done = daemon.wait_for("window_succeeded", timeout=15)
        daemon.wait_for("job_removed", timeout=15)
        time.sleep(4)  # the proxy's hold and more: another window would have begun and ended
        code, _ = daemon.stop(signal.SIGTERM)

    assert code == 0, daemon.describe()
    assert (reloaded["jobs_added"], reloaded["jobs_removed"]) == (["idle"], ["down"])
    assert done["run_id"] == begun["run_id"]
    assert [e["run_id"] for e in named(daemon, "window_started")] == [begun["run_id"]]
    first = (start, start + FIVE_MINUTES)
    watermark, ledger, attempts = read_state(config.parent / "state.db", "down")
    assert watermark == first[1]
    assert [(r.start, r.stop, r.status) for r in ledger] == [(*first, "succeeded")]
    assert [(a.start, a.stop, a.status, a.run_id) for a in attempts] == [
        (*first, "succeeded", begun["run_id"])
    ]
    assert_tier(read_tier(influxd, db, WARM_RP), expected_tier(points, [first]))


def test_a_changed_job_follows_the_rules_of_redefinition(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter
) -> None:
    start = floor_to(datetime.now(UTC), FIVE_MINUTES) - SPAN
    points = telemetry(34, start)
    write_points(influxd, db, points)
    later = datetime.now(UTC) + timedelta(days=1)
    a, b = job(start, catchup_chunk="30m"), job(later, measurements=["other"])
    config = write_config(db, {"a": a, "b": b})
    state = config.parent / "state.db"
    with processes() as spawned:
        daemon = spawn("run", "-c", config)
        spawned.append(daemon)
        daemon.wait_for("daemon_started", timeout=15)
        wait_until(caught_up(state, "a", start + SPAN), 30, daemon, "job a caught up")
        # What a writes changes, and a wrote windows already: refused, the running config kept.
        write_config(db, {"a": a | {"aggregates": {"temp": ["max"]}}, "b": b})
        daemon.send(signal.SIGHUP)
        refused = daemon.wait_for("config_reload_failed", timeout=15)
        # How a runs changes (not what it writes), and b (which never ran) is redefined.
        write_config(
            db, {"a": a | {"catchup_chunk": "1h"}, "b": b | {"aggregates": {"temp": ["max"]}}}
        )
        daemon.send(signal.SIGHUP)
        reloaded = daemon.wait_for("config_reloaded", timeout=15)
        # b's loop takes the new config at its next pass, which the reload wakes it for.
        wait_until(
            lambda: len([e for e in named(daemon, "definition_recorded") if e["job"] == "b"]) > 1,
            15,
            daemon,
            "b's new definition recorded",
        )
        code, _ = daemon.stop(signal.SIGTERM)

    assert code == 0, daemon.describe()
    text = "\n".join(refused["problems"])
    assert "job a was redefined since its ledger was recorded" in text, text
    assert "aggregates" in text, text
    assert "tierflow reset a" in text, text
    assert reloaded["jobs_changed"] == ["a", "b"]
    assert (reloaded["jobs_added"], reloaded["jobs_removed"]) == ([], [])
    # b's new definition was recorded once its loop took the new config (b never ran a
    # window, so no output can be stale); a's stayed as it was.
    recorded = [e for e in named(daemon, "definition_recorded") if e["job"] == "b"]
    assert [e["previous"] for e in recorded] == ["new", "new"], recorded
    assert recorded[0]["digest"] != recorded[1]["digest"]
    checked = run_tierflow("validate", "-c", config)
    assert checked.returncode == 0, checked.stderr
    # a kept writing what it wrote: its first definition's aggregates, every window.
    watermark, _, _ = read_state(state, "a")
    assert watermark is not None
    spans = grid(start, FIVE_MINUTES, (watermark - start) // FIVE_MINUTES)
    assert_tier(read_tier(influxd, db, WARM_RP), expected_tier(points, spans))


def catches_hangup(pid: int) -> bool:
    """Whether the process has a handler of its own for SIGHUP (bit 0 of `SigCgt`)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & 1)
    return False


def test_a_sighup_while_the_daemon_starts_is_a_reload_not_its_end(
    db: str, write_config: ConfigWriter
) -> None:
    # systemd may send ExecReload's SIGHUP right after the start. The daemon is held in its
    # start (its state file locked by the test) until it has said it holds SIGHUP; the signal
    # sent then is kept and becomes a reload once the daemon handles signals: it does not die
    # of it, as it did before its event loop was up.
    later = datetime.now(UTC) + timedelta(days=1)  # no window due: only the start matters
    config = write_config(db, {"idle": job(later)})
    state = config.parent / "state.db"
    run_tierflow("status", "-c", config)  # the state file exists, its schema made
    with processes() as spawned, sqlite3.connect(state, isolation_level=None) as lock:
        lock.execute("BEGIN EXCLUSIVE")  # the daemon's start waits here (busy timeout)
        daemon = spawn("run", "-c", config)
        spawned.append(daemon)
        deadline = time.monotonic() + 10
        while not catches_hangup(daemon.process.pid):
            assert time.monotonic() < deadline, (
                f"SIGHUP not held while starting; {daemon.describe()}"
            )
            assert daemon.process.poll() is None, daemon.describe()
            time.sleep(0.01)
        daemon.send(signal.SIGHUP)
        time.sleep(0.5)
        assert daemon.process.poll() is None, daemon.describe()
        assert not named(daemon, "daemon_started"), "the start was not held"
        lock.execute("COMMIT")
        daemon.wait_for("config_reloaded", timeout=30)
        code, _ = daemon.stop(signal.SIGTERM)

    assert code == 0, daemon.describe()
