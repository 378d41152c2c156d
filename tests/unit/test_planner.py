"""The planner: which windows are due, how many, and how they are grouped into batches.

Expected windows come from a brute-force model written here: a regular schedule is
`EPOCH + phase + k * every`, and a window is due by the rules of the module docstring.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierflow._planner import (
    Batch,
    Coalescer,
    RetryAt,
    Timeline,
    coalesce,
    coalesce_runs,
    count_due,
    due_runs,
    due_windows,
    windows_between,
)
from tierflow._state import LedgerEntry, RunStatus
from tierflow._windows import CronSchedule, IntervalSchedule, Schedule, Window

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY = datetime(2026, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)


def at(hours: float = 0, minutes: float = 0, seconds: float = 0) -> datetime:
    return DAY + timedelta(hours=hours, minutes=minutes, seconds=seconds)


_UNSET = datetime.min.replace(tzinfo=UTC)


def entry(
    window: Window,
    status: RunStatus,
    *,
    lease: datetime | None = None,
    finished_at: datetime | None = _UNSET,
    attempts: int = 1,
) -> LedgerEntry:
    if finished_at is _UNSET:
        finished_at = None if status is RunStatus.RUNNING else window.stop
    return LedgerEntry(
        job="j",
        window=window,
        status=status,
        attempts=attempts,
        run_id="r",
        started_at=window.stop,
        finished_at=finished_at,
        lease_expires_at=lease,
        error="boom" if status is RunStatus.FAILED else None,
    )


def ledger_of(*entries: LedgerEntry) -> dict[datetime, LedgerEntry]:
    return {e.window.start: e for e in entries}


def hourly(k: int) -> Window:
    """The k-th hourly window of DAY."""
    return Window(at(k), at(k + 1))


def due(
    schedule: Schedule,
    *,
    begin: datetime,
    now: datetime,
    offset: timedelta = timedelta(0),
    ledger: dict[datetime, LedgerEntry] | None = None,
    retry_at: RetryAt | None = None,
) -> list[Window]:
    kwargs: dict[str, Any] = {"begin": begin, "offset": offset, "now": now}
    kwargs |= {"ledger": ledger or {}, "retry_at": retry_at}
    found = list(due_windows(Timeline(schedule, **kwargs)))
    assert count_due(Timeline(schedule, **kwargs)) == len(found)
    return found


def after_attempts(base: timedelta) -> RetryAt:
    """A retry policy: wait `base` times the attempts so far after the window finished."""

    def retry_at(e: LedgerEntry) -> datetime:
        assert e.finished_at is not None
        return e.finished_at + base * e.attempts

    return retry_at


# --- due_windows by hand -----------------------------------------------------------------------


def test_every_complete_window_from_begin_is_due() -> None:
    assert due(IntervalSchedule(H), begin=at(0), now=at(3)) == [hourly(0), hourly(1), hourly(2)]


def test_nothing_is_due_before_the_first_window_completes() -> None:
    assert due(IntervalSchedule(H), begin=at(0), now=at(0, 59, 59)) == []
    assert due(IntervalSchedule(H), begin=at(5), now=at(1)) == []


def test_offset_delays_a_window_until_stop_plus_offset() -> None:
    schedule, offset = IntervalSchedule(H), 10 * M
    assert due(schedule, begin=at(0), now=at(3, 9, 59), offset=offset) == [hourly(0), hourly(1)]
    assert due(schedule, begin=at(0), now=at(3, 10), offset=offset) == [
        hourly(0),
        hourly(1),
        hourly(2),
    ]


def test_offset_longer_than_the_window() -> None:
    schedule = IntervalSchedule(15 * M)
    windows = due(schedule, begin=at(0), now=at(2), offset=90 * M)
    assert windows == [Window(at(0, 15 * i), at(0, 15 * (i + 1))) for i in range(2)]


def test_begin_mid_window_starts_at_the_next_window() -> None:
    assert due(IntervalSchedule(H), begin=at(0, 30), now=at(3)) == [hourly(1), hourly(2)]


def test_begin_is_the_watermark() -> None:
    assert due(IntervalSchedule(H), begin=at(2), now=at(4)) == [hourly(2), hourly(3)]


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.SKIPPED])
def test_done_windows_are_skipped(status: RunStatus) -> None:
    ledger = ledger_of(entry(hourly(1), status))
    assert due(IntervalSchedule(H), begin=at(0), now=at(3), ledger=ledger) == [
        hourly(0),
        hourly(2),
    ]


@pytest.mark.parametrize("status", [RunStatus.FAILED, RunStatus.ABANDONED])
def test_failed_windows_are_due_again(status: RunStatus) -> None:
    ledger = ledger_of(entry(hourly(1), status))
    assert due(IntervalSchedule(H), begin=at(0), now=at(3), ledger=ledger) == [
        hourly(0),
        hourly(1),
        hourly(2),
    ]


def test_running_windows_with_a_live_lease_are_skipped() -> None:
    ledger = ledger_of(entry(hourly(1), RunStatus.RUNNING, lease=at(3, 0, 1)))
    assert due(IntervalSchedule(H), begin=at(0), now=at(3), ledger=ledger) == [
        hourly(0),
        hourly(2),
    ]


@pytest.mark.parametrize("lease", [None, at(2), at(3)], ids=["no-lease", "expired", "expires-now"])
def test_running_windows_with_an_expired_lease_are_due(lease: datetime | None) -> None:
    ledger = ledger_of(entry(hourly(1), RunStatus.RUNNING, lease=lease))
    assert due(IntervalSchedule(H), begin=at(0), now=at(3), ledger=ledger) == [
        hourly(0),
        hourly(1),
        hourly(2),
    ]


def test_ledger_entries_outside_the_range_change_nothing() -> None:
    ledger = ledger_of(
        entry(Window(at(-1), at(0)), RunStatus.SUCCEEDED),
        entry(hourly(5), RunStatus.SUCCEEDED),
        entry(hourly(6), RunStatus.RUNNING, lease=at(9)),
    )
    assert due(IntervalSchedule(H), begin=at(0), now=at(2), ledger=ledger) == [
        hourly(0),
        hourly(1),
    ]


def test_with_retry_at_a_failed_window_waits_for_its_retry_time() -> None:
    ledger = ledger_of(entry(hourly(1), RunStatus.FAILED, finished_at=at(3, 50), attempts=2))
    retry_at = after_attempts(5 * M)  # finished 03:50, 2 attempts: may run again from 04:00
    schedule = IntervalSchedule(H)
    before = due(schedule, begin=at(0), now=at(3, 59, 59), ledger=ledger, retry_at=retry_at)
    assert before == [hourly(0), hourly(2)]
    after = due(schedule, begin=at(0), now=at(4), ledger=ledger, retry_at=retry_at)
    assert after == [hourly(0), hourly(1), hourly(2), hourly(3)]


def test_retry_at_leaves_other_entries_alone() -> None:
    ledger = ledger_of(
        entry(hourly(0), RunStatus.ABANDONED, finished_at=None),
        entry(hourly(1), RunStatus.RUNNING, lease=at(2)),
        entry(hourly(2), RunStatus.SUCCEEDED),
    )
    windows = due(
        IntervalSchedule(H), begin=at(0), now=at(3), ledger=ledger, retry_at=after_attempts(H * 9)
    )
    assert windows == [hourly(0), hourly(1)]


def test_cron_windows() -> None:
    schedule = CronSchedule("30 * * * *")
    ledger = ledger_of(entry(Window(at(1, 30), at(2, 30)), RunStatus.SUCCEEDED))
    assert due(schedule, begin=at(0), now=at(4), offset=10 * M, ledger=ledger) == [
        Window(at(0, 30), at(1, 30)),
        Window(at(2, 30), at(3, 30)),
    ]


def test_due_windows_is_lazy() -> None:
    windows = due_windows(
        Timeline(
            IntervalSchedule(timedelta(seconds=1)),
            begin=EPOCH,
            offset=timedelta(0),
            now=datetime(9000, 1, 1, tzinfo=UTC),
            ledger={},
        )
    )
    assert next(windows) == Window(EPOCH, EPOCH + timedelta(seconds=1))


def test_count_due_ignores_entries_off_the_schedule() -> None:
    ledger = ledger_of(
        *(entry(Window(at(0, 5 * i), at(0, 5 * i + 5)), RunStatus.SUCCEEDED) for i in range(12))
    )
    kwargs = {"begin": at(0), "offset": timedelta(0), "now": at(1), "ledger": ledger}
    assert list(due_windows(Timeline(IntervalSchedule(H), **kwargs))) == [hourly(0)]  # type: ignore[arg-type]
    assert count_due(Timeline(IntervalSchedule(H), **kwargs)) == 1  # type: ignore[arg-type]


# --- due_windows and count_due against a brute-force model -------------------------------------


@dataclass(frozen=True)
class Regular:
    """A schedule whose windows are `[EPOCH + phase + k*every, … + every)`, and its model."""

    schedule: Schedule
    every: timedelta
    phase: timedelta = timedelta(0)

    def window(self, k: int) -> Window:
        start = EPOCH + self.phase + k * self.every
        return Window(start, start + self.every)

    def index_at_or_after(self, moment: datetime) -> int:
        return -(-(moment - EPOCH - self.phase) // self.every)


def model_due(
    regular: Regular,
    begin: datetime,
    offset: timedelta,
    now: datetime,
    ledger: dict[datetime, LedgerEntry],
    retry_delay: timedelta | None = None,
) -> list[Window]:
    """Due windows by the rules; with `retry_delay`, a failed or abandoned window that finished
    waits `retry_delay * attempts` after it finished."""
    result = []
    k = regular.index_at_or_after(begin)
    while (window := regular.window(k)).stop + offset <= now:
        found = ledger.get(window.start)
        live = (
            found is not None
            and found.status is RunStatus.RUNNING
            and found.lease_expires_at is not None
            and found.lease_expires_at > now
        )
        done = found is not None and found.status in (RunStatus.SUCCEEDED, RunStatus.SKIPPED)
        waiting = (
            retry_delay is not None
            and found is not None
            and found.status in (RunStatus.FAILED, RunStatus.ABANDONED)
            and found.finished_at is not None
            and found.finished_at + retry_delay * found.attempts > now
        )
        if not (live or done or waiting):
            result.append(window)
        k += 1
    return result


INTERVALS = [timedelta(seconds=s) for s in (1, 7, 60, 300, 3600, 5400, 86400, 7 * 86400)]
REGULARS = [Regular(IntervalSchedule(every), every) for every in INTERVALS] + [
    Regular(CronSchedule("30 * * * *"), H, 30 * M),
    Regular(CronSchedule("*/20 * * * *"), 20 * M),
    Regular(CronSchedule("0 */6 * * *"), 6 * H),
    Regular(CronSchedule("15 3 * * *"), timedelta(days=1), 3 * H + 15 * M),
]
STATUSES = list(RunStatus)


@dataclass(frozen=True)
class Planning:
    regular: Regular
    begin: datetime
    offset: timedelta
    now: datetime
    ledger: dict[datetime, LedgerEntry]
    retry_delay: timedelta | None


@st.composite
def planning_inputs(draw: st.DrawFn, regulars: list[Regular]) -> Planning:
    regular = draw(st.sampled_from(regulars))
    every = regular.every

    def some_windows(low: int, high: int) -> timedelta:
        """A whole number of windows in [low, high], sometimes plus a fraction of one."""
        fraction = draw(st.sampled_from([0, 0, draw(st.integers(1, 999))]))
        return draw(st.integers(low, high)) * every + every * fraction / 1000

    # Somewhere in 2001 … 2033, on a window boundary or not.
    begin = EPOCH + timedelta(seconds=draw(st.integers(10**9, 2 * 10**9)))
    if draw(st.booleans()):
        begin = regular.window(regular.index_at_or_after(begin)).start
    offset = some_windows(0, 3)
    now = begin + some_windows(-2, 30)
    first = regular.index_at_or_after(begin)
    ledger = {}
    for k in range(first - 3, first + 35):
        status = draw(st.sampled_from([None, None, *STATUSES]))
        if status is None:
            continue
        window = regular.window(k)
        lease, attempts = None, draw(st.integers(1, 4))
        finished: datetime | None = _UNSET
        if status is RunStatus.RUNNING:
            lease = draw(st.sampled_from([None, now - every, now, now + M, now + 2 * every]))
        elif status in (RunStatus.FAILED, RunStatus.ABANDONED):
            finished = draw(st.sampled_from([None, now, now - M, now - 10 * M, now - 10 * H]))
        ledger[window.start] = entry(
            window, status, lease=lease, finished_at=finished, attempts=attempts
        )
    retry_delay = draw(st.sampled_from([None, M, 5 * M, H]))
    return Planning(regular, begin, offset, now, ledger, retry_delay)


@settings(max_examples=200, deadline=None)
@given(planning_inputs(REGULARS))
def test_due_windows_match_the_model(p: Planning) -> None:
    retry_at = None if p.retry_delay is None else after_attempts(p.retry_delay)
    kwargs: dict[str, Any] = {"begin": p.begin, "offset": p.offset, "now": p.now}
    kwargs |= {"ledger": p.ledger, "retry_at": retry_at}
    found = list(due_windows(Timeline(p.regular.schedule, **kwargs)))
    assert found == model_due(p.regular, p.begin, p.offset, p.now, p.ledger, p.retry_delay)
    assert count_due(Timeline(p.regular.schedule, **kwargs)) == len(found)


# --- windows_between ---------------------------------------------------------------------------


def test_windows_between_covers_every_overlapping_window() -> None:
    schedule = IntervalSchedule(H)
    assert list(windows_between(schedule, at(0, 30), at(2, 30))) == [
        hourly(0),
        hourly(1),
        hourly(2),
    ]
    assert list(windows_between(schedule, at(1), at(3))) == [hourly(1), hourly(2)]
    assert list(windows_between(schedule, at(1), at(1, 0, 1))) == [hourly(1)]


def test_windows_between_cron() -> None:
    schedule = CronSchedule("30 * * * *")
    assert list(windows_between(schedule, at(1), at(2, 31))) == [
        Window(at(0, 30), at(1, 30)),
        Window(at(1, 30), at(2, 30)),
        Window(at(2, 30), at(3, 30)),
    ]


def test_windows_between_an_empty_range_is_empty() -> None:
    assert list(windows_between(IntervalSchedule(H), at(0, 30), at(0, 30))) == []


@given(st.sampled_from(INTERVALS), st.integers(0, 10**7), st.integers(1, 10**6))
def test_windows_between_matches_overlap(every: timedelta, start_s: int, span: int) -> None:
    start = DAY + timedelta(seconds=start_s)
    stop = start + span * every / 10**5  # up to ten windows, any fraction of one
    found = list(windows_between(IntervalSchedule(every), start, stop))
    regular = Regular(IntervalSchedule(every), every)
    first = regular.index_at_or_after(start + timedelta(microseconds=1)) - 1
    expected = []
    k = first
    while (window := regular.window(k)).start < stop:
        if window.stop > start:
            expected.append(window)
        k += 1
    assert found == expected


# --- Batch -------------------------------------------------------------------------------------


def test_batch_range_every_and_offset() -> None:
    batch = Batch((hourly(2), hourly(3)))
    assert batch.range == Window(at(2), at(4))
    assert batch.every == H
    assert batch.offset == timedelta(0)


@pytest.mark.parametrize(
    ("window", "offset"),
    [
        (Window(at(0, 30), at(1, 30)), 30 * M),
        (Window(at(6), at(30)), 6 * H),
        # 2026-03-02 is a Monday; 1970-01-01 was a Thursday, four days after a Monday.
        (Window(at(24), at(24 * 8)), timedelta(days=4)),
        (Window(EPOCH - 30 * M, EPOCH + 30 * M), 30 * M),
        (Window(EPOCH, EPOCH + 7 * M), timedelta(0)),
    ],
)
def test_batch_offset_by_hand(window: Window, offset: timedelta) -> None:
    assert Batch((window,)).offset == offset


def test_empty_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one window"):
        Batch(())


@given(st.integers(-(10**7), 10**7), st.sampled_from(INTERVALS))
def test_batch_offset_places_buckets_on_the_windows(start_s: int, every: timedelta) -> None:
    start = DAY + timedelta(seconds=start_s)
    offset = Batch((Window(start, start + every),)).offset
    assert timedelta(0) <= offset < every
    assert (start - EPOCH - offset) % every == timedelta(0)


# --- coalesce ----------------------------------------------------------------------------------


def flatten(batches: Iterable[Batch]) -> list[Window]:
    return [window for batch in batches for window in batch.windows]


@st.composite
def window_runs(draw: st.DrawFn) -> list[Window]:
    """Ordered windows with random gaps and lengths, as due_windows might yield after a change
    of schedule or around done windows."""
    lengths = [timedelta(minutes=m) for m in (1, 5, 15, 60)]
    start = DAY + timedelta(minutes=draw(st.integers(0, 600)))
    windows = []
    for _ in range(draw(st.integers(0, 30))):
        start += draw(st.sampled_from([timedelta(0)] * 3 + lengths))
        length = draw(st.sampled_from(lengths))
        windows.append(Window(start, start + length))
        start += length
    return windows


@settings(max_examples=300)
@given(window_runs(), st.integers(1, 240).map(lambda m: timedelta(minutes=m)))
def test_coalesce_properties(windows: list[Window], chunk: timedelta) -> None:
    batches = list(coalesce(iter(windows), chunk))
    assert flatten(batches) == windows
    for batch in batches:
        assert all(w.length == batch.every for w in batch.windows)
        assert all(a.stop == b.start for a, b in pairwise(batch.windows))
        assert batch.range.length <= chunk or len(batch.windows) == 1
    for before, after in pairwise(batches):
        mergeable = before.range.stop == after.range.start and before.every == after.every
        if mergeable:
            # Only the chunk limit may have split them.
            assert after.windows[0].stop - before.range.start > chunk


def test_coalesce_by_hand() -> None:
    quarter = [Window(at(0, 15 * i), at(0, 15 * (i + 1))) for i in range(6)]
    batches = list(coalesce(quarter, H))
    assert [b.windows for b in batches] == [tuple(quarter[:4]), tuple(quarter[4:])]


def test_coalesce_never_merges_across_a_gap_or_a_length_change() -> None:
    windows = [hourly(0), hourly(2), Window(at(3), at(3, 30)), Window(at(3, 30), at(4))]
    batches = list(coalesce(windows, timedelta(days=1)))
    assert [b.windows for b in batches] == [
        (hourly(0),),
        (hourly(2),),
        (Window(at(3), at(3, 30)), Window(at(3, 30), at(4))),
    ]


def test_a_window_longer_than_chunk_is_a_batch_of_its_own() -> None:
    windows = [Window(at(0), at(24)), Window(at(24), at(48))]
    assert [b.windows for b in coalesce(windows, H)] == [(windows[0],), (windows[1],)]


@given(st.sampled_from(INTERVALS), st.integers(0, 20))
def test_chunk_equal_to_every_gives_one_window_per_batch(every: timedelta, n: int) -> None:
    windows = [Window(DAY + k * every, DAY + (k + 1) * every) for k in range(n)]
    batches = list(coalesce(windows, every))
    assert [b.windows for b in batches] == [(w,) for w in windows]


def test_coalesce_of_nothing_is_nothing() -> None:
    assert list(coalesce([], H)) == []


# --- batches held as a first window and a count; due runs a page of the ledger at a time ---------


def test_a_batch_is_its_first_window_and_a_count() -> None:
    windows = tuple(Window(at(0, 15 * i), at(0, 15 * (i + 1))) for i in range(4))
    batch = Batch(windows)
    assert (batch.first, batch.count) == (windows[0], 4)
    assert batch.windows == windows
    assert batch == Batch.span(windows[0], 4)
    assert (batch.range, batch.stop, batch.every) == (Window(at(0), at(1)), at(1), 15 * M)
    head, rest = batch.head(3)
    assert (head.windows, rest and rest.windows) == (windows[:3], windows[3:])
    assert batch.head(4) == (batch, None)


@pytest.mark.parametrize(
    "windows",
    [
        [hourly(0), hourly(2)],  # a gap
        [hourly(0), Window(at(1), at(1, 30))],  # another length
    ],
)
def test_a_batch_of_windows_not_consecutive_or_of_two_lengths_is_refused(
    windows: list[Window],
) -> None:
    with pytest.raises(ValueError, match="consecutive and of one length"):
        Batch(windows)


def paged_runs(timeline: Timeline, page: timedelta, *, include_held: bool = False) -> list[Batch]:
    """`due_runs` a page of the ledger at a time, each page seeing only its own entries."""
    runs: list[Batch] = []
    low, stop = timeline.begin, timeline.now - timeline.offset
    while low < stop:
        high = min(low + page, stop)
        ledger = {s: e for s, e in timeline.ledger.items() if low <= s < high}
        mine = Timeline(
            timeline.schedule,
            timeline.begin,
            timeline.offset,
            timeline.now,
            ledger,
            timeline.retry_at,
        )
        runs += due_runs(mine, low, high, include_held=include_held)
        low = high
    return runs


@settings(max_examples=200, deadline=None)
@given(
    planning_inputs(REGULARS),
    st.integers(1, 12),
    st.sampled_from([timedelta(seconds=1), M, 20 * M, H, 4 * H, timedelta(days=2)]),
)
def test_paged_runs_coalesce_to_the_batches_of_the_due_windows(
    p: Planning, page_windows: int, chunk: timedelta
) -> None:
    retry_at = None if p.retry_delay is None else after_attempts(p.retry_delay)
    timeline = Timeline(p.regular.schedule, p.begin, p.offset, p.now, p.ledger, retry_at)
    expected = model_due(p.regular, p.begin, p.offset, p.now, p.ledger, p.retry_delay)

    runs = paged_runs(timeline, page_windows * p.regular.every)

    # The runs hold exactly the due windows, none empty; cut only at page edges or gaps.
    assert flatten(runs) == expected
    # However the pages cut them, the batches are those of the windows in one go.
    assert list(coalesce_runs(runs, chunk)) == list(coalesce(expected, chunk))


def test_due_runs_with_held_windows_lists_them_too() -> None:
    ledger = ledger_of(entry(hourly(1), RunStatus.RUNNING, lease=at(9)))
    timeline = Timeline(IntervalSchedule(H), at(0), timedelta(0), at(3), ledger)
    assert flatten(due_runs(timeline, at(0), at(3))) == [hourly(0), hourly(2)]
    assert list(due_runs(timeline, at(0), at(3), include_held=True)) == [Batch.span(hourly(0), 3)]


def test_due_runs_of_a_year_of_minutes_take_a_step_per_run_not_per_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    year = Timeline(IntervalSchedule(M), DAY, timedelta(0), DAY + timedelta(days=365), {})

    def one_by_one(*_: object) -> Window:
        raise AssertionError("an interval schedule's due runs are counted, not walked")

    monkeypatch.setattr(IntervalSchedule, "next_window", one_by_one)
    (run,) = due_runs(year, DAY, year.now)
    assert (run.first, run.count) == (Window(DAY, DAY + M), 525_600)
    batches = list(coalesce_runs([run], H))
    assert len(batches) == 8_760
    assert all(b.count == 60 for b in batches)
    assert batches[-1].stop == year.now


def test_the_coalescer_carries_a_short_batch_over_to_the_next_page() -> None:
    coalescer = Coalescer(H)
    quarter = 15 * M
    # Five quarters in one page, three in the next: batches of four, as in one go.
    first = list(coalescer.add(Batch.span(Window(at(0), at(0) + quarter), 5)))
    assert [b.range for b in first] == [Window(at(0), at(1))]
    second = list(coalescer.add(Batch.span(Window(at(1, 15), at(1, 30)), 3)))
    assert [b.range for b in second] == [Window(at(1), at(2))]
    assert list(coalescer.close()) == []
    # A run after a gap closes the open batch.
    three, five = Batch.span(Window(at(3), at(3, 15)), 1), Batch.span(Window(at(5), at(5, 15)), 1)
    assert list(coalescer.add(three)) == []
    assert list(coalescer.add(five)) == [three]
    assert list(coalescer.close()) == [five]
