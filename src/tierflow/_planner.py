"""Which windows are due, and how they are grouped into queries. Pure: `now` is an argument.

A window is due once `now >= stop + offset`, it starts at or after the job's first window, and the
ledger does not already hold it as done (succeeded or skipped) or as running under a live lease.
Consecutive due windows of equal length are coalesced into one query covering at most `chunk`:
aggregation stays per window inside it (the bucket is the window), so the result is the same as
running each window alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from tierflow._state import LedgerEntry
from tierflow._state._rules import available_at
from tierflow._windows import EPOCH, IntervalSchedule, Schedule, Window, iter_windows

__all__ = [
    "Batch",
    "RetryAt",
    "Timeline",
    "coalesce",
    "count_due",
    "due_windows",
    "next_wake",
    "windows_between",
]


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


RetryAt = Callable[[LedgerEntry], datetime]
"""When a failed window may run again (the daemon's growing per-window delay)."""


@dataclass(frozen=True, slots=True)
class Timeline:
    """One job's schedule read at `now`: windows from the one starting at or after `begin` (the
    watermark) are due once `now >= stop + offset`, unless `ledger` (window starts to their
    entries) holds them done; with `retry_at`, a failed window waits until the instant it gives."""

    schedule: Schedule
    begin: datetime
    offset: timedelta
    now: datetime
    ledger: Mapping[datetime, LedgerEntry]
    retry_at: RetryAt | None = None


def _pending(
    entry: LedgerEntry | None,
    now: datetime,
    retry_at: RetryAt | None = None,
    *,
    include_held: bool = False,
) -> bool:
    available = available_at(entry, retry_at, include_held=include_held)
    return available is not None and available <= now


def due_windows(timeline: Timeline, *, include_held: bool = False) -> Iterator[Window]:
    """The timeline's due windows, oldest first, lazily; with `include_held`, windows running
    under a live lease are listed too (for the claim to judge and report)."""
    t = timeline
    first = t.schedule.first_window(t.begin)
    for window in iter_windows(t.schedule, first, t.now - t.offset):
        if _pending(_entry_of(t.ledger, window), t.now, t.retry_at, include_held=include_held):
            yield window


def _entry_of(ledger: Mapping[datetime, LedgerEntry], window: Window) -> LedgerEntry | None:
    """The window's ledger entry; one left by another schedule (an `every` since changed) that
    merely starts at the same instant is not it."""
    entry = ledger.get(window.start)
    return entry if entry is not None and entry.window == window else None


def next_wake(timeline: Timeline) -> datetime:
    """The earliest instant after `now` at which another window of the job may become due: the
    next window's stop + offset, a lease expiring, or a failed window's retry time."""
    t = timeline
    upcoming = t.schedule.window_at(t.now - t.offset)
    first = t.schedule.first_window(t.begin)
    wake = max(upcoming, first).stop + t.offset
    for entry in t.ledger.values():
        available = available_at(entry, t.retry_at)
        if available is None or available >= wake:
            continue
        if available > t.now:
            wake = available
        elif entry.window.stop + t.offset <= t.now:
            # Due already: e.g. another worker's lease expired while this one's pass ran (its
            # claim found the windows held then). Waiting for the next window would leave them.
            return t.now
    return wake


def windows_between(schedule: Schedule, start: datetime, stop: datetime) -> Iterator[Window]:
    """Every window that overlaps `[start, stop)` (none if the range is empty)."""
    if start >= stop:
        return
    window = schedule.window_at(start)
    while window.start < stop:
        yield window
        window = schedule.next_window(window)


def count_due(timeline: Timeline) -> int:
    """How many windows `due_windows` would yield, in O(ledger) time for interval schedules."""
    schedule = timeline.schedule
    if not isinstance(schedule, IntervalSchedule):
        return sum(1 for _ in due_windows(timeline))
    first = schedule.first_window(timeline.begin)
    until = timeline.now - timeline.offset
    total = max(0, (until - first.start) // schedule.every) if until >= first.stop else 0
    settled = sum(
        1
        for start, entry in timeline.ledger.items()
        if first.start <= start
        and start + schedule.every <= until
        and entry.window == Window(start, start + schedule.every)
        and (start - first.start) % schedule.every == timedelta(0)
        and not _pending(entry, timeline.now, timeline.retry_at)
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
