"""UTC-aligned windows and the schedules that produce them. Pure: no clock, no I/O.

A window is closed at the start and open at the end, `[start, stop)`. Interval schedules align
windows to the Unix epoch; cron schedules put a window between each pair of consecutive ticks,
evaluated in UTC (so there is no daylight-saving time to skip or repeat).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from croniter import CroniterBadDateError, croniter

__all__ = [
    "EPOCH",
    "CronSchedule",
    "IntervalSchedule",
    "Schedule",
    "Window",
    "ensure_utc",
    "to_micros",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def ensure_utc(moment: datetime) -> datetime:
    """Return `moment` in UTC; refuse naive datetimes rather than guess their zone."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()} has no time zone; give it in UTC")
    return moment.astimezone(UTC)


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch (exact, unlike `timestamp()`)."""
    return (ensure_utc(moment) - EPOCH) // _MICRO


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True, order=True, slots=True)
class Window:
    """A half-open time range `[start, stop)` in UTC."""

    start: datetime
    stop: datetime

    def __post_init__(self) -> None:
        # The common case first, cheaply: both already in UTC (a catch-up makes a window each).
        if self.start.tzinfo is UTC and self.stop.tzinfo is UTC:
            if self.start >= self.stop:
                raise ValueError(f"window start {self.start} is not before its stop {self.stop}")
            return
        if ensure_utc(self.start) >= ensure_utc(self.stop):
            raise ValueError(f"window start {self.start} is not before its stop {self.stop}")

    @property
    def length(self) -> timedelta:
        return self.stop - self.start

    def __str__(self) -> str:
        return f"[{isoformat(self.start)}, {isoformat(self.stop)})"


def isoformat(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, keeping sub-second digits only when there are some."""
    text = ensure_utc(moment).isoformat()
    return text.replace("+00:00", "Z")


class Schedule(Protocol):
    """Produces a job's windows. Implementations are pure and deterministic."""

    def first_window(self, not_before: datetime) -> Window:
        """The earliest window whose start is at or after `not_before`."""
        ...

    def next_window(self, window: Window) -> Window:
        """The window that starts where `window` stops."""
        ...

    def window_at(self, moment: datetime) -> Window:
        """The window that contains `moment`."""
        ...


@dataclass(frozen=True, slots=True)
class IntervalSchedule:
    """Windows of a fixed length, aligned to the Unix epoch in UTC."""

    every: timedelta

    def __post_init__(self) -> None:
        if self.every <= timedelta(0) or self.every % timedelta(seconds=1):
            raise ValueError(
                f"window length must be a positive whole number of seconds: {self.every}"
            )

    def window_at(self, moment: datetime) -> Window:
        start = EPOCH + ((ensure_utc(moment) - EPOCH) // self.every) * self.every
        return Window(start, start + self.every)

    def first_window(self, not_before: datetime) -> Window:
        window = self.window_at(not_before)
        return window if window.start == ensure_utc(not_before) else self.next_window(window)

    def next_window(self, window: Window) -> Window:
        return Window(window.stop, window.stop + self.every)

    def count(self, begin: datetime, end: datetime) -> int:
        """How many windows start in `[begin, end)`, `begin` being a window boundary."""
        if end <= begin:
            return 0
        return -(-(end - begin) // self.every)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A window between each pair of consecutive ticks of a five-field cron expression, in UTC."""

    expression: str

    def __post_init__(self) -> None:
        if len(self.expression.split()) != 5 or not croniter.is_valid(self.expression):
            raise ValueError(f"invalid cron expression {self.expression!r}: expected five fields")
        try:
            self._tick_after(EPOCH)
        except CroniterBadDateError:
            raise ValueError(f"cron expression {self.expression!r} never fires") from None

    def _tick_after(self, moment: datetime) -> datetime:
        tick: datetime = croniter(self.expression, ensure_utc(moment)).get_next(datetime)
        return tick.astimezone(UTC)

    def _tick_at_or_before(self, moment: datetime) -> datetime:
        utc = ensure_utc(moment)
        if croniter.match(self.expression, utc) and utc.second == 0 and utc.microsecond == 0:
            return utc
        tick: datetime = croniter(self.expression, utc).get_prev(datetime)
        return tick.astimezone(UTC)

    def window_at(self, moment: datetime) -> Window:
        start = self._tick_at_or_before(moment)
        return Window(start, self._tick_after(start))

    def first_window(self, not_before: datetime) -> Window:
        window = self.window_at(not_before)
        return window if window.start == ensure_utc(not_before) else self.next_window(window)

    def next_window(self, window: Window) -> Window:
        return Window(window.stop, self._tick_after(window.stop))


def iter_windows(schedule: Schedule, first: Window, until: datetime) -> Iterator[Window]:
    """Windows from `first` onwards whose stop is at or before `until`, lazily."""
    window = first
    while window.stop <= until:
        yield window
        window = schedule.next_window(window)
