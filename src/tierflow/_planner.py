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
from itertools import pairwise

from tierflow._state import LedgerEntry
from tierflow._state._rules import available_at
from tierflow._windows import EPOCH, IntervalSchedule, Schedule, Window, iter_windows

__all__ = [
    "Batch",
    "Coalescer",
    "RetryAt",
    "Timeline",
    "coalesce",
    "coalesce_runs",
    "count_due",
    "due_runs",
    "due_windows",
    "next_wake",
    "windows_between",
]


@dataclass(frozen=True, slots=True, init=False)
class Batch:
    """Consecutive windows of one length: those one query covers (or, in a plan, a run of windows
    `max_catchup` skips). Held as its first window and a count, so a batch of sixty windows
    costs what one does; `windows` lists them."""

    first: Window
    count: int

    def __init__(self, windows: Iterable[Window]) -> None:
        items = tuple(windows)
        if not items:
            raise ValueError("a batch holds at least one window")
        for before, after in pairwise(items):
            if after.start != before.stop or after.length != items[0].length:
                raise ValueError(
                    f"a batch's windows are consecutive and of one length: {before} then {after}"
                )
        object.__setattr__(self, "first", items[0])
        object.__setattr__(self, "count", len(items))

    @classmethod
    def span(cls, first: Window, count: int) -> Batch:
        """`count` consecutive windows of `first`'s length, from `first` on."""
        if count < 1:
            raise ValueError("a batch holds at least one window")
        batch = cls.__new__(cls)
        object.__setattr__(batch, "first", first)
        object.__setattr__(batch, "count", count)
        return batch

    @property
    def windows(self) -> tuple[Window, ...]:
        windows = [self.first]
        for _ in range(1, self.count):
            stop = windows[-1].stop
            windows.append(Window(stop, stop + self.every))
        return tuple(windows)

    @property
    def range(self) -> Window:
        return Window(self.first.start, self.stop)

    @property
    def stop(self) -> datetime:
        return self.first.start + self.count * self.every

    @property
    def every(self) -> timedelta:
        return self.first.length

    @property
    def offset(self) -> timedelta:
        """Where buckets of length `every` start, relative to the epoch, to match the windows."""
        return (self.first.start - EPOCH) % self.every

    def head(self, count: int) -> tuple[Batch, Batch | None]:
        """The first `count` windows (at least one), and the rest (None if none is left)."""
        if count >= self.count:
            return self, None
        rest = Window(
            self.first.start + count * self.every, self.first.start + (count + 1) * self.every
        )
        return Batch.span(self.first, count), Batch.span(rest, self.count - count)

    def follows(self, other: Batch) -> bool:
        """Whether this batch's windows continue `other`'s: they start where it stops, as long."""
        return self.first.start == other.stop and self.every == other.every


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


def due_runs(
    timeline: Timeline, since: datetime, until: datetime, *, include_held: bool = False
) -> Iterator[Batch]:
    """The timeline's due windows (as `due_windows` has them) that start in `[since, until)`, as
    runs of consecutive windows of one length, oldest first, lazily. `timeline.ledger` need hold
    only the entries of windows starting there (a page of the ledger). For an interval schedule
    this costs a step per ledger entry and per run, not per window."""
    t = timeline
    first = t.schedule.first_window(max(t.begin, since))
    if isinstance(t.schedule, IntervalSchedule):
        yield from _interval_runs(t, first, until, include_held=include_held)
        return
    run: Batch | None = None
    for window in iter_windows(t.schedule, first, t.now - t.offset):
        if window.start >= until:
            break
        if not _pending(_entry_of(t.ledger, window), t.now, t.retry_at, include_held=include_held):
            if run is not None:
                yield run
            run = None
        elif run is not None and window.start == run.stop and window.length == run.every:
            run = Batch.span(run.first, run.count + 1)
        else:
            if run is not None:
                yield run
            run = Batch.span(window, 1)
    if run is not None:
        yield run


def _interval_runs(
    t: Timeline, first: Window, until: datetime, *, include_held: bool
) -> Iterator[Batch]:
    """`due_runs` on the grid of an interval schedule: the windows from `first` that start
    before `until` and stop by `now - offset`, less those the ledger holds as not due."""
    every = first.length
    if first.start >= until:
        return
    count = min(-(-(until - first.start) // every), (t.now - t.offset - first.start) // every)
    if count <= 0:
        return
    settled = sorted(
        index
        for start, entry in t.ledger.items()
        if 0 <= (index := (start - first.start) // every) < count
        and start == first.start + index * every
        and entry.window.stop == start + every
        and not _pending(entry, t.now, t.retry_at, include_held=include_held)
    )
    index = 0
    for blocked in [*settled, count]:
        if blocked > index:
            start = first.start + index * every
            yield Batch.span(Window(start, start + every), blocked - index)
        index = blocked + 1


class Coalescer:
    """Cuts runs of consecutive windows into batches that one query each covers, spanning at
    most `chunk` (a window longer than `chunk` is a batch of its own). Runs arrive in order,
    possibly a page at a time: a run that continues the last one extends it, so the batches are
    those `coalesce` makes of the same windows in one go."""

    def __init__(self, chunk: timedelta) -> None:
        self.chunk = chunk
        self._open: Batch | None = None

    def add(self, run: Batch) -> Iterator[Batch]:
        """The batches `run` completes (the last, maybe short, one stays open)."""
        if self._open is not None and run.follows(self._open):
            run = Batch.span(self._open.first, self._open.count + run.count)
        elif self._open is not None:
            yield self._open
        per = max(1, self.chunk // run.every)
        rest: Batch | None = run
        while rest is not None and rest.count >= per:
            batch, rest = rest.head(per)
            yield batch
        self._open = rest

    def close(self) -> Iterator[Batch]:
        """The last batch, if one is open."""
        if self._open is not None:
            yield self._open
        self._open = None


def coalesce_runs(runs: Iterable[Batch], chunk: timedelta) -> Iterator[Batch]:
    """Runs of consecutive windows as batches spanning at most `chunk`, lazily."""
    coalescer = Coalescer(chunk)
    for run in runs:
        yield from coalescer.add(run)
    yield from coalescer.close()


def coalesce(windows: Iterable[Window], chunk: timedelta) -> Iterator[Batch]:
    """Group consecutive, contiguous windows of equal length into batches spanning at most
    `chunk` (a window longer than `chunk` forms a batch of its own)."""
    return coalesce_runs((Batch.span(window, 1) for window in windows), chunk)
