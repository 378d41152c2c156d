"""parse_duration / format_duration: the `1h30m` durations people write in configs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierflow._durations import format_duration, parse_duration

# Unit sizes in milliseconds, written out independently of the module's own table.
UNIT_MS = {
    "w": 7 * 24 * 60 * 60 * 1000,
    "d": 24 * 60 * 60 * 1000,
    "h": 60 * 60 * 1000,
    "m": 60 * 1000,
    "s": 1000,
    "ms": 1,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1ms", timedelta(microseconds=1000)),
        ("250ms", timedelta(microseconds=250_000)),
        ("1s", timedelta(seconds=1)),
        ("90s", timedelta(minutes=1, seconds=30)),
        ("1m", timedelta(seconds=60)),
        ("5m", timedelta(seconds=300)),
        ("1h", timedelta(seconds=3600)),
        ("24h", timedelta(days=1)),
        ("1d", timedelta(seconds=86400)),
        ("400d", timedelta(weeks=57, days=1)),
        ("1w", timedelta(days=7)),
        ("2w", timedelta(days=14)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_each_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h30m", timedelta(minutes=90)),
        ("1m30s", timedelta(seconds=90)),
        ("1d12h", timedelta(hours=36)),
        ("1w1d1h1m1s1ms", timedelta(seconds=694861, milliseconds=1)),
        ("1s500ms", timedelta(milliseconds=1500)),
        # `m` followed by `s` must not be read as `ms`: "5m30s" is 5 minutes 30 seconds.
        ("5m30s", timedelta(seconds=330)),
        ("10m5ms", timedelta(seconds=600, milliseconds=5)),
    ],
)
def test_parse_compound(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_duration("  5m\n") == timedelta(minutes=5)


@pytest.mark.parametrize(
    "text",
    [
        "",  # nothing at all
        "   ",  # only whitespace
        "5",  # no unit
        "m",  # no number
        "5x",  # unknown unit
        "5M",  # units are lower case
        "5min",  # not a unit we accept
        "-5m",  # negative
        "+5m",  # explicit sign
        "1.5h",  # fractions: write 1h30m
        "5 m",  # space between number and unit
        "1h 30m",  # space between parts
        "1h30",  # trailing number without a unit
        "5m!",  # trailing junk
        "1_000s",  # digit separators
        "1e3s",  # exponent
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as caught:
        parse_duration(text)
    # The message lists the accepted units so the reader can fix it.
    for unit in ("ms", "s", "m", "h", "d", "w"):
        assert unit in str(caught.value)


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(seconds=1), "1s"),
        (timedelta(seconds=59), "59s"),
        (timedelta(seconds=60), "1m"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(seconds=300), "5m"),
        (timedelta(seconds=3600), "1h"),
        (timedelta(seconds=5400), "1h30m"),
        (timedelta(days=1), "1d"),
        (timedelta(days=7), "1w"),
        (timedelta(days=14), "2w"),
        (timedelta(days=400), "57w1d"),
        (timedelta(days=8, hours=1, minutes=1, seconds=1), "1w1d1h1m1s"),
        (timedelta(hours=1, seconds=1), "1h1s"),
        (timedelta(milliseconds=1), "1ms"),
        (timedelta(milliseconds=250), "250ms"),
        # Anything that is not whole seconds is written entirely in milliseconds.
        (timedelta(milliseconds=1500), "1500ms"),
        (timedelta(minutes=1, milliseconds=5), "60005ms"),
    ],
)
def test_format(delta: timedelta, expected: str) -> None:
    assert format_duration(delta) == expected


@pytest.mark.parametrize(
    "delta",
    [
        timedelta(0),
        timedelta(seconds=-1),
        timedelta(minutes=-5),
        timedelta(microseconds=1),  # finer than a millisecond
        timedelta(milliseconds=1, microseconds=1),
        timedelta(seconds=1, microseconds=500),
    ],
)
def test_format_rejects(delta: timedelta) -> None:
    with pytest.raises(ValueError, match=r"positive|millisecond"):
        format_duration(delta)


# Durations up to about 40 years in whole milliseconds: well past any sane config value.
whole_ms = st.integers(min_value=1, max_value=2000 * UNIT_MS["w"]).map(
    lambda ms: timedelta(milliseconds=ms)
)


@given(whole_ms)
def test_format_then_parse_round_trips(delta: timedelta) -> None:
    assert parse_duration(format_duration(delta)) == delta


@given(st.integers(min_value=1, max_value=2000 * UNIT_MS["w"] // 1000))
def test_whole_seconds_format_without_ms_and_in_descending_units(seconds: int) -> None:
    text = format_duration(timedelta(seconds=seconds))
    assert "ms" not in text
    # Rebuild the canonical text by hand: greedy division, largest unit first, zeros omitted.
    expected, rest = "", seconds
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        expected += f"{count}{unit}" if count else ""
    assert text == expected


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=999), st.sampled_from(sorted(UNIT_MS))),
        min_size=1,
        max_size=6,
    )
)
def test_parse_sums_the_parts(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{count}{unit}" for count, unit in parts)
    expected_ms = sum(count * UNIT_MS[unit] for count, unit in parts)
    assert parse_duration(text) == timedelta(milliseconds=expected_ms)


@given(st.integers(min_value=1, max_value=10**9))
def test_canonical_text_round_trips(seconds: int) -> None:
    text = format_duration(timedelta(seconds=seconds))
    assert format_duration(parse_duration(text)) == text


def test_out_of_range_duration_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="1000000000d"):
        parse_duration("1000000000d")


def test_millisecond_part_is_exact_on_large_durations() -> None:
    assert parse_duration("100000d1ms") == timedelta(days=100000, milliseconds=1)
