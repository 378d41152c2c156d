"""Late data re-checked on booleans and strings: a `recheck` job's fingerprint must be a query
InfluxDB accepts for every field type (1.6.7 refuses `sum` of a boolean or a string), and must
still change when late data changes what the job writes for a window.

The warm tier is compared with InfluxDB's own `SELECT … INTO` of the same aggregates over the
final source data, written to a database of its own.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.integration._helpers import (
    EVERY,
    assert_all_succeeded,
    grid,
    job,
    ns,
    open_runner,
    windows_of,
)
from tests.integration.conftest import WARM_RP, ConfigWriter, Databases, read_tier
from tierflow.testing import ThrowawayInfluxd

COUNT = 12  # one hour of 5-minute windows
AGGREGATES = {"online": ["min", "max", "count"], "state": ["first", "last", "count"]}
S = 10**9

# Per series, per window: (seconds into the window, online, state). In every window each
# series has points, host c the latest one, and host b a false among trues: so a boolean
# rewritten in host a, or host a's last string rewritten, changes no count, and no minimum,
# maximum, first or last taken across all series.
POINTS = {
    "a": [(10, True, "a-first"), (20, True, "a-mid"), (100, True, "a-last")],
    "b": [(5, False, "b-first"), (30, True, "b-last")],
    "c": [(50, True, "c-first"), (250, True, "c-last")],
}


def source_lines(start: datetime) -> list[str]:
    lines = []
    for index in range(COUNT):
        low = ns(start + index * EVERY)
        for host, points in POINTS.items():
            for second, online, state in points:
                lines.append(point(host, low + second * S, online=online, state=f"{state}{index}"))
    return lines


def point(
    host: str,
    time: int,
    *,
    online: bool | None = None,
    state: str | None = None,
    state_flag: bool | None = None,
) -> str:
    """A line of `sensor`; `state_flag` writes `state` as a boolean."""
    fields = [] if online is None else [f"online={str(online).lower()}"]
    fields += [] if state is None else [f'state="{state}"']
    fields += [] if state_flag is None else [f"state={str(state_flag).lower()}"]
    return f"sensor,host={host} {','.join(fields)} {time}"


def late_lines(case: str, low: int, index: int) -> list[str]:
    """Late data for one window (starting at `low` ns)."""
    if case == "a changed boolean and a new string":
        return [point("a", low + 20 * S, online=False), point("c", low + 200 * S, state="late")]
    if case == "a rewritten boolean":
        return [point("a", low + 20 * S, online=False)]
    assert case == "a rewritten string"
    return [point("a", low + 100 * S, state=f"a-rewritten{index}")]


def oracle(server: ThrowawayInfluxd, databases: Databases, db: str, start: datetime) -> str:
    """InfluxDB's own aggregates of the final source, in a database of their own."""
    into = databases.new()
    select = ", ".join(
        f'{function}("{field}") AS "{field}_{function}"'
        for field, functions in AGGREGATES.items()
        for function in functions
    )
    stop = start + COUNT * EVERY
    server.execute(
        f'SELECT {select} INTO "{into}"."autogen"."sensor" FROM "{db}"."autogen"."sensor" '
        f"WHERE time >= {ns(start)} AND time < {ns(stop)} GROUP BY time(5m), *",
        db=db,
    )
    return into


@pytest.mark.parametrize(
    "case", ["a changed boolean and a new string", "a rewritten boolean", "a rewritten string"]
)
async def test_late_booleans_and_strings_rerun_exactly_their_window(
    influxd: ThrowawayInfluxd,
    databases: Databases,
    db: str,
    write_config: ConfigWriter,
    start: datetime,
    case: str,
) -> None:
    influxd.write(source_lines(start), db=db)
    now = start + COUNT * EVERY
    windows = grid(start, EVERY, COUNT)
    changed = 5
    before = read_tier(influxd, oracle(influxd, databases, db, start), "autogen")

    config = write_config(db, {"down": job(start, recheck="2h", aggregates=AGGREGATES)})
    async with open_runner(config) as runner:
        assert_all_succeeded(await runner.run_due(now))
        assert await runner.recheck("down", now) == []
        influxd.write(late_lines(case, ns(windows[changed][0]), changed), db=db)
        rerun = await runner.recheck("down", now)
        settled = await runner.recheck("down", now)

    # Only the detection is checked: the warm tier is not compared with an INTO over both
    # hours, since InfluxDB itself reads one type of a mixed field per query.
    assert_all_succeeded(rerun)
    assert windows_of(rerun) == [windows[changed]]
    assert settled == []
    expected = read_tier(influxd, oracle(influxd, databases, db, start), "autogen")
    assert expected != before  # the late data changed what the window holds
    assert read_tier(influxd, db, WARM_RP) == expected


async def test_a_field_with_another_type_in_another_shard_is_fingerprinted_in_both(
    influxd: ThrowawayInfluxd,
    db: str,
    write_config: ConfigWriter,
    start: datetime,
) -> None:
    # One-hour shards: `state` is a string in the first hour and a boolean in the second,
    # so SHOW FIELD KEYS lists it twice and each window holds one of the two.
    for rp in ("autogen", WARM_RP):
        influxd.execute(f'ALTER RETENTION POLICY "{rp}" ON "{db}" SHARD DURATION 1h')
    hour = 12
    windows = grid(start, EVERY, 2 * hour)
    lines = source_lines(start)
    for index in range(hour, 2 * hour):
        low = ns(windows[index][0])
        for host, points in POINTS.items():
            lines += [point(host, low + second * S, state_flag=on) for second, on, _ in points]
    influxd.write(lines, db=db)
    now = start + 2 * hour * EVERY
    changed = hour + 3  # in the boolean hour
    aggregates = {"state": ["first", "last", "count"]}

    config = write_config(db, {"down": job(start, recheck="3h", aggregates=aggregates)})
    async with open_runner(config) as runner:
        assert_all_succeeded(await runner.run_due(now))
        assert await runner.recheck("down", now) == []
        low = ns(windows[changed][0])
        influxd.write([point("a", low + 100 * S, state_flag=False)], db=db)  # a's last
        rerun = await runner.recheck("down", now)

    # Only the detection is checked: the warm tier is not compared with an INTO over both
    # hours, since InfluxDB itself reads one type of a mixed field per query.
    assert_all_succeeded(rerun)
    assert windows_of(rerun) == [windows[changed]]
