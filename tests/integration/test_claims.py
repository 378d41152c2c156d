"""Claims between real processes on one SQLite state: overlapping `run-once`s (a cron job whose
run outlasts its interval) share the due windows without repeating any, and the windows a
`kill -9`ed process held are taken over at once by the next run, its holder being dead, with
`status --json` accounting for every window at every step.

The processes are the real console script against the real influxd; the warm tier is compared
with aggregates computed in plain Python from the points the test wrote; the ledger and history
are read straight from the SQLite file.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.integration._helpers import write_points
from tests.integration._support import (
    SlowProxy,
    processes,
    read_state,
    rfc3339,
    run_tierflow,
    spawn,
)
from tests.integration.conftest import ConfigWriter
from tests.integration.test_crash_safety import (
    JOB,
    MINUTE,
    assert_settled,
    crash_job,
    minutes_ago,
    points_for,
    upstream,
    with_scheduler,
)
from tierflow.testing import ThrowawayInfluxd

WINDOWS = 240
UNDONE = ("pending", "running", "failed", "parked")


def status(config: Path, now: datetime) -> dict[str, Any]:
    """`tierflow status --json` for the one job, checked to account for every window."""
    result = run_tierflow("status", "--json", "-c", config, "--now", rfc3339(now))
    assert result.returncode == 0, result.stderr
    (job,) = json.loads(result.stdout)["jobs"]
    windows = job["windows"]
    assert sum(windows.values()) == WINDOWS, windows
    assert all(count >= 0 for count in windows.values()), windows
    assert windows["running"] == job["running_windows"] == len(job["claims"])
    watermark = datetime.fromisoformat(job["watermark"]) if job["watermark"] else None
    if watermark is None or watermark < now:
        # A lagging watermark is explained by windows that are not done.
        assert sum(windows[state] for state in UNDONE) > 0, job
    return dict(job)


def test_overlapping_run_onces_share_the_due_windows_and_repeat_none(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter
) -> None:
    start = minutes_ago(WINDOWS + 5)
    now = start + WINDOWS * MINUTE  # every process plans exactly these windows
    points = points_for(11, start, WINDOWS)
    write_points(influxd, db, points)
    # A slow server makes each run last long enough for the three to overlap all along.
    with SlowProxy(upstream(influxd), response_delay=0.03) as proxy:
        config = with_scheduler(write_config(db, {JOB: crash_job(start)}, url=proxy.url), "60s")
        command = ("run-once", "--json", "-c", config, "--now", rfc3339(now))
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda _: run_tierflow(*command, timeout=180), range(3)))
    reports = [json.loads(result.stdout) for result in results]
    state = config.parent / "state.db"
    _, ledger, attempts = read_state(state, JOB)
    succeeded = Counter(a.start for a in attempts if a.status == "succeeded")
    assert len(succeeded) == WINDOWS
    assert set(succeeded.values()) == {1}, f"windows run more than once: {succeeded.most_common(3)}"
    assert len(attempts) == WINDOWS, Counter(a.status for a in attempts)
    # Together the three reports name each due window once, every one succeeded.
    ran = Counter(run["start"] for report in reports for run in report["runs"])
    assert sum(report["succeeded"] for report in reports) == WINDOWS, [
        r["succeeded"] for r in reports
    ]
    assert len(ran) == WINDOWS
    assert set(ran.values()) == {1}
    assert all(report["failed"] == 0 for report in reports)
    # A run that ended while another still held windows it had planned says so and exits 1.
    for result, report in zip(results, reports, strict=True):
        assert result.returncode == (1 if report["not_taken"] else 0), result.stderr
    assert min(len(report["runs"]) for report in reports) > 0, "the runs did not overlap"
    assert_settled(influxd, db, state, points, start, at_least=WINDOWS)
    assert {row.status for row in ledger} == {"succeeded"}
    assert status(config, now)["windows"]["succeeded"] == WINDOWS


def test_a_killed_runs_windows_are_taken_over_at_once_and_status_accounts_for_each(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter
) -> None:
    start = minutes_ago(WINDOWS + 5)
    now = start + WINDOWS * MINUTE
    at = ("--now", rfc3339(now))
    points = points_for(12, start, WINDOWS)
    write_points(influxd, db, points)
    with SlowProxy(upstream(influxd), response_delay=0.05) as proxy, processes() as spawned:
        # A lease far longer than the test: windows come back because their holder died.
        config = with_scheduler(write_config(db, {JOB: crash_job(start)}, url=proxy.url), "10m")
        before = status(config, now)
        assert before["windows"]["pending"] == WINDOWS
        victim = spawn("run-once", "-c", config, *at, log_level="debug")
        spawned.append(victim)
        victim.wait_for("window_succeeded", timeout=30)
        time.sleep(0.5)  # mid catch-up: some windows done, some in flight
        victim.process.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=10) == -signal.SIGKILL
        state = config.parent / "state.db"
        _, ledger, _ = read_state(state, JOB)
        held = [row for row in ledger if row.status == "running"]
        assert held, "the killed run held no window"
        # Right after the kill: the dead run's windows show as running, held by its pid, stale.
        after_kill = status(config, now)
        assert after_kill["windows"]["running"] == len(held)
        assert after_kill["windows"]["succeeded"] > 0
        assert after_kill["windows"]["pending"] > 0
        assert {(c["holder"]["pid"], c["holder"]["host"]) for c in after_kill["claims"]} == {
            (victim.process.pid, socket.gethostname())
        }
        assert {c["stale"] for c in after_kill["claims"]} == {True}
        # Immediately (the leases have ~10 minutes left), a run-once completes everything.
        proxy.response_delay = 0.0
        result = run_tierflow("run-once", "--json", "-c", config, *at)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["failed"] == 0
    assert report["not_taken"] == []
    lease = min(row.lease_expires_at for row in held if row.lease_expires_at is not None)
    assert datetime.now(UTC) < lease, "the takeover must not have waited for the lease"
    assert {row["start"] for row in report["runs"]} >= {rfc3339(row.start) for row in held}

    done = status(config, now)
    assert done["windows"]["succeeded"] == WINDOWS
    assert done["claims"] == []
    attempts_by_status = assert_settled(influxd, db, state, points, start, at_least=WINDOWS)
    assert attempts_by_status["abandoned"] == len(held)
    _, _, attempts = read_state(state, JOB)
    holder = f"pid {victim.process.pid} on host {socket.gethostname()}"
    abandoned = {a.error for a in attempts if a.status == "abandoned"}
    assert abandoned == {f"holder {holder} died before the run finished"}
