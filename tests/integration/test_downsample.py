"""Downsample jobs against a real InfluxDB 1.6: what lands in the warm tier must equal what plain
Python computes from the raw points the test wrote, for every window, series and field.

Nothing here asks tierflow what the answer should be: the expected aggregates come from the
generated points (mean, min, max, first/last by time, count, sum), the tiers are read back with
`ThrowawayInfluxd`'s own client, and line protocol is escaped by the test itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import operator
import random
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration._helpers import (
    AGGREGATES,
    EVERY,
    NS,
    SERIES,
    SPAN,
    WINDOWS,
    Point,
    assert_all_succeeded,
    assert_tier,
    expected_tier,
    grid,
    job,
    ns,
    open_runner,
    run_all,
    run_due,
    telemetry,
    windows_of,
    writable,
    write_points,
)
from tests.integration._support import free_port
from tests.integration.conftest import (
    WARM_RP,
    ConfigWriter,
    Databases,
    TierData,
    field_types,
    hour_floor_days_ago,
    read_tier,
)
from tierflow import BatchRun, RunStatus, TransientEngineError
from tierflow.testing import ThrowawayInfluxd

# -- checks of the warm tier beyond its values -----------------------------------------------


def assert_field_types(
    server: ThrowawayInfluxd,
    db: str,
    measurement: str = "sensor",
    aggregates: Mapping[str, Iterable[str]] = AGGREGATES,
) -> None:
    """Only the aggregate fields, with counts and integer sums as integers (no tag turned into
    a field, no field turned into a float)."""
    integer_fields = {"errors"}
    want = {
        f"{name}_{function}": (
            "integer" if function == "count" or name in integer_fields else "float"
        )
        for name, functions in aggregates.items()
        for function in functions
    }
    assert field_types(server, db, WARM_RP, measurement) == want


def hot_tier(points: Iterable[Point]) -> TierData:
    return {(p.measurement, p.time, frozenset(p.tags)): dict(p.fields) for p in points}


# -- the tests -----------------------------------------------------------------------------


async def test_every_window_series_and_field_equals_the_raw_points(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter, start: datetime
) -> None:
    points = telemetry(1, start)
    write_points(influxd, db, points)
    expected = expected_tier(points, grid(start, EVERY, WINDOWS))
    assert len(expected) > 80  # the data set is not trivially small
    now = start + SPAN

    async with open_runner(write_config(db, {"down": job(start)})) as runner:
        runs = await runner.run_due(now)
        status = await runner.status(now)

    assert_all_succeeded(runs)
    assert windows_of(runs) == grid(start, EVERY, WINDOWS)
    assert len(runs) == 2  # coalesced into the default 1h chunks
    assert sum(run.points_written for run in runs) == len(expected)
    assert_tier(read_tier(influxd, db, WARM_RP), expected)
    assert_field_types(influxd, db)
    # SHOW TAG KEYS is database-wide in 1.6 (it ignores the RP), so this alone proves little;
    # the keys of read_tier (series tags) and SHOW FIELD KEYS (per RP) above carry the weight.
    (result,) = influxd.query(f'SHOW TAG KEYS ON "{db}" FROM "{WARM_RP}"."sensor"', db=db)
    assert {"host", "site"} <= {key for (key,) in result["series"][0]["values"]}
    # The source is untouched.
    assert read_tier(influxd, db, "autogen") == hot_tier(points)
    (job_status,) = status
    assert job_status.watermark == now
    assert job_status.lag_seconds == 0
    assert job_status.last_status == RunStatus.SUCCEEDED
    assert (job_status.failed_windows, job_status.pending_windows) == (0, 0)


async def test_window_by_window_and_coalesced_runs_write_the_same_points(
    influxd: ThrowawayInfluxd,
    databases: Databases,
    write_config: ConfigWriter,
    start: datetime,
    tmp_path: Path,
) -> None:
    points = telemetry(2, start)
    expected = expected_tier(points, grid(start, EVERY, WINDOWS))
    results, query_counts = [], []
    for chunk in ("5m", None):
        db = databases.new()
        write_points(influxd, db, points)
        path = write_config(
            db, {"down": job(start, catchup_chunk=chunk)}, directory=tmp_path / str(chunk)
        )
        runs = await run_all(path, start + SPAN)
        assert windows_of(runs) == grid(start, EVERY, WINDOWS)
        query_counts.append(len(runs))
        results.append(read_tier(influxd, db, WARM_RP))

    assert query_counts == [WINDOWS, 2]
    assert results[0] == results[1]
    assert_tier(results[0], expected)


async def test_a_rerun_runs_nothing_and_a_backfill_rewrites_the_same_points(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter, start: datetime
) -> None:
    points = telemetry(3, start)
    write_points(influxd, db, points)
    now = start + SPAN
    store_path = write_config(db, {"down": job(start)})

    async with open_runner(store_path) as runner:
        first = await runner.run_due(now)
        before = read_tier(influxd, db, WARM_RP)
        second = await runner.run_due(now)
        history_before = await runner.store.history("down", limit=1000)
        backfilled = await runner.backfill("down", start, now, now)
        history_after = await runner.store.history("down", limit=1000)
    after = read_tier(influxd, db, WARM_RP)

    assert_all_succeeded(first)
    assert second == []
    # A history row is a run of windows claimed together: each window once, then twice.
    assert sum(a.windows for a in history_before) == WINDOWS
    assert_all_succeeded(backfilled)
    assert windows_of(backfilled) == grid(start, EVERY, WINDOWS)
    assert {a for run in backfilled for a in run.attempts} == {2}
    assert sum(a.windows for a in history_after) == 2 * WINDOWS
    assert before == after
    assert_tier(after, expected_tier(points, grid(start, EVERY, WINDOWS)))


async def test_late_points_wait_for_a_backfill_of_their_windows(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter, start: datetime
) -> None:
    points = telemetry(4, start)
    write_points(influxd, db, points)
    now = start + SPAN
    late_from, late_to = start + 3 * EVERY, start + 5 * EVERY
    late = [
        Point("sensor", (("host", "h1"), ("site", "berlin")), ns(late_from) + 7, {"temp": 99.5}),
        Point("sensor", (("host", "h1"), ("site", "berlin")), ns(late_from) + 8, {"errors": 40}),
        Point("sensor", (("host", "late"), ("site", "lima")), ns(late_from) + 9, {"temp": -3.25}),
        Point("sensor", (("host", "h4"), ("site", "paris")), ns(late_to) - 1, {"errors": 5}),
    ]
    on_time = expected_tier(points, grid(start, EVERY, WINDOWS))
    with_late = expected_tier(points + late, grid(start, EVERY, WINDOWS))
    assert on_time != with_late

    async with open_runner(write_config(db, {"down": job(start)})) as runner:
        assert_all_succeeded(await runner.run_due(now))
        write_points(influxd, db, late)
        rerun = await runner.run_due(now)
        stale = read_tier(influxd, db, WARM_RP)
        # A range that only overlaps the first and last window still re-runs both, whole.
        backfilled = await runner.backfill(
            "down", late_from + timedelta(minutes=4), late_to - timedelta(minutes=4), now
        )
    fresh = read_tier(influxd, db, WARM_RP)

    assert rerun == []
    assert_tier(stale, on_time)
    assert_all_succeeded(backfilled)
    assert windows_of(backfilled) == grid(late_from, EVERY, 2)
    assert_tier(fresh, with_late)


async def test_a_window_waits_for_its_stop_plus_the_offset(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter, start: datetime
) -> None:
    points = telemetry(5, start)
    write_points(influxd, db, points)
    offset = timedelta(minutes=1)
    first_stop = start + EVERY

    async with open_runner(write_config(db, {"down": job(start, offset="1m")})) as runner:
        (early_status,) = await runner.status(first_stop + offset - timedelta(seconds=1))
        early = await runner.run_due(first_stop + offset - timedelta(seconds=1))
        nothing_yet = read_tier(influxd, db, WARM_RP)
        (due_status,) = await runner.status(first_stop + offset)
        on_time = await runner.run_due(first_stop + offset)
        (done_status,) = await runner.status(first_stop + offset)

    assert early == []
    assert nothing_yet == {}
    assert early_status.pending_windows == 0
    assert due_status.pending_windows == 1
    assert (done_status.pending_windows, done_status.watermark) == (0, first_stop)
    assert_all_succeeded(on_time)
    assert windows_of(on_time) == [(start, first_stop)]
    expected = expected_tier(points, grid(start, EVERY, 1))
    assert expected
    assert_tier(read_tier(influxd, db, WARM_RP), expected)


async def test_a_tag_filter_aggregates_only_the_matching_series(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter, start: datetime
) -> None:
    points = telemetry(6, start)
    write_points(influxd, db, points)
    config = write_config(db, {"berlin": job(start, tags={"site": "berlin"})})

    await run_all(config, start + SPAN)
    expected = expected_tier(
        points,
        grid(start, EVERY, WINDOWS),
        keep=lambda point: dict(point.tags)["site"] == "berlin",
    )
    assert {dict(tags)["host"] for _, _, tags in expected} == {"h1", "h2", "h3"}
    assert_tier(read_tier(influxd, db, WARM_RP), expected)


async def test_several_jobs_run_side_by_side_each_into_its_own_measurement(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter, start: datetime
) -> None:
    points = telemetry(14, start)
    write_points(influxd, db, points)
    jobs = {
        "berlin": job(start, tags={"site": "berlin"}, into="{{ measurement }}_berlin"),
        "paris": job(start, tags={"site": "paris"}, into="{{ measurement }}_paris"),
        "coarse": job(start, every="10m", into="{{ measurement }}_10m"),
    }

    async with open_runner(write_config(db, jobs)) as runner:
        runs = await runner.run_due(start + SPAN)
        statuses = await runner.status(start + SPAN)

    assert_all_succeeded(runs)
    assert {run.job for run in runs} == set(jobs)

    def site(name: str) -> Callable[[Point], bool]:
        return lambda point: dict(point.tags)["site"] == name

    expected = {
        **expected_tier(
            points, grid(start, EVERY, WINDOWS), keep=site("berlin"), into=lambda m: f"{m}_berlin"
        ),
        **expected_tier(
            points, grid(start, EVERY, WINDOWS), keep=site("paris"), into=lambda m: f"{m}_paris"
        ),
        **expected_tier(points, grid(start, 2 * EVERY, WINDOWS // 2), into=lambda m: f"{m}_10m"),
    }
    assert_tier(read_tier(influxd, db, WARM_RP), expected)
    assert [(s.job, s.watermark, s.pending_windows) for s in statuses] == [
        (name, start + SPAN, 0) for name in jobs
    ]


async def test_into_writes_to_the_renamed_measurement(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter, start: datetime
) -> None:
    points = telemetry(7, start)
    write_points(influxd, db, points)
    config = write_config(db, {"down": job(start, into="{{ measurement }}_5m")})

    await run_all(config, start + SPAN)

    expected = expected_tier(points, grid(start, EVERY, WINDOWS), into=lambda m: f"{m}_5m")
    assert_tier(read_tier(influxd, db, WARM_RP), expected)
    assert_field_types(influxd, db, "sensor_5m")
    # sensor_5m exists only in the warm tier, so its tag keys are the warm ones.
    (result,) = influxd.query(f'SHOW TAG KEYS ON "{db}" FROM "{WARM_RP}"."sensor_5m"', db=db)
    assert sorted(key for (key,) in result["series"][0]["values"]) == ["host", "site"]


async def test_a_cron_schedule_matches_the_equal_interval(
    influxd: ThrowawayInfluxd,
    databases: Databases,
    write_config: ConfigWriter,
    start: datetime,
    tmp_path: Path,
) -> None:
    points = telemetry(8, start)
    every = timedelta(minutes=10)
    results = []
    for name, schedule in (
        ("cron", {"cron": "*/10 * * * *", "every": None}),
        ("every", {"every": "10m"}),
    ):
        db = databases.new()
        write_points(influxd, db, points)
        path = write_config(db, {"down": job(start, **schedule)}, directory=tmp_path / name)
        runs = await run_all(path, start + SPAN)
        assert windows_of(runs) == grid(start, every, SPAN // every)
        results.append(read_tier(influxd, db, WARM_RP))

    assert results[0] == results[1]
    assert_tier(results[0], expected_tier(points, grid(start, every, SPAN // every)))


def scattered(seed: int, low: datetime, high: datetime, per_series: int) -> list[Point]:
    """`per_series` points per series at random instants in [low, high)."""
    rng = random.Random(seed)
    points = []
    for host, site in SERIES:
        times = {rng.randrange(ns(low), ns(high)) for _ in range(per_series)}
        points += [
            Point(
                "sensor",
                (("host", host), ("site", site)),
                moment,
                {"temp": rng.uniform(-20, 45), "errors": rng.randint(0, 9)},
            )
            for moment in sorted(times)
        ]
    return points


def _hourly_quarter_twenty(start: datetime) -> list[tuple[datetime, datetime]]:
    minutes = [0, 15, 20, 60, 75, 80, 120]
    ticks = [start + timedelta(minutes=m) for m in minutes]
    return list(itertools.pairwise(ticks))


def _every_7m(start: datetime, now: datetime) -> list[tuple[datetime, datetime]]:
    # Interval windows align to the epoch, so the first one starts at the next 7m boundary.
    step = timedelta(minutes=7)
    tick = datetime.fromtimestamp(math.ceil(start.timestamp() / 420) * 420, UTC)
    spans = []
    while tick + step <= now:
        spans.append((tick, tick + step))
        tick += step
    return spans


def _monday(days_ago: int) -> datetime:
    moment = hour_floor_days_ago(days_ago).replace(hour=0)
    return moment - timedelta(days=moment.weekday())


Spans = list[tuple[datetime, datetime]]
# name → f(an hour boundary) = (schedule, job start, now, the windows due at now, by hand)
IRREGULAR: dict[str, Callable[[datetime], tuple[dict[str, object], datetime, datetime, Spans]]] = {
    "cron-0,15,20": lambda s: (
        {"cron": "0,15,20 * * * *", "every": None},
        s,
        s + timedelta(hours=2),
        _hourly_quarter_twenty(s),
    ),
    "cron-30-every-3h": lambda s: (
        {"cron": "30 */3 * * *", "every": None},
        s.replace(hour=0),
        s.replace(hour=12),
        [(s.replace(hour=h, minute=30), s.replace(hour=h + 3, minute=30)) for h in (0, 3, 6)],
    ),
    "cron-weekly-monday": lambda s: (
        {"cron": "0 0 * * 1", "every": None},
        _monday(30),
        _monday(30) + timedelta(weeks=3),
        grid(_monday(30), timedelta(weeks=1), 3),
    ),
    "every-7m": lambda s: (
        {"every": "7m"},
        s,
        s + timedelta(hours=1),
        _every_7m(s, s + timedelta(hours=1)),
    ),
    "every-90m": lambda s: (
        {"every": "90m"},
        s.replace(hour=0),
        s.replace(hour=6),
        grid(s.replace(hour=0), timedelta(minutes=90), 4),
    ),
}


@pytest.mark.parametrize("case", sorted(IRREGULAR))
async def test_windows_of_any_length_and_alignment_aggregate_exactly_their_points(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter, start: datetime, case: str
) -> None:
    schedule, begin, now, spans = IRREGULAR[case](start)
    assert spans[-1][1] <= now
    margin = (now - begin) / 3
    points = scattered(12, begin - margin, now + margin, per_series=60)
    write_points(influxd, db, points)

    runs = await run_all(write_config(db, {"down": job(begin, **schedule)}), now)
    assert windows_of(runs) == spans
    expected = expected_tier(points, spans)
    assert len({time for _, time, _ in expected}) == len(spans)  # every window has points
    assert_tier(read_tier(influxd, db, WARM_RP), expected)


# -- hostile names ---------------------------------------------------------------------------

HOSTILE_CHARS = ['"', "'", "\\", " ", ",", "=", ";", "-", "*", "(", ")", "é", "😀", "\u2028"]
HOSTILE_VALUES = [
    "x' OR 1=1 --",
    "x' OR 'a'='a",
    '" OR ""="',
    "berlin'; DROP DATABASE db; --",
    "back\\slash",
    "semi;colon, comma=equals",
    "ünïcødé 🌡 → 東京",
]


def decoys_of(value: str) -> set[str]:
    """Values a mis-quoted filter would plausibly match instead of (or besides) `value`."""
    candidates = {
        "other",
        "x",
        value.replace("\\", ""),
        value.replace("\\", "\\\\"),
        value.replace("'", "\\'"),
        value.replace('"', '\\"'),
        value.replace("'", ""),
        value.split("'")[0],
        value.split('"')[0],
        value.strip(),
        value + " ",
    }
    return {c for c in candidates if c != value and writable(c)}


def _tag_filter_case(
    influxd: ThrowawayInfluxd,
    db: str,
    config_dir: Path,
    write: ConfigWriter,
    value: str,
    start: datetime,
) -> None:
    target = ("host", value), ("site", "here")
    series = [target] + [(("host", decoy), ("site", "here")) for decoy in sorted(decoys_of(value))]
    points = [
        Point("sensor", tags, ns(start) + offset * NS, {"temp": float(i * 10 + offset)})
        for i, tags in enumerate(series)
        for offset in (0, 17, 299)
    ]
    write_points(influxd, db, points)
    # The test's own escaping must round-trip before tierflow's is judged.
    assert read_tier(influxd, db, "autogen") == hot_tier(points)
    aggregates = {"temp": ["mean", "count"]}
    path = write(
        db,
        {"down": job(start, tags={"host": value}, aggregates=aggregates)},
        directory=config_dir,
    )

    async def go() -> list[BatchRun]:
        async with open_runner(path) as runner:
            return await runner.run_due(start + EVERY)

    runs = asyncio.run(go())

    assert_all_succeeded(runs)
    expected = expected_tier(
        points,
        grid(start, EVERY, 1),
        aggregates=aggregates,
        keep=lambda point: point.tags == target,
    )
    assert len(expected) == 1
    assert_tier(read_tier(influxd, db, WARM_RP), expected)
    assert read_tier(influxd, db, "autogen") == hot_tier(points)


def _unambiguous(text: str) -> str:
    # Line protocol reads a backslash before `, = " space \` (or at the end) as an escape;
    # keep such backslashes, but follow each with a "b" so the value still round-trips.
    return re.sub(r'\\(?=[,= "\\]|$)', r"\\b", text)


_hostile_text = st.text(alphabet=st.sampled_from([*HOSTILE_CHARS, "a", "Z", "0"]), max_size=12)
hostile_values = (
    st.one_of(
        st.sampled_from(HOSTILE_VALUES),
        _hostile_text.filter(bool),
        st.text(
            alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
            min_size=1,
            max_size=8,
        ),
        st.builds(operator.add, st.sampled_from(HOSTILE_VALUES), _hostile_text),
    )
    .map(_unambiguous)
    .filter(writable)
)


@settings(
    max_examples=25,
    deadline=None,
    # `databases`, `write_config` and `tmp_path` are factories/roots: each example makes its
    # own database and config directory from them.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=hostile_values)
def test_a_hostile_tag_value_filters_exactly_its_series(
    influxd: ThrowawayInfluxd,
    databases: Databases,
    write_config: ConfigWriter,
    tmp_path: Path,
    value: str,
) -> None:
    start = hour_floor_days_ago(2)
    db = databases.new()
    try:
        _tag_filter_case(influxd, db, tmp_path / uuid.uuid4().hex, write_config, value, start)
    finally:
        databases.drop(db)


async def test_a_tag_filter_with_a_newline_matches_nothing_and_does_not_fail(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter, start: datetime
) -> None:
    # Line protocol cannot carry a newline, so no series can match; the neighbours a broken
    # escape would match (the newline dropped, turned into a space, or left as "\n") are there.
    decoys = ["a\\nb", "a b", "ab", "a", "b", "other"]
    points = [
        Point("sensor", (("host", decoy),), ns(start) + NS, {"temp": 1.5}) for decoy in decoys
    ]
    write_points(influxd, db, points)

    config = write_config(db, {"down": job(start, tags={"host": "a\nb"})})
    runs = await run_all(config, start + EVERY)
    assert windows_of(runs) == [(start, start + EVERY)]
    assert sum(run.points_written for run in runs) == 0
    assert read_tier(influxd, db, WARM_RP) == {}
    assert read_tier(influxd, db, "autogen") == hot_tier(points)


HOSTILE_MEASUREMENTS = [
    "we\"ird 'name', with=stuff; and back\\slash",
    "x' OR 1=1 --",
    'sensor"; DROP MEASUREMENT "sensor',
    "sensor INTO other",
    "ünïcødé 🌡 → 東京",
]
HOSTILE_TAG_KEY = "ta\"g 'key',="


@pytest.mark.parametrize("measurement", HOSTILE_MEASUREMENTS)
async def test_a_hostile_measurement_and_tag_key_aggregate_exactly_their_series(
    influxd: ThrowawayInfluxd,
    db: str,
    write_config: ConfigWriter,
    start: datetime,
    measurement: str,
) -> None:
    decoy_names = {"sensor", "other", "x", measurement.replace("\\", "")}
    decoy_names |= {re.split("[\"' ]", measurement)[0]}
    decoy_names = {n for n in decoy_names if n and n != measurement and writable(n)}
    target_tags = ((HOSTILE_TAG_KEY, "v'al ue"), ("host", "a"))
    series = [(measurement, target_tags), (measurement, ((HOSTILE_TAG_KEY, "v"), ("host", "a")))]
    series += [(name, target_tags) for name in sorted(decoy_names)]
    points = [
        Point(name, tags, ns(start) + offset * NS, {"temp": float(i + offset), "errors": i})
        for i, (name, tags) in enumerate(series)
        for offset in (0, 1, 250)
    ]
    write_points(influxd, db, points)
    assert read_tier(influxd, db, "autogen") == hot_tier(points)
    spec = job(
        start,
        measurements=[measurement],
        tags={HOSTILE_TAG_KEY: "v'al ue"},
        into="{{ measurement }} 5m",
    )

    await run_all(write_config(db, {"down": spec}), start + EVERY)
    expected = expected_tier(
        points,
        grid(start, EVERY, 1),
        keep=lambda p: (p.measurement, p.tags) == (measurement, target_tags),
        into=lambda m: f"{m} 5m",
    )
    assert len(expected) == 1
    assert_tier(read_tier(influxd, db, WARM_RP), expected)
    assert read_tier(influxd, db, "autogen") == hot_tier(points)


async def test_a_measurement_with_a_newline_matches_nothing_and_does_not_fail(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter, start: datetime
) -> None:
    decoys = ["sensor", "sensor\\nx", "sensor x", "sensorx", "x"]
    points = [Point(name, (("host", "a"),), ns(start) + NS, {"temp": 2.5}) for name in decoys]
    write_points(influxd, db, points)
    spec = job(start, measurements=["sensor\nx"], into="{{ measurement }}_5m")

    runs = await run_all(write_config(db, {"down": spec}), start + EVERY)
    assert sum(run.points_written for run in runs) == 0
    assert read_tier(influxd, db, WARM_RP) == {}


# -- failures and the ledger -----------------------------------------------------------------


async def test_a_missing_database_fails_every_window_and_holds_the_watermark(
    write_config: ConfigWriter, start: datetime
) -> None:
    missing = f"db_missing_{uuid.uuid4().hex}"
    now = start + SPAN

    async with open_runner(write_config(missing, {"down": job(start)})) as runner:
        runs = await runner.run_due(now)
        status = await runner.status(now)
        again = await runner.run_due(now)
        watermark = await runner.store.watermark("down")

    assert windows_of(runs) == grid(start, EVERY, WINDOWS)
    assert {run.status for run in runs} == {RunStatus.FAILED}
    for run in runs:
        assert run.error is not None
        assert "database not found" in run.error
        assert missing in run.error
    (job_status,) = status
    assert job_status.watermark == start
    assert job_status.last_status == RunStatus.FAILED
    assert job_status.failed_windows == WINDOWS
    assert job_status.pending_windows == WINDOWS  # failed windows are due again
    assert job_status.lag_seconds == SPAN.total_seconds()
    assert windows_of(again) == grid(start, EVERY, WINDOWS)
    assert {a for run in again for a in run.attempts} == {2}
    assert watermark == start


async def test_an_unreachable_server_fails_with_a_transient_error(
    write_config: ConfigWriter, start: datetime
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = write_config("db_anything", {"down": job(start)}, url=url)

    async with open_runner(config) as runner:
        runs = await runner.run_due(start + 2 * EVERY)
        history = await runner.store.history("down")
        watermark = await runner.store.watermark("down")
        with pytest.raises(TransientEngineError, match="unreachable"):
            await runner.engine("plant").ping()

    assert windows_of(runs) == grid(start, EVERY, 2)
    assert {run.status for run in runs} == {RunStatus.FAILED}
    for run in runs:
        assert run.error is not None
        assert f"connection plant: {url}: unreachable" in run.error
    assert {(a.status, a.error) for a in history} == {(RunStatus.FAILED, runs[0].error)}
    assert watermark == start


async def test_data_older_than_the_warm_retention_fails_the_window(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter
) -> None:
    # InfluxDB drops points beyond the RP's duration; the runner must not call that success.
    old = hour_floor_days_ago(500)
    write_points(influxd, db, [Point("sensor", (("host", "a"),), ns(old) + NS, {"temp": 1.0})])

    (run,) = await run_due(write_config(db, {"down": job(old)}), old + EVERY)

    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert "beyond retention policy" in run.error


async def test_a_failed_window_holds_the_watermark_and_alone_is_retried(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter
) -> None:
    # The warm RP refuses points older than 400 days, so of four daily windows starting 401 to
    # 402 days ago the first two fail ("points beyond retention policy"), the last two succeed.
    day = timedelta(days=1)
    begin = hour_floor_days_ago(401).replace(hour=0)
    points = scattered(13, begin, begin + 4 * day, per_series=20)
    write_points(influxd, db, points)
    now = begin + 4 * day

    async with open_runner(write_config(db, {"daily": job(begin, every="1d")})) as runner:
        first = await runner.run_due(now)
        (status,) = await runner.status(now)
        retried = await runner.run_due(now)

    assert [(w, run.status) for run in first for w in windows_of([run])] == [
        ((begin, begin + day), RunStatus.FAILED),
        ((begin + day, begin + 2 * day), RunStatus.FAILED),
        ((begin + 2 * day, begin + 3 * day), RunStatus.SUCCEEDED),
        ((begin + 3 * day, begin + 4 * day), RunStatus.SUCCEEDED),
    ]
    for run in first[:2]:
        assert run.error is not None
        assert "points beyond retention policy" in run.error
    assert status.watermark == begin
    assert (status.failed_windows, status.pending_windows) == (2, 2)
    assert windows_of(retried) == grid(begin, day, 2)
    assert {a for run in retried for a in run.attempts} == {2}
    assert_tier(
        read_tier(influxd, db, WARM_RP), expected_tier(points, grid(begin + 2 * day, day, 2))
    )


async def test_a_failed_backfill_behind_the_watermark_shows_in_status_and_is_retried(
    influxd: ThrowawayInfluxd, databases: Databases, write_config: ConfigWriter, start: datetime
) -> None:
    db = databases.new()
    points = telemetry(10, start)
    write_points(influxd, db, points)
    now = start + SPAN

    async with open_runner(write_config(db, {"down": job(start)})) as runner:
        assert_all_succeeded(await runner.run_due(now))
        databases.drop(db)
        backfilled = await runner.backfill("down", start, start + 2 * EVERY, now)
        (job_status,) = await runner.status(now)
        # The database comes back; the next ordinary run must redo what the backfill failed.
        databases.create(db)
        write_points(influxd, db, points)
        retried = await runner.run_due(now)
        (after,) = await runner.status(now)

    assert {run.status for run in backfilled} == {RunStatus.FAILED}
    assert job_status.last_status == RunStatus.FAILED
    assert (job_status.failed_windows, job_status.pending_windows) == (2, 2)
    assert_all_succeeded(retried)
    assert windows_of(retried) == grid(start, EVERY, 2)
    assert {a for run in retried for a in run.attempts} == {3}
    assert (after.watermark, after.failed_windows, after.pending_windows) == (now, 0, 0)
    assert_tier(read_tier(influxd, db, WARM_RP), expected_tier(points, grid(start, EVERY, 2)))


async def test_the_ledger_records_attempts_query_hashes_and_the_template_version(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter, start: datetime
) -> None:
    write_points(influxd, db, telemetry(9, start))
    now = start + SPAN
    template = (
        resources.files("tierflow._engines.influxql") / "templates" / "downsample.influxql.j2"
    )
    version = hashlib.sha256(template.read_text(encoding="utf-8").encode()).hexdigest()[:12]

    async with open_runner(write_config(db, {"down": job(start)})) as runner:
        runs = await runner.run_due(now)
        await runner.backfill("down", start, start + EVERY, now)
        history = await runner.store.history("down", limit=1000)

    assert [w.attempts for run in runs for w in run.windows] == [1] * WINDOWS
    assert {w.status for run in runs for w in run.windows} == {RunStatus.SUCCEEDED}
    assert sum(a.windows for a in history) == WINDOWS + 1  # (a history row: a claimed run)
    newest = history[0]
    assert (newest.window.start, newest.attempt, newest.status) == (
        start,
        2,
        RunStatus.SUCCEEDED,
    )
    by_window = defaultdict(list)
    for attempt in history:
        assert attempt.status == RunStatus.SUCCEEDED
        assert attempt.template_version == version
        assert attempt.query_hash is not None
        assert re.fullmatch("[0-9a-f]{16}", attempt.query_hash)
        assert attempt.finished_at is not None
        assert attempt.finished_at >= attempt.started_at
        assert attempt.duration_s is not None
        assert attempt.duration_s >= 0
        assert attempt.error is None
        for window in attempt.each():
            by_window[window.start].append(attempt)
    assert sorted(by_window) == [w for w, _ in grid(start, EVERY, WINDOWS)]
    # One query per batch: its windows share a hash, the two batches' hashes differ.
    first_hour = {
        a.query_hash
        for w, attempts in by_window.items()
        for a in attempts
        if w < start + timedelta(hours=1) and a.attempt == 1
    }
    second_hour = {
        a.query_hash
        for w, attempts in by_window.items()
        for a in attempts
        if w >= start + timedelta(hours=1)
    }
    assert len(first_hour) == 1
    assert len(second_hour) == 1
    assert first_hour != second_hour
    # The lone backfilled window ran a query of its own.
    assert newest.query_hash not in first_hour | second_hour
