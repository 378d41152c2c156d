"""UTC-aligned windows: IntervalSchedule, CronSchedule, Window and iter_windows."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierflow._windows import (
    EPOCH,
    CronSchedule,
    IntervalSchedule,
    Window,
    ensure_utc,
    iter_windows,
    to_micros,
)

BERLIN = ZoneInfo("Europe/Berlin")
# Europe/Berlin's 2026 transitions, in UTC: spring forward at 01:00Z on 29 March (02:00 local
# becomes 03:00), fall back at 01:00Z on 25 October (03:00 local becomes 02:00 again).
SPRING_FORWARD = datetime(2026, 3, 29, 1, tzinfo=UTC)
FALL_BACK = datetime(2026, 10, 25, 1, tzinfo=UTC)
MICRO = timedelta(microseconds=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def is_utc(moment: datetime) -> bool:
    return moment.utcoffset() == timedelta(0)


# ---------------------------------------------------------------------------------------------
# Window


def test_window_is_half_open_and_has_a_length() -> None:
    window = Window(utc(2026, 11, 1), utc(2026, 11, 1, 0, 5))
    assert window.length == timedelta(minutes=5)
    assert str(window) == "[2026-11-01T00:00:00Z, 2026-11-01T00:05:00Z)"


@pytest.mark.parametrize(
    ("start", "stop"),
    [
        (utc(2026, 11, 1), utc(2026, 11, 1)),  # empty
        (utc(2026, 11, 1, 1), utc(2026, 11, 1)),  # backwards
    ],
)
def test_window_refuses_empty_or_backwards(start: datetime, stop: datetime) -> None:
    with pytest.raises(ValueError, match="not before"):
        Window(start, stop)


def test_window_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        Window(datetime(2026, 11, 1), utc(2026, 11, 2))  # noqa: DTZ001 - the point of the test


def test_ensure_utc_converts_and_refuses_naive() -> None:
    berlin_noon = datetime(2026, 7, 1, 12, tzinfo=BERLIN)  # CEST, UTC+2
    converted = ensure_utc(berlin_noon)
    assert converted == utc(2026, 7, 1, 10)
    assert converted.tzinfo is UTC
    with pytest.raises(ValueError, match="naive"):
        ensure_utc(datetime(2026, 7, 1, 12))  # noqa: DTZ001 - the point of the test


def test_to_micros_is_exact() -> None:
    # 2026-11-01 is day 20758 after the epoch; timestamp() would round this through a float.
    moment = utc(2026, 11, 1, 0, 0, 0, 123457)
    assert to_micros(moment) == 20758 * 86400 * 10**6 + 123457
    assert to_micros(utc(1969, 12, 31, 23, 59, 59, 999999)) == -1


# ---------------------------------------------------------------------------------------------
# IntervalSchedule


@pytest.mark.parametrize(
    "every",
    [timedelta(0), timedelta(seconds=-5), timedelta(milliseconds=500), timedelta(seconds=1.5)],
)
def test_interval_refuses_non_positive_or_fractional_lengths(every: timedelta) -> None:
    with pytest.raises(ValueError, match="whole number of seconds"):
        IntervalSchedule(every)


@pytest.mark.parametrize(
    ("every", "moment", "start", "stop"),
    [
        (
            timedelta(minutes=5),
            utc(2026, 11, 1, 10, 7, 33),
            utc(2026, 11, 1, 10, 5),
            utc(2026, 11, 1, 10, 10),
        ),
        (
            timedelta(minutes=5),
            utc(2026, 11, 1, 10, 5),
            utc(2026, 11, 1, 10, 5),
            utc(2026, 11, 1, 10, 10),
        ),
        (
            timedelta(minutes=5),
            utc(2026, 11, 1, 10, 4, 59, 999999),
            utc(2026, 11, 1, 10),
            utc(2026, 11, 1, 10, 5),
        ),
        (timedelta(hours=1), utc(2026, 11, 1, 23, 59), utc(2026, 11, 1, 23), utc(2026, 11, 2)),
        (timedelta(days=1), utc(2026, 11, 1, 13), utc(2026, 11, 1), utc(2026, 11, 2)),
        # 7-day windows align to the epoch, a Thursday, not to Mondays: 2026-11-01 is a Sunday,
        # 20758 days after the epoch; 20758 - 20758 % 7 = 20755 is Thursday 2026-10-29.
        (timedelta(days=7), utc(2026, 11, 1, 13), utc(2026, 10, 29), utc(2026, 11, 5)),
        # 7-hour windows do not align to midnight: 2026-11-01T00Z is hour 498192 = 7*71170 + 2.
        (timedelta(hours=7), utc(2026, 11, 1), utc(2026, 10, 31, 22), utc(2026, 11, 1, 5)),
        # Before the epoch, floor (not truncation towards zero) keeps the alignment.
        (timedelta(hours=1), utc(1969, 12, 31, 23, 30), utc(1969, 12, 31, 23), EPOCH),
    ],
)
def test_interval_window_at(
    every: timedelta, moment: datetime, start: datetime, stop: datetime
) -> None:
    window = IntervalSchedule(every).window_at(moment)
    assert window == Window(start, stop)
    assert is_utc(window.start)
    assert is_utc(window.stop)


def test_interval_window_at_converts_aware_non_utc_moments() -> None:
    schedule = IntervalSchedule(timedelta(minutes=5))
    # 11:07:33 in Berlin in November (CET, UTC+1) is 10:07:33Z.
    window = schedule.window_at(datetime(2026, 11, 1, 11, 7, 33, tzinfo=BERLIN))
    assert window == Window(utc(2026, 11, 1, 10, 5), utc(2026, 11, 1, 10, 10))
    assert is_utc(window.start)
    assert is_utc(window.stop)
    fixed = timezone(timedelta(hours=-3, minutes=-30))
    assert schedule.window_at(datetime(2026, 11, 1, 6, 37, 33, tzinfo=fixed)) == window


def test_interval_refuses_naive_datetimes() -> None:
    schedule = IntervalSchedule(timedelta(minutes=5))
    naive = datetime(2026, 11, 1, 10, 7)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="naive"):
        schedule.window_at(naive)
    with pytest.raises(ValueError, match="naive"):
        schedule.first_window(naive)


def test_interval_first_window_on_a_boundary_starts_there() -> None:
    schedule = IntervalSchedule(timedelta(hours=1))
    assert schedule.first_window(utc(2026, 11, 1, 10)) == Window(
        utc(2026, 11, 1, 10), utc(2026, 11, 1, 11)
    )


@pytest.mark.parametrize(
    "not_before",
    [utc(2026, 11, 1, 10, 0, 0, 1), utc(2026, 11, 1, 10, 30), utc(2026, 11, 1, 10, 59, 59)],
)
def test_interval_first_window_off_a_boundary_is_the_next_one(not_before: datetime) -> None:
    schedule = IntervalSchedule(timedelta(hours=1))
    assert schedule.first_window(not_before) == Window(utc(2026, 11, 1, 11), utc(2026, 11, 1, 12))


def test_interval_first_window_converts_non_utc_not_before() -> None:
    schedule = IntervalSchedule(timedelta(hours=1))
    # 11:00 CET is 10:00Z, a boundary.
    first = schedule.first_window(datetime(2026, 11, 1, 11, tzinfo=BERLIN))
    assert first == Window(utc(2026, 11, 1, 10), utc(2026, 11, 1, 11))


def test_interval_next_window_follows_on() -> None:
    schedule = IntervalSchedule(timedelta(minutes=5))
    window = Window(utc(2026, 11, 1, 23, 55), utc(2026, 11, 2))
    assert schedule.next_window(window) == Window(utc(2026, 11, 2), utc(2026, 11, 2, 0, 5))


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        (utc(2026, 11, 1), 0),  # empty range
        (utc(2026, 10, 31), 0),  # backwards range
        (utc(2026, 11, 1, 0, 0, 0, 1), 1),  # a window starts at begin
        (utc(2026, 11, 1, 0, 5), 1),  # end is exclusive: the window at 00:05 is not counted
        (utc(2026, 11, 1, 0, 15), 3),
        (utc(2026, 11, 1, 0, 15, 1), 4),
        (utc(2026, 11, 2), 288),  # 24 * 12
    ],
)
def test_interval_count(end: datetime, expected: int) -> None:
    assert IntervalSchedule(timedelta(minutes=5)).count(utc(2026, 11, 1), end) == expected


@pytest.mark.parametrize("transition", [SPRING_FORWARD, FALL_BACK])
def test_interval_windows_stay_regular_across_berlin_dst(transition: datetime) -> None:
    schedule = IntervalSchedule(timedelta(hours=1))
    first = schedule.first_window(transition - timedelta(hours=3))
    windows = list(iter_windows(schedule, first, transition + timedelta(hours=3)))
    starts = [transition + timedelta(hours=h) for h in range(-3, 3)]
    assert [w.start for w in windows] == starts
    assert all(w.length == timedelta(hours=1) for w in windows)


def test_berlin_local_times_in_the_repeated_hour_map_to_different_windows() -> None:
    schedule = IntervalSchedule(timedelta(hours=1))
    # 02:30 local happens twice on 2026-10-25: first in CEST (00:30Z), then in CET (01:30Z).
    first = schedule.window_at(datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=0))
    second = schedule.window_at(datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=1))
    assert first == Window(utc(2026, 10, 25, 0), utc(2026, 10, 25, 1))
    assert second == Window(utc(2026, 10, 25, 1), utc(2026, 10, 25, 2))


@pytest.mark.parametrize("transition", [SPRING_FORWARD, FALL_BACK])
def test_daily_windows_are_24_hours_across_berlin_dst(transition: datetime) -> None:
    for schedule in (IntervalSchedule(timedelta(days=1)), CronSchedule("0 0 * * *")):
        window = schedule.window_at(transition)
        assert window == Window(
            transition.replace(hour=0), transition.replace(hour=0) + timedelta(1)
        )
        assert schedule.next_window(window).length == timedelta(hours=24)


# ---------------------------------------------------------------------------------------------
# iter_windows


def test_iter_windows_stops_at_until() -> None:
    schedule = IntervalSchedule(timedelta(hours=1))
    first = Window(utc(2026, 11, 1, 0), utc(2026, 11, 1, 1))
    # until on a stop: the window ending there is included.
    assert [w.start.hour for w in iter_windows(schedule, first, utc(2026, 11, 1, 3))] == [0, 1, 2]
    # until inside a window: that unfinished window is left out.
    assert [w.start.hour for w in iter_windows(schedule, first, utc(2026, 11, 1, 3, 59))] == [
        0,
        1,
        2,
    ]
    # until before the first window ends: nothing.
    assert list(iter_windows(schedule, first, utc(2026, 11, 1, 0, 59))) == []


def test_iter_windows_accepts_non_utc_until() -> None:
    schedule = IntervalSchedule(timedelta(hours=1))
    first = Window(utc(2026, 11, 1, 0), utc(2026, 11, 1, 1))
    until = datetime(2026, 11, 1, 3, tzinfo=BERLIN)  # 02:00Z
    assert [w.start.hour for w in iter_windows(schedule, first, until)] == [0, 1]


def test_iter_windows_is_lazy() -> None:
    schedule = IntervalSchedule(timedelta(seconds=1))
    first = Window(utc(2026, 11, 1), utc(2026, 11, 1, 0, 0, 1))
    # A century of one-second windows: only lazy iteration makes this instant.
    windows = list(islice(iter_windows(schedule, first, utc(2126, 1, 1)), 3))
    assert [w.start.second for w in windows] == [0, 1, 2]


def test_iter_windows_refuses_naive_until() -> None:
    schedule = IntervalSchedule(timedelta(hours=1))
    first = Window(utc(2026, 11, 1, 0), utc(2026, 11, 1, 1))
    naive = datetime(2026, 11, 2)  # noqa: DTZ001 - the point of the test
    # Refused either way; today the error is Python's TypeError for comparing naive with aware.
    with pytest.raises((TypeError, ValueError)):
        list(iter_windows(schedule, first, naive))


def test_iter_windows_with_a_cron_schedule() -> None:
    schedule = CronSchedule("0 0 1 * *")
    first = schedule.first_window(utc(2026, 1, 1))
    windows = list(iter_windows(schedule, first, utc(2027, 1, 1)))
    assert [w.start.month for w in windows] == list(range(1, 13))
    assert windows[-1].stop == utc(2027, 1, 1)


# ---------------------------------------------------------------------------------------------
# CronSchedule


@pytest.mark.parametrize(
    "expression",
    [
        "* * * *",  # four fields
        "0 * * * * *",  # six fields (seconds)
        "61 * * * *",  # minute out of range
        "0 25 * * *",  # hour out of range
        "0 0 * 13 *",  # month out of range
        "@hourly",  # a croniter alias, not five fields
        "every five minutes",
        "",
    ],
)
def test_cron_refuses_invalid_expressions(expression: str) -> None:
    with pytest.raises(ValueError, match="invalid cron expression"):
        CronSchedule(expression)


def test_cron_refuses_an_expression_that_never_fires() -> None:
    with pytest.raises(ValueError, match="never fires"):
        CronSchedule("0 0 30 2 *")


@pytest.mark.parametrize(
    ("moment", "start", "stop"),
    [
        (utc(2026, 11, 1, 10, 7, 33), utc(2026, 11, 1, 10, 5), utc(2026, 11, 1, 10, 10)),
        (utc(2026, 11, 1, 10, 5), utc(2026, 11, 1, 10, 5), utc(2026, 11, 1, 10, 10)),
        # Within the tick's minute but past it: still the window that started at the tick.
        (utc(2026, 11, 1, 10, 5, 0, 1), utc(2026, 11, 1, 10, 5), utc(2026, 11, 1, 10, 10)),
        (utc(2026, 11, 1, 10, 5, 30), utc(2026, 11, 1, 10, 5), utc(2026, 11, 1, 10, 10)),
        (utc(2026, 11, 1, 10, 4, 59, 999999), utc(2026, 11, 1, 10), utc(2026, 11, 1, 10, 5)),
        (utc(2026, 11, 1, 23, 59, 59), utc(2026, 11, 1, 23, 55), utc(2026, 11, 2)),
    ],
)
def test_cron_every_five_minutes(moment: datetime, start: datetime, stop: datetime) -> None:
    window = CronSchedule("*/5 * * * *").window_at(moment)
    assert window == Window(start, stop)
    assert is_utc(window.start)
    assert is_utc(window.stop)


@pytest.mark.parametrize(
    ("moment", "start"),
    [
        (utc(2026, 11, 1, 10, 29, 59, 999999), utc(2026, 11, 1, 9, 30)),
        (utc(2026, 11, 1, 10, 30), utc(2026, 11, 1, 10, 30)),
        (utc(2026, 11, 1, 10, 30, 15), utc(2026, 11, 1, 10, 30)),
        (utc(2026, 11, 1, 10, 45), utc(2026, 11, 1, 10, 30)),
        (utc(2026, 11, 2, 0, 10), utc(2026, 11, 1, 23, 30)),
    ],
)
def test_cron_hourly_at_half_past(moment: datetime, start: datetime) -> None:
    window = CronSchedule("30 * * * *").window_at(moment)
    assert window == Window(start, start + timedelta(hours=1))


def test_cron_first_and_next_window() -> None:
    schedule = CronSchedule("30 * * * *")
    on_tick = schedule.first_window(utc(2026, 11, 1, 10, 30))
    assert on_tick == Window(utc(2026, 11, 1, 10, 30), utc(2026, 11, 1, 11, 30))
    off_tick = schedule.first_window(utc(2026, 11, 1, 10, 30, 0, 1))
    assert off_tick == Window(utc(2026, 11, 1, 11, 30), utc(2026, 11, 1, 12, 30))
    assert schedule.first_window(utc(2026, 11, 1, 10)) == on_tick
    assert schedule.next_window(on_tick) == off_tick


def test_cron_daily() -> None:
    schedule = CronSchedule("0 0 * * *")
    assert schedule.window_at(utc(2026, 11, 1, 13)) == Window(utc(2026, 11, 1), utc(2026, 11, 2))
    # The last day of a leap February.
    assert schedule.window_at(utc(2028, 2, 29, 23, 59)) == Window(utc(2028, 2, 29), utc(2028, 3, 1))


def test_cron_converts_non_utc_and_refuses_naive() -> None:
    schedule = CronSchedule("0 0 * * *")
    # 00:30 on 2 November in Berlin (CET) is 23:30Z on 1 November: the window is 1 November's.
    window = schedule.window_at(datetime(2026, 11, 2, 0, 30, tzinfo=BERLIN))
    assert window == Window(utc(2026, 11, 1), utc(2026, 11, 2))
    assert is_utc(window.start)
    with pytest.raises(ValueError, match="naive"):
        schedule.window_at(datetime(2026, 11, 2))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="naive"):
        schedule.first_window(datetime(2026, 11, 2))  # noqa: DTZ001 - the point of the test


def test_cron_leap_day_windows_span_four_years() -> None:
    schedule = CronSchedule("0 0 29 2 *")
    first = schedule.first_window(utc(2024, 1, 1))
    assert first == Window(utc(2024, 2, 29), utc(2028, 2, 29))
    assert first.length == timedelta(days=366 + 365 + 365 + 365)
    assert schedule.next_window(first) == Window(utc(2028, 2, 29), utc(2032, 2, 29))
    assert schedule.window_at(utc(2026, 11, 1)) == first
    # 2100 is not a leap year (divisible by 100, not by 400): that window spans eight years.
    assert schedule.window_at(utc(2100, 6, 1)) == Window(utc(2096, 2, 29), utc(2104, 2, 29))


@pytest.mark.parametrize(
    ("year", "month", "days"),
    [(2024, 1, 31), (2024, 2, 29), (2026, 2, 28), (2024, 4, 30), (2026, 12, 31), (2100, 2, 28)],
)
def test_cron_month_windows(year: int, month: int, days: int) -> None:
    assert calendar.monthrange(year, month)[1] == days  # the expectation, checked independently
    window = CronSchedule("0 0 1 * *").window_at(utc(year, month, 15, 12))
    assert window.start == utc(year, month, 1)
    assert window.length == timedelta(days=days)


@pytest.mark.parametrize("transition", [SPRING_FORWARD, FALL_BACK])
def test_cron_hourly_windows_stay_regular_across_berlin_dst(transition: datetime) -> None:
    schedule = CronSchedule("0 * * * *")
    window = schedule.first_window(transition - timedelta(hours=3))
    for hour in range(-3, 3):
        assert window == Window(
            transition + timedelta(hours=hour), transition + timedelta(hours=hour + 1)
        )
        window = schedule.next_window(window)


# ---------------------------------------------------------------------------------------------
# Properties

instants = st.datetimes(
    min_value=datetime(1900, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive by design
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.sampled_from(
        [UTC, BERLIN, ZoneInfo("America/St_Johns"), ZoneInfo("Asia/Kathmandu")]
    ),
)
lengths = st.integers(min_value=1, max_value=7 * 86400).map(lambda s: timedelta(seconds=s))


@given(every=lengths, moment=instants)
def test_interval_window_contains_moment_and_is_epoch_aligned(
    every: timedelta, moment: datetime
) -> None:
    window = IntervalSchedule(every).window_at(moment)
    assert window.start <= moment < window.stop
    assert window.length == every
    # Alignment checked in whole seconds, independently of timedelta arithmetic.
    start_s = calendar.timegm(window.start.utctimetuple())
    assert start_s % int(every.total_seconds()) == 0
    assert window.start.microsecond == 0


@given(every=lengths, moment=instants)
def test_interval_windows_tile_without_gaps(every: timedelta, moment: datetime) -> None:
    schedule = IntervalSchedule(every)
    window = schedule.window_at(moment)
    following = schedule.next_window(window)
    assert following.start == window.stop
    assert schedule.window_at(window.stop) == following
    assert schedule.window_at(window.stop - MICRO) == window
    assert schedule.window_at(window.start - MICRO).stop == window.start


@given(every=lengths, moment=instants)
def test_interval_first_window_is_the_earliest_at_or_after(
    every: timedelta, moment: datetime
) -> None:
    schedule = IntervalSchedule(every)
    first = schedule.first_window(moment)
    assert first.start >= moment
    assert first.start - every < moment  # the one before starts too early


@given(
    every=st.integers(min_value=1, max_value=3600).map(lambda s: timedelta(seconds=s)),
    windows=st.integers(min_value=0, max_value=50),
    extra=st.integers(min_value=0, max_value=3600 * 10**6),
)
def test_interval_count_matches_enumeration(every: timedelta, windows: int, extra: int) -> None:
    schedule = IntervalSchedule(every)
    begin = schedule.window_at(utc(2026, 11, 1)).start
    end = begin + windows * every + timedelta(microseconds=extra)
    expected = 0
    while begin + expected * every < end:
        expected += 1
    assert schedule.count(begin, end) == expected


@settings(max_examples=50)
@given(
    expression=st.sampled_from(["*/5 * * * *", "30 * * * *", "0 0 * * *", "0 0 1 * *"]),
    moment=instants,
)
def test_cron_window_contains_moment_and_tiles(expression: str, moment: datetime) -> None:
    schedule = CronSchedule(expression)
    window = schedule.window_at(moment)
    assert window.start <= moment < window.stop
    assert window.start.second == 0
    assert window.start.microsecond == 0
    following = schedule.next_window(window)
    assert following.start == window.stop
    assert schedule.window_at(window.stop) == following
    assert schedule.first_window(window.start) == window
