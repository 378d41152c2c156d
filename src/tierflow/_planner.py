"""Which windows are due, and how they are grouped into queries. Pure: `now` is an argument.

A window is due once `now >= stop + offset`, it starts at or after the job's first window, and the
ledger does not already hold it as done (succeeded or skipped) or as running under a live lease.
Consecutive due windows of equal length are coalesced into one query covering at most `chunk`:
aggregation stays per window inside it (the bucket is the window), so the result is the same as
running each window alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from tierflow._state import LedgerEntry, RunStatus
from tierflow._windows import EPOCH, IntervalSchedule, Schedule, Window, iter_windows

__all__ = ["Batch", "coalesce", "count_due", "due_windows", "windows_between"]


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive windows of one length that one query covers."""

    windows: tuple[Window, ...]

    def __post_init__(self) -> None:
        if not self.windows:
            raise ValueError("a batch holds at least one window")

    @property
    def range(self) -> Window:
        return Window(self.windows[0].start, self.windows[-1].stop)

    @property
    def every(self) -> timedelta:
        return self.windows[0].length

    @property
    def offset(self) -> timedelta:
        """Where buckets of length `every` start, relative to the epoch, to match the windows."""
        return (self.windows[0].start - EPOCH) % self.every


def _pending(entry: LedgerEntry | None, now: datetime) -> bool:
    if entry is None:
        return True
    if entry.status.done:
        return False
    if entry.status is RunStatus.RUNNING:
        return entry.lease_expires_at is None or entry.lease_expires_at <= now
    return True


def due_windows(
    schedule: Schedule,
    *,
    begin: datetime,
    offset: timedelta,
    now: datetime,
    ledger: Mapping[datetime, LedgerEntry],
) -> Iterator[Window]:
    """Windows from the one starting at or after `begin` (the watermark) that are due at `now`,
    oldest first, lazily. `ledger` maps window starts to their entries."""
    first = schedule.first_window(begin)
    for window in iter_windows(schedule, first, now - offset):
        if _pending(ledger.get(window.start), now):
            yield window


def windows_between(schedule: Schedule, start: datetime, stop: datetime) -> Iterator[Window]:
    """Every window that overlaps `[start, stop)`."""
    window = schedule.window_at(start)
    while window.start < stop:
        yield window
        window = schedule.next_window(window)


def count_due(
    schedule: Schedule,
    *,
    begin: datetime,
    offset: timedelta,
    now: datetime,
    ledger: Mapping[datetime, LedgerEntry],
) -> int:
    """How many windows `due_windows` would yield, in O(ledger) time for interval schedules."""
    if not isinstance(schedule, IntervalSchedule):
        return sum(
            1 for _ in due_windows(schedule, begin=begin, offset=offset, now=now, ledger=ledger)
        )
    first = schedule.first_window(begin)
    until = now - offset
    total = max(0, (until - first.start) // schedule.every) if until >= first.stop else 0
    settled = sum(
        1
        for start, entry in ledger.items()
        if first.start <= start and start + schedule.every <= until and not _pending(entry, now)
    )
    return total - settled


def coalesce(windows: Iterable[Window], chunk: timedelta) -> Iterator[Batch]:
    """Group consecutive, contiguous windows of equal length into batches spanning at most
    `chunk` (a window longer than `chunk` forms a batch of its own)."""
    current: list[Window] = []
    for window in windows:
        if current and (
            window.start != current[-1].stop
            or window.length != current[0].length
            or window.stop - current[0].start > chunk
        ):
            yield Batch(tuple(current))
            current = []
        current.append(window)
    if current:
        yield Batch(tuple(current))
