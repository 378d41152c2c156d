"""Catching up on many windows: coalesced queries, `max_catchup`, backfill.

The number of queries is counted where they arrive, at a recording proxy in front of the real
influxd (`tests.proxy`); what lands in the warm tier is compared with plain Python's aggregates
of the raw points the test wrote (`expected_tier`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration._helpers import (
    EVERY,
    Point,
    assert_all_succeeded,
    assert_tier,
    downsamples,
    expected_tier,
    grid,
    job,
    ns,
    open_runner,
    readings,
    run_due,
    time_range,
    windows_of,
    write_points,
)
from tests.integration.conftest import WARM_RP, ConfigWriter, Databases, read_tier
from tests.integration.test_cli import ok_json, rfc3339, tierflow
from tests.proxy import Proxy, ThreadedProxy
from tierflow import RunStatus
from tierflow.testing import ThrowawayInfluxd

HOURS = 6
SPAN = timedelta(hours=HOURS)
COUNT = SPAN // EVERY  # 72 windows of 5 minutes


def plan_json(config: Path, now: datetime) -> Any:
    return ok_json(
        tierflow(
            "plan", "-c", config, "--now", rfc3339(now), "--json", "--windows", cwd=config.parent
        )
    )


def as_window(item: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(item["start"]), datetime.fromisoformat(item["stop"])


CHUNKS = {  # catchup_chunk → (its length, queries for the 72 windows, windows per query)
    "1h": (timedelta(hours=1), 6, 12),
    "5m": (timedelta(minutes=5), 72, 1),
    # Not a multiple of the window: two windows (10m) fit in a query, never three (15m).
    "12m": (timedelta(minutes=12), 36, 2),
}


async def test_coalesced_catchup_sends_one_query_per_chunk_and_writes_the_same_points(
    influxd: ThrowawayInfluxd,
    databases: Databases,
    write_config: ConfigWriter,
    start: datetime,
    tmp_path: Path,
) -> None:
    points = readings(31, start, COUNT)
    expected = expected_tier(points, grid(start, EVERY, COUNT))
    assert len(expected) > 300
    now = start + SPAN
    tiers = {}
    for chunk, (length, queries, per_query) in CHUNKS.items():
        db = databases.new()
        write_points(influxd, db, points)
        async with Proxy(influxd.url) as proxy:
            spec = job(start, catchup_chunk=chunk)
            config = write_config(db, {"down": spec}, url=proxy.url, directory=tmp_path / chunk)
            plan = await asyncio.to_thread(plan_json, config, now)
            runs = await run_due(config, now)

        assert_all_succeeded(runs)
        assert windows_of(runs) == grid(start, EVERY, COUNT)
        assert [len(run.batch.windows) for run in runs] == [per_query] * queries
        # At the server: exactly one query per chunk, each covering its windows, no more.
        sent = downsamples(proxy.exchanges)
        assert len(sent) == len(proxy.exchanges) == queries, chunk
        ranges = sorted(time_range(e.q or "") for e in sent)
        assert ranges == [
            (start + i * per_query * EVERY, start + (i + 1) * per_query * EVERY)
            for i in range(queries)
        ]
        assert all(high - low <= length for low, high in ranges)
        # `plan` shows the batches that then ran, each with the exact text that reached the
        # server, and (asked with --windows) every window each covers.
        (listed,) = plan["jobs"]
        batches = listed["batches"]
        assert (listed["windows_due"], listed["queries"]) == (COUNT, queries)
        assert {b["action"] for b in batches} == {"run"}
        assert [b["window_count"] for b in batches] == [per_query] * queries
        assert [as_window(w) for b in batches for w in b["windows"]] == grid(start, EVERY, COUNT)
        for batch in batches:
            assert time_range(batch["query"]) == as_window(batch)
            assert len(batch["windows"]) == batch["window_count"]
        assert [b["query"] for b in batches] == [e.q for e in sent]

        tiers[chunk] = read_tier(influxd, db, WARM_RP)
        assert_tier(tiers[chunk], expected)

    assert tiers["1h"] == tiers["5m"] == tiers["12m"]


async def test_max_catchup_skips_the_old_windows_and_the_watermark_passes_them(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter, start: datetime
) -> None:
    points = readings(32, start, COUNT)
    write_points(influxd, db, points)
    now = start + SPAN
    horizon = now - timedelta(hours=1)
    skipped, kept = grid(start, EVERY, COUNT - 12), grid(horizon, EVERY, 12)

    async with Proxy(influxd.url) as proxy:
        config = write_config(db, {"down": job(start, max_catchup="1h")}, url=proxy.url)
        plan = await asyncio.to_thread(plan_json, config, now)
        async with open_runner(config) as runner:
            runs = await runner.run_due(now)
            (status,) = await runner.status(now)
            again = await runner.run_due(now)
            history = await runner.store.history("down", limit=1000)
            ledger = await runner.store.entries("down", start)

    (listed,) = plan["jobs"]
    assert (listed["windows_skipped"], listed["windows_due"]) == (len(skipped), len(kept))
    actions = [
        (as_window(w), b["action"], b["query"]) for b in listed["batches"] for w in b["windows"]
    ]
    assert [(w, a) for w, a, _ in actions] == [(w, "skip") for w in skipped] + [
        (w, "run") for w in kept
    ]
    assert {q for _, a, q in actions if a == "skip"} == {None}
    (query,) = {q for _, a, q in actions if a == "run"}
    assert time_range(query) == (horizon, now)
    # The skipped windows are one run of them: a line, not a line each.
    assert [(b["action"], b["window_count"]) for b in listed["batches"]] == [
        ("skip", len(skipped)),
        ("run", len(kept)),
    ]

    assert_all_succeeded(runs)
    assert windows_of(runs) == kept
    assert again == []
    # Only the last hour was read: one query, and nothing else reached the server.
    (sent,) = proxy.exchanges
    assert sent.q == query
    # Skipped windows are recorded as such (not run, not failed) and the watermark passed them.
    # (A history row is a run of windows claimed together: its windows, one by one.)
    assert sorted((w.start, w.stop) for a in history for w in a.each()) == skipped + kept
    by_status = {
        status: sorted((w.start, w.stop) for a in history if a.status == status for w in a.each())
        for status in {a.status for a in history}
    }
    assert by_status == {RunStatus.SKIPPED: skipped, RunStatus.SUCCEEDED: kept}
    assert {a.reason for a in history if a.status == RunStatus.SKIPPED} == {"max_catchup"}
    assert {a.reason for a in history if a.status == RunStatus.SUCCEEDED} == {"scheduled"}
    assert [(e.window.start, e.window.stop, e.status) for e in ledger] == [
        (*w, RunStatus.SKIPPED) for w in skipped
    ] + [(*w, RunStatus.SUCCEEDED) for w in kept]
    assert (status.watermark, status.pending_windows, status.failed_windows) == (now, 0, 0)
    # Nothing of the skipped windows is in the warm tier; the rest is exact.
    expected = expected_tier(points, kept)
    assert_tier(read_tier(influxd, db, WARM_RP), expected)
    assert {time for _, time, _ in expected} == {ns(low) for low, _ in kept}


@pytest.mark.parametrize(
    ("chunk", "begin", "end", "per_query"),
    [
        pytest.param("1h", 0, 72, 12, id="1h-all"),
        pytest.param("12m", 0, 72, 2, id="12m-all"),
        # Chunks count from the first window of the range, not from the hour.
        pytest.param("1h", 6, 30, 12, id="1h-from-half-past"),
    ],
)
def test_a_backfill_coalesces_like_a_catchup(
    influxd: ThrowawayInfluxd,
    db: str,
    write_config: ConfigWriter,
    start: datetime,
    tmp_path: Path,
    chunk: str,
    begin: int,
    end: int,
    per_query: int,
) -> None:
    points = readings(33, start, COUNT)
    write_points(influxd, db, points)
    now = start + SPAN
    # The first run goes straight to the server; the backfill, after late data, through the
    # proxy, from the real `tierflow backfill` process.
    config = write_config(db, {"down": job(start, catchup_chunk=chunk)})
    ok_json(tierflow("run-once", "-c", config, "--now", rfc3339(now), "--json", cwd=tmp_path))
    late = [
        Point(
            "sensor",
            (("host", "h1"), ("site", "berlin")),
            ns(start + i * EVERY) + 11,
            {"temp": 99.0},
        )
        for i in range(COUNT)
    ]
    write_points(influxd, db, late)
    low, high = start + begin * EVERY, start + end * EVERY

    with ThreadedProxy(influxd.url) as proxy:
        config = write_config(db, {"down": job(start, catchup_chunk=chunk)}, url=proxy.url)
        body = ok_json(
            tierflow(
                "backfill",
                "down",
                "--from",
                rfc3339(low),
                "--to",
                rfc3339(high),
                "--now",
                rfc3339(now),
                "--json",
                "-c",
                config,
                cwd=tmp_path,
            )
        )
        sent = downsamples(proxy.proxy.exchanges)

    windows = grid(low, EVERY, end - begin)
    assert [as_window(run) for run in body["runs"]] == windows
    assert (body["succeeded"], body["failed"]) == (end - begin, 0)
    queries = (end - begin) // per_query
    assert len(sent) == queries
    assert sorted(time_range(e.q or "") for e in sent) == [
        (low + i * per_query * EVERY, low + (i + 1) * per_query * EVERY) for i in range(queries)
    ]
    # The backfilled windows see the late points; the others keep what the first run wrote.
    all_windows = grid(start, EVERY, COUNT)
    outside = [w for w in all_windows if w not in windows]
    expected = {**expected_tier(points, outside), **expected_tier(points + late, windows)}
    assert_tier(read_tier(influxd, db, WARM_RP), expected)
