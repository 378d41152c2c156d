"""Helpers shared by the integration tests: the raw points they write (with the test's own line
protocol escaping), plain Python's aggregates of those points, running a downsample job in
process, and reading the queries a recording proxy (`tests.proxy`) saw.

Nothing here asks tierflow what the answer should be: the expected aggregates come from the
generated points (mean, min, max, first/last by time, count, sum), and line protocol is escaped
here, not by tierflow. Fixtures live in `conftest.py`; helpers for the tests that run the
`tierflow` process live in `_support.py`.
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tests.integration.conftest import TableBody, TierData, sqlite_state, write_toml
from tests.proxy import Exchange
from tierflow import BatchRun, Runner, SqliteStateStore, load_config
from tierflow.testing import ThrowawayInfluxd

EVERY = timedelta(minutes=5)
SPAN = timedelta(hours=2)
WINDOWS = SPAN // EVERY  # 24
AGGREGATES: dict[str, list[str]] = {
    "temp": ["mean", "min", "max", "first", "last", "count"],
    "errors": ["sum", "count"],
}
SERIES = [  # host h3 reports from two sites: merging series would show
    ("h1", "berlin"),
    ("h2", "berlin"),
    ("h3", "paris"),
    ("h3", "berlin"),
    ("h4", "paris"),
    ("h5", "oslo"),
]
EMPTY_EVERYWHERE = 7  # a window no series has a point in
NS = 1_000_000_000


def ns(moment: datetime) -> int:
    return round(moment.timestamp()) * NS


# -- raw points and line protocol ------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: tuple[tuple[str, str], ...]
    time: int  # ns since the epoch
    fields: Mapping[str, float | int]


def _escape(text: str, specials: str) -> str:
    for char in specials:
        text = text.replace(char, "\\" + char)
    return text


def writable(text: str) -> bool:
    """Whether line protocol can carry `text` as a name or tag value unchanged: no newline, and no
    backslash that the 1.x parser would read as part of an escape."""
    if not text or "\n" in text or "\r" in text or text.endswith("\\"):
        return False
    return not any(text[i] == "\\" and text[i + 1] in ',= "\\' for i in range(len(text) - 1))


def line(point: Point) -> str:
    assert writable(point.measurement)
    assert not point.measurement.startswith("#"), "a line starting with # is a comment"
    parts = [_escape(point.measurement, ", ")]
    for key, value in point.tags:
        assert writable(key)
        assert writable(value)
        parts.append(f"{_escape(key, ',= ')}={_escape(value, ',= ')}")
    fields = []
    for name, number in point.fields.items():
        # bool is an int: keep it out, and keep floats floats (repr always has '.' or 'e').
        assert not isinstance(number, bool)
        text = f"{number}i" if isinstance(number, int) else repr(float(number))
        fields.append(f"{_escape(name, ',= ')}={text}")
    return f"{','.join(parts)} {','.join(fields)} {point.time}"


def write_points(server: ThrowawayInfluxd, db: str, points: Iterable[Point]) -> None:
    server.write([line(p) for p in points], db=db)


def telemetry(seed: int, start: datetime, *, measurement: str = "sensor") -> list[Point]:
    """Irregular `sensor` points for every series, from one window before `start` to one window
    past `start + SPAN` (neither may be aggregated), with some windows empty for some series,
    one empty for all, points on window edges, some points lacking a field, and integers past
    2**53 so that a float detour would show in the sums."""
    rng = random.Random(seed)
    every, origin = EVERY // timedelta(microseconds=1) * 1000, ns(start)
    points = []
    for host, site in SERIES:
        for window in range(-1, WINDOWS + 1):
            if window == EMPTY_EVERYWHERE or rng.random() < 0.2:
                continue
            low = origin + window * every
            times = {rng.randrange(low, low + every) for _ in range(rng.randint(1, 6))}
            if rng.random() < 0.3:
                times.add(low)
            if rng.random() < 0.3:
                times.add(low + every - 1)
            for moment in sorted(times):
                fields: dict[str, float | int] = {}
                if rng.random() < 0.85:
                    fields["temp"] = rng.choice([rng.uniform(-20, 45), float(rng.randint(-5, 5))])
                if rng.random() < 0.7 or not fields:
                    big = rng.random() < 0.1
                    fields["errors"] = 2**53 + rng.randint(1, 99) if big else rng.randint(0, 9)
                tags = (("host", host), ("site", site))
                points.append(Point(measurement, tags, moment, fields))
    return points


def readings(
    seed: int, start: datetime, count: int, *, quantum: float | None = None
) -> list[Point]:
    """Irregular points for every series in `count` windows of EVERY from `start`, plus one
    window either side (never aggregated). Every hour boundary (where a 1h chunk ends) and the
    last instant before it hold a point, so a chunk bound off by one would show. With
    `quantum` (a power of two), temperatures are multiples of it, so that their sums are exact
    in any order."""
    rng = random.Random(seed)
    step = EVERY // timedelta(microseconds=1) * 1000
    points = []
    for host, site in SERIES:
        for window in range(-1, count + 1):
            low = ns(start) + window * step
            edge = window % 12
            if rng.random() < 0.15 and edge not in {0, 11}:
                continue
            times = {rng.randrange(low, low + step) for _ in range(rng.randint(1, 4))}
            if edge == 0 or rng.random() < 0.2:
                times.add(low)
            if edge == 11 or rng.random() < 0.2:
                times.add(low + step - 1)
            for moment in sorted(times):
                temp = rng.uniform(-20, 45)
                temp = round(temp, 3) if quantum is None else round(temp / quantum) * quantum
                fields: dict[str, float | int] = {"temp": temp}
                if rng.random() < 0.7:
                    fields["errors"] = rng.randint(0, 9)
                points.append(Point("sensor", (("host", host), ("site", site)), moment, fields))
    return points


# -- the independent computation -----------------------------------------------------------


def _mean(values: list[tuple[int, Any]]) -> float:
    return math.fsum(v for _, v in values) / len(values)


def _sum(values: list[tuple[int, Any]]) -> float | int:
    numbers = [v for _, v in values]
    return sum(numbers) if all(isinstance(v, int) for v in numbers) else math.fsum(numbers)


PYTHON_AGGREGATES: dict[str, Callable[[list[tuple[int, Any]]], float | int]] = {
    "mean": _mean,
    "min": lambda values: min(v for _, v in values),
    "max": lambda values: max(v for _, v in values),
    "first": lambda values: min(values, key=lambda tv: tv[0])[1],
    "last": lambda values: max(values, key=lambda tv: tv[0])[1],
    "count": len,
    "sum": _sum,
}


def expected_tier(
    points: Iterable[Point],
    spans: Sequence[tuple[datetime, datetime]],
    *,
    aggregates: Mapping[str, Iterable[str]] = AGGREGATES,
    keep: Callable[[Point], bool] = lambda point: True,
    into: Callable[[str], str] = lambda measurement: measurement,
) -> TierData:
    """One point per (window, series) that has values, stamped at the window start, with
    `<field>_<function>` for each field that has values in that window. `spans` are the
    windows, [start, stop) each."""
    bounds = [(ns(low), ns(high)) for low, high in spans]
    grouped: dict[tuple[str, int, frozenset[tuple[str, str]]], dict[str, list[tuple[int, Any]]]]
    grouped = defaultdict(lambda: defaultdict(list))
    for point in points:
        owners = [low for low, high in bounds if low <= point.time < high]
        if not keep(point) or not owners:
            continue
        key = (into(point.measurement), owners[0], frozenset(point.tags))
        for name, value in point.fields.items():
            grouped[key][name].append((point.time, value))
    return {
        key: {
            f"{name}_{function}": PYTHON_AGGREGATES[function](by_field[name])
            for name, functions in aggregates.items()
            if by_field.get(name)
            for function in functions
        }
        for key, by_field in grouped.items()
    }


def assert_tier(actual: TierData, expected: TierData) -> None:
    """The same points, keys and fields on both sides; ints exact, floats to 1e-9 relative.

    JSON cannot tell 2.0 from 2, so the stored field *types* are checked with SHOW FIELD KEYS
    (see `assert_field_types`); here a float field may come back as a JSON integer."""
    missing = sorted(set(expected) - set(actual), key=repr)
    extra = sorted(set(actual) - set(expected), key=repr)
    assert not missing, f"{len(missing)} point(s) missing from the tier, e.g. {missing[:3]}"
    assert not extra, f"{len(extra)} unexpected point(s) in the tier, e.g. {extra[:3]}"
    for key, fields in expected.items():
        got = actual[key]
        assert set(got) == set(fields), f"fields of {key}: {sorted(got)} != {sorted(fields)}"
        for name, want in fields.items():
            if isinstance(want, int):
                assert isinstance(got[name], int), f"{key} {name}: {got[name]!r} is no int"
                assert got[name] == want, f"{key} {name}: {got[name]} != {want}"
            else:
                assert math.isclose(got[name], want, rel_tol=1e-9, abs_tol=1e-12), (
                    f"{key} {name}: {got[name]!r} != {want!r}"
                )


# -- running tierflow ----------------------------------------------------------------------


def job(start: datetime, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "measurements": ["sensor"],
        "every": "5m",
        "start": start,
        "aggregates": AGGREGATES,
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


def archive_config(
    tmp_path: Path,
    url: str,
    hot: str,
    measurements: list[str],
    *,
    every: str,
    start: datetime,
    restored: str | None = None,
) -> Path:
    """A config archiving `measurements` of the `hot` bucket into a cold tier under `tmp_path`,
    with a `restored` live tier when given."""
    tables: dict[str, TableBody] = {
        "state": sqlite_state(tmp_path),
        "connections.plant": {"kind": "influxdb1", "url": url},
        "tiers.hot": {"connection": "plant", "bucket": hot},
    }
    if restored:
        tables["tiers.restored"] = {"connection": "plant", "bucket": restored}
    tables["tiers.cold"] = {"archive": str(tmp_path / "archive")}
    tables["jobs.to_cold"] = {
        "kind": "archive",
        "source": "hot",
        "dest": "cold",
        "measurements": measurements,
        "every": every,
        "start": start,
    }
    return write_toml(tmp_path, tables)


@asynccontextmanager
async def open_runner(config_path: Path) -> AsyncIterator[Runner]:
    config = load_config(config_path)
    store = SqliteStateStore(config_path.parent / "state.db")
    runner = Runner(config, store)
    try:
        yield runner
    finally:
        await runner.aclose()
        await store.aclose()


async def run_due(config_path: Path, now: datetime) -> list[BatchRun]:
    """One pass of `Runner.run_due(now)` on a runner opened and closed for it."""
    async with open_runner(config_path) as runner:
        return await runner.run_due(now)


async def run_all(config_path: Path, now: datetime) -> list[BatchRun]:
    """`run_due`, asserting that every batch it ran succeeded."""
    runs = await run_due(config_path, now)
    assert_all_succeeded(runs)
    return runs


def windows_of(runs: Iterable[BatchRun]) -> list[tuple[datetime, datetime]]:
    return [(w.window.start, w.window.stop) for run in runs for w in run.windows]


def grid(start: datetime, every: timedelta, count: int) -> list[tuple[datetime, datetime]]:
    return [(start + i * every, start + (i + 1) * every) for i in range(count)]


def assert_all_succeeded(runs: Iterable[BatchRun]) -> None:
    bad = [(run.batch.range, run.status, run.error) for run in runs if run.status != "succeeded"]
    assert not bad, f"failed runs: {bad}"


# -- what reached the server, as a recording proxy saw it -------------------------------------

_INTO = re.compile(r'\bINTO "(?:[^"\\]|\\.)*"\.(?:"(?:[^"\\]|\\.)*")?\."((?:[^"\\]|\\.)*)"')
_RANGE = re.compile(r"WHERE time >= '([^']+)' AND time < '([^']+)'")


def into_of(exchange: Exchange) -> str | None:
    """The measurement a downsample query writes INTO (None for any other request)."""
    found = _INTO.search(exchange.q or "")
    return found.group(1) if found else None


def downsamples(exchanges: list[Exchange]) -> list[Exchange]:
    """The `SELECT … INTO` queries among the recorded requests."""
    return [e for e in exchanges if e.path == "/query" and into_of(e) is not None]


def time_range(text: str) -> tuple[datetime, datetime]:
    """The `WHERE time >= … AND time < …` bounds of an InfluxQL query (every statement of a
    query tierflow renders has the same bounds: checked)."""
    found = set(_RANGE.findall(text))
    assert len(found) == 1, f"not exactly one time range in {text!r}"
    ((low, high),) = found
    return datetime.fromisoformat(low), datetime.fromisoformat(high)
