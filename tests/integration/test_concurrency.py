"""Concurrency limits, judged where they matter: at the server. Every request tierflow sends goes
through a recording proxy (`tests.proxy`) in front of the real influxd, which counts the requests
in flight at once; a delay at the proxy makes each request last long enough for overlaps to
happen. The settings say what should happen; only the proxy's counts say what did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration._helpers import (
    EVERY,
    assert_all_succeeded,
    assert_tier,
    downsamples,
    expected_tier,
    grid,
    into_of,
    job,
    open_runner,
    run_due,
    telemetry,
    windows_of,
    write_points,
)
from tests.integration.conftest import (
    WARM_RP,
    Databases,
    TierData,
    read_tier,
    sqlite_state,
    write_toml,
)
from tests.proxy import InFlight, Proxy, max_overlap
from tierflow import RunStatus
from tierflow.testing import ThrowawayInfluxd


def two_connection_config(
    path: Path,
    db: str,
    urls: Mapping[str, str],
    jobs: Mapping[str, Mapping[str, object]],
    *,
    scheduler: Mapping[str, object] | None = None,
    limits: Mapping[str, int] | None = None,
) -> Path:
    """Connections named after `urls` (each with hot/warm tiers `hot_<name>`, `warm_<name>` on
    the same database); each job names its `connection`."""
    connections = {
        name: {
            "kind": "influxdb1",
            "url": url,
            "timeout": "30s",
            **({"max_concurrency": limits[name]} if limits and name in limits else {}),
        }
        for name, url in urls.items()
    }
    tiers: dict[str, dict[str, object]] = {}
    for name in urls:
        tiers[f"hot_{name}"] = {"connection": name, "bucket": f"{db}/autogen"}
        tiers[f"warm_{name}"] = {"connection": name, "bucket": f"{db}/{WARM_RP}"}
    job_tables = {
        name: {
            "kind": "downsample",
            "source": f"hot_{spec['connection']}",
            "dest": f"warm_{spec['connection']}",
            **{k: v for k, v in spec.items() if k != "connection"},
        }
        for name, spec in jobs.items()
    }
    tables: dict[str, Mapping[str, object]] = {"state": sqlite_state(path.parent)}
    if scheduler:
        tables["scheduler"] = scheduler
    for section, named in (("connections", connections), ("tiers", tiers), ("jobs", job_tables)):
        tables |= {f"{section}.{name}": table for name, table in named.items()}
    assert path.name == "tierflow.toml"
    return write_toml(path.parent, tables)


def _into(name: str) -> str:
    return "{{ measurement }}_" + name


def chunked_jobs(
    start: datetime, connections: Mapping[str, str], parallel_windows: int | None
) -> dict[str, dict[str, object]]:
    """A job per name of `connections`, on its connection, into a measurement of its own, its
    windows in 5-minute chunks."""
    return {
        name: job(
            start,
            connection=connection,
            into=_into(name),
            parallel_windows=parallel_windows,
            catchup_chunk="5m",
        )
        for name, connection in connections.items()
    }


def suffixed(name: str) -> Callable[[str], str]:
    """What `_into(name)` does to a measurement, computed by the test itself."""
    return lambda measurement: f"{measurement}_{name}"


# -- the tests -------------------------------------------------------------------------------


async def test_a_connection_never_has_more_than_its_max_concurrency_in_flight(
    influxd: ThrowawayInfluxd, db: str, start: datetime, tmp_path: Path
) -> None:
    points = telemetry(21, start)
    write_points(influxd, db, points)
    count = 8
    names = ["a", "b", "c"]
    async with Proxy(influxd.url, delay=0.1, group=into_of) as proxy:
        config = two_connection_config(
            tmp_path / "tierflow.toml",
            db,
            {"plant": proxy.url},
            chunked_jobs(start, dict.fromkeys(names, "plant"), 4),
            limits={"plant": 2},
        )
        runs = await run_due(config, start + count * EVERY)

    assert_all_succeeded(runs)
    for name in names:
        assert windows_of(r for r in runs if r.job == name) == grid(start, EVERY, count)
    queries = downsamples(proxy.exchanges)
    assert len(queries) == len(names) * count
    assert len(proxy.exchanges) == len(queries)  # nothing else was sent
    # Twelve batches wanted to run at once; the connection let two through, and used both.
    assert proxy.max_in_flight == 2
    assert max_overlap(proxy.exchanges) == 2
    assert {e.in_flight for e in proxy.exchanges} == {1, 2}
    # Under concurrency the results stay exact, job by job.
    expected: TierData = {}
    for name in names:
        expected |= expected_tier(points, grid(start, EVERY, count), into=suffixed(name))
    assert len(expected) > 3 * 30
    assert_tier(read_tier(influxd, db, WARM_RP), expected)


@pytest.mark.parametrize("limit", [1, 3])
async def test_the_scheduler_limit_holds_across_connections(
    influxd: ThrowawayInfluxd, db: str, start: datetime, tmp_path: Path, limit: int
) -> None:
    points = telemetry(22, start)
    write_points(influxd, db, points)
    count = 6
    both = InFlight()
    async with (
        Proxy(influxd.url, delay=0.08, shared=both) as one,
        Proxy(influxd.url, delay=0.08, shared=both) as two,
    ):
        config = two_connection_config(
            tmp_path / "tierflow.toml",
            db,
            {"one": one.url, "two": two.url},
            chunked_jobs(start, {"one": "one", "two": "two"}, 4),
            scheduler={"max_concurrency": limit},
        )
        runs = await run_due(config, start + count * EVERY)

    assert_all_succeeded(runs)
    assert len(downsamples(one.exchanges)) == count
    assert len(downsamples(two.exchanges)) == count
    # Counted live across both proxies, and again from the recorded spans.
    assert both.max == limit
    assert max_overlap(one.exchanges + two.exchanges) == limit
    expected = {
        **expected_tier(points, grid(start, EVERY, count), into=lambda m: f"{m}_one"),
        **expected_tier(points, grid(start, EVERY, count), into=lambda m: f"{m}_two"),
    }
    assert_tier(read_tier(influxd, db, WARM_RP), expected)


@pytest.mark.parametrize(("parallel", "count"), [(None, 6), (3, 9)])
async def test_a_job_has_at_most_parallel_windows_in_flight(
    influxd: ThrowawayInfluxd,
    db: str,
    start: datetime,
    tmp_path: Path,
    parallel: int | None,
    count: int,
) -> None:
    points = telemetry(23, start)
    write_points(influxd, db, points)
    names = ["x", "y"]
    async with Proxy(influxd.url, delay=0.1, group=into_of) as proxy:
        config = two_connection_config(
            tmp_path / "tierflow.toml",
            db,
            {"plant": proxy.url},
            chunked_jobs(start, dict.fromkeys(names, "plant"), parallel),
            limits={"plant": 16},
        )
        runs = await run_due(config, start + count * EVERY)

    assert_all_succeeded(runs)
    per_job = parallel or 1
    # Each job at most (and, with enough batches and a wide connection, exactly) its own limit;
    # the jobs themselves ran side by side.
    assert proxy.max_in_flight_by_group() == {f"sensor_{name}": per_job for name in names}
    for name in names:
        mine = [e for e in proxy.exchanges if into_of(e) == f"sensor_{name}"]
        assert len(mine) == count
        assert max_overlap(mine) == per_job
    assert proxy.max_in_flight == 2 * per_job
    expected = {
        key: value
        for name in names
        for key, value in expected_tier(
            points, grid(start, EVERY, count), into=suffixed(name)
        ).items()
    }
    assert_tier(read_tier(influxd, db, WARM_RP), expected)


SLOW = 2.0


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param({}, id="defaults"),
        pytest.param(
            {"scheduler": {"max_concurrency": 2}, "slow_limit": 1, "slow_parallel": 2},
            id="global-limit-with-a-queue-on-the-slow-connection",
        ),
    ],
)
async def test_jobs_on_different_connections_do_not_wait_for_each_other(
    influxd: ThrowawayInfluxd,
    databases: Databases,
    start: datetime,
    tmp_path: Path,
    setup: dict[str, Any],
) -> None:
    db = databases.new()
    points = telemetry(24, start)
    write_points(influxd, db, points)
    count = 12
    slow_parallel = setup.get("slow_parallel", 1)
    async with (
        Proxy(influxd.url, delay=SLOW) as slow,
        Proxy(influxd.url) as fast,
    ):
        config = two_connection_config(
            tmp_path / "tierflow.toml",
            db,
            {"slow": slow.url, "fast": fast.url},
            {
                # The slow job's windows go in one query per `slow_parallel` (the fast one's one
                # query per window).
                "slow": job(
                    start,
                    connection="slow",
                    into=_into("slow"),
                    parallel_windows=slow_parallel,
                    catchup_chunk=f"{count * 5 // slow_parallel}m",
                ),
                "fast": job(start, connection="fast", into=_into("fast"), catchup_chunk="5m"),
            },
            scheduler=setup.get("scheduler"),
            limits={"slow": setup.get("slow_limit", 4)},
        )
        async with open_runner(config) as runner:
            runs = await runner.run_due(start + count * EVERY)
            ledger = {name: await runner.store.entries(name, start) for name in ("slow", "fast")}

    assert_all_succeeded(runs)
    slow_queries, fast_queries = downsamples(slow.exchanges), downsamples(fast.exchanges)
    assert len(slow_queries) == slow_parallel
    assert len(fast_queries) == count
    first_slow_answer = min(e.ended for e in slow_queries if e.ended is not None)
    assert first_slow_answer - slow_queries[0].started >= SLOW
    # The fast job started while the slow one was under way, and was done long before it.
    assert fast_queries[0].started < first_slow_answer
    last_fast_answer = max(e.ended for e in fast_queries if e.ended is not None)
    assert last_fast_answer < first_slow_answer - SLOW / 2
    # The ledger agrees (its clock is the wall clock, the proxy's a monotonic one).
    assert {e.status for entries in ledger.values() for e in entries} == {RunStatus.SUCCEEDED}
    fast_done = max(e.finished_at for e in ledger["fast"] if e.finished_at is not None)
    slow_done = min(e.finished_at for e in ledger["slow"] if e.finished_at is not None)
    assert slow_done - fast_done > timedelta(seconds=SLOW / 2)
    expected = {
        **expected_tier(points, grid(start, EVERY, count), into=lambda m: f"{m}_slow"),
        **expected_tier(points, grid(start, EVERY, count), into=lambda m: f"{m}_fast"),
    }
    assert_tier(read_tier(influxd, db, WARM_RP), expected)
