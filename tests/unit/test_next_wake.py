"""`next_wake`: when a daemon's job loop next has work. A window that became due while the loop's
last pass ran (another worker's lease expired meanwhile, so the pass's claim found it held)
means now, not the next window's close."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tierflow._planner import Timeline, next_wake
from tierflow._state import LedgerEntry, RunStatus
from tierflow._windows import IntervalSchedule, Window

M = timedelta(minutes=1)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
NOW = T0 + 10 * M + timedelta(seconds=20)  # ten windows complete, the next closes at T0 + 11 M


def running(index: int, lease: datetime) -> LedgerEntry:
    window = Window(T0 + index * M, T0 + (index + 1) * M)
    return LedgerEntry(
        job="j",
        window=window,
        status=RunStatus.RUNNING,
        attempts=1,
        run_id="other",
        started_at=T0,
        finished_at=None,
        lease_expires_at=lease,
        error=None,
    )


def wake(*entries: LedgerEntry) -> datetime:
    ledger = {e.window.start: e for e in entries}
    return next_wake(Timeline(IntervalSchedule(M), T0, timedelta(0), NOW, ledger))


def test_nothing_held_wakes_when_the_next_window_closes() -> None:
    assert wake() == T0 + 11 * M


def test_a_lease_expiring_before_then_wakes_at_its_expiry() -> None:
    expiry = NOW + timedelta(seconds=5)
    assert wake(running(3, expiry)) == expiry


def test_a_lease_that_expired_already_wakes_now() -> None:
    assert wake(running(3, NOW - timedelta(seconds=1))) == NOW
    assert wake(running(3, NOW)) == NOW


def test_a_held_window_not_yet_due_does_not_wake_before_it_is() -> None:
    assert wake(running(11, NOW - timedelta(seconds=1))) == T0 + 11 * M
