"""Migration must beat expiry: at-risk batches get the scheduler's slots first, and an at-risk
failed window is retried after the base delay, not the full backoff."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.events import Events
from tests.fakes import FakeEngine
from tierflow._config import Config, parse_config
from tierflow._engines import Execution
from tierflow._errors import QueryError
from tierflow._runner import Mode, Runner
from tierflow._state import MemoryStateStore, RunStatus
from tierflow._templates import RenderedQuery

START = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)
NOW = START + 10 * H

_BOUNDS = re.compile(r"time >= '([^']+)' AND time < '([^']+)'")


def hour_of(query: RenderedQuery) -> int:
    """Which hourly window (counted from START) a query covers."""
    start, stop = (datetime.fromisoformat(t) for t in _BOUNDS.findall(query.text)[0])
    assert stop - start == H
    return hour_of_window(start)


def hour_of_window(start: datetime) -> int:
    return (start - START) // H


def two_jobs(shared: str) -> Config:
    """`steady` (listed first, source data kept forever) and `expiring` (retention 10h, margin
    3h), hourly from START, on one connection; one slot in all, global or the connection's."""
    scheduler = "max_concurrency = 1" if shared == "global" else ""
    connection = "max_concurrency = 1" if shared == "connection" else ""
    text = f"""
    [scheduler]
    {scheduler}

    [connections.plant]
    kind = "influxdb1"
    url = "http://influx.example:8086"
    {connection}

    [tiers.steady]
    connection = "plant"
    bucket = "steady/autogen"

    [tiers.expiring]
    connection = "plant"
    bucket = "expiring/autogen"
    retention = "10h"
    expiry_margin = "3h"

    [tiers.steady_rollup]
    connection = "plant"
    bucket = "steady_rollup"

    [tiers.expiring_rollup]
    connection = "plant"
    bucket = "expiring_rollup"

    [jobs.steady]
    kind = "downsample"
    source = "steady"
    dest = "steady_rollup"
    measurements = ["cpu"]
    every = "1h"
    start = 2026-01-01T00:00:00Z
    aggregates = {{ usage = ["mean"] }}

    [jobs.expiring]
    kind = "downsample"
    source = "expiring"
    dest = "expiring_rollup"
    measurements = ["cpu"]
    every = "1h"
    start = 2026-01-01T00:00:00Z
    aggregates = {{ usage = ["mean"] }}
    """
    return parse_config(tomllib.loads(text), Path("t.toml"))


# At NOW, with retention 10h and margin 3h, a window is at risk if it starts before
# NOW - 10h + 3h = START + 3h: windows 0, 1 and 2 of `expiring`. None of `steady` ever is.
AT_RISK = [0, 1, 2]


@pytest.mark.parametrize("shared", ["global", "connection"])
async def test_at_risk_batches_take_the_shared_slot_first(shared: str, events: Events) -> None:
    config = two_jobs(shared)
    limits = (config.scheduler.max_concurrency, config.connections["plant"].max_concurrency)
    assert min(limits) == 1 < max(limits)
    fake = FakeEngine(points=1)
    runner = Runner(config, MemoryStateStore(), engines={"plant": fake}, clock=lambda: NOW)

    runs = await runner.run_due(NOW)

    assert len(runs) == 20
    assert {run.status for run in runs} == {RunStatus.SUCCEEDED}
    job_of = {"steady_rollup": "steady", "expiring_rollup": "expiring"}
    order = [(job_of[str(call.database)], hour_of(call.query)) for call in fake.calls]
    assert sorted(order) == sorted((job, k) for job in job_of.values() for k in range(10))
    # `steady` asked first and found the slot free; from then on every at-risk batch of
    # `expiring` goes before `steady`'s next one (first come first served would alternate).
    assert order[:5] == [
        ("steady", 0),
        *(("expiring", k) for k in AT_RISK),
        ("steady", 1),
    ]
    # Within each job, oldest first as ever.
    for job in job_of.values():
        assert [k for j, k in order if j == job] == list(range(10))

    finished = {(f["job"], f["window_start"]): f for f in events.named("window_succeeded")}
    for k in range(10):
        start = (START + k * H).isoformat().replace("+00:00", "Z")
        expiring = finished["expiring", start]
        if k in AT_RISK:
            assert expiring["at_risk"] is True
            expires = (START + k * H + 10 * H).isoformat().replace("+00:00", "Z")
            assert expiring["expires_at"] == expires
        else:
            assert "at_risk" not in expiring
        assert "at_risk" not in finished["steady", start]
    started = [f for f in events.named("window_started") if f.get("at_risk")]
    assert sorted(f["window_start"] for f in started) == sorted(
        (START + k * H).isoformat().replace("+00:00", "Z") for k in AT_RISK
    )


class FailsWindows(FakeEngine):
    """Fails every query over one of the hourly windows `failing` (counted from START)."""

    def __init__(self, failing: set[int]) -> None:
        super().__init__(points=1)
        self.failing = failing

    async def execute(self, query: RenderedQuery, *, database: str | None = None) -> Execution:
        if hour_of(query) in self.failing:
            self.fail_on(len(self.calls), QueryError("field type conflict"))
        return await super().execute(query, database=database)


def one_job() -> Config:
    """Hourly windows from START; source retention 10h, margin 2h45m: at NOW a window is at risk
    if it starts before START + 2h45m, and window k is at risk from START + k h + 7h15m."""
    text = """
    [scheduler]
    retry_delay = "30m"
    max_retry_delay = "4h"
    max_window_attempts = 3

    [connections.plant]
    kind = "influxdb1"
    url = "http://influx.example:8086"

    [tiers.raw]
    connection = "plant"
    bucket = "raw/autogen"
    retention = "10h"
    expiry_margin = "2h45m"

    [tiers.rollup]
    connection = "plant"
    bucket = "rollup"

    [jobs.cpu]
    kind = "downsample"
    source = "raw"
    dest = "rollup"
    measurements = ["cpu"]
    every = "1h"
    start = 2026-01-01T00:00:00Z
    aggregates = { usage = ["mean"] }
    """
    return parse_config(tomllib.loads(text), Path("t.toml"))


async def test_a_patient_runner_retries_an_at_risk_window_after_the_base_delay() -> None:
    # Windows 0 (at risk already), 4 (at risk from START + 11h15m) and 8 (from START + 15h15m)
    # always fail. Backoff: 30m after attempt 1, 60m after attempt 2; parked after attempt 3.
    failing = {0, 4, 8}
    fake = FailsWindows(failing)
    clock = [NOW]
    runner = Runner(one_job(), MemoryStateStore(), engines={"plant": fake}, clock=lambda: clock[0])
    runner.mode = Mode.DAEMON

    async def retried_at(moment: datetime) -> list[int]:
        clock[0] = moment
        runs = await runner.run_due(moment)
        return sorted(k for run in runs if (k := hour_of_window(run.batch.range.start)) in failing)

    assert await retried_at(NOW) == [0, 4, 8]  # attempt 1
    assert await retried_at(NOW + 29 * M) == []  # even at risk, the base delay holds
    assert await retried_at(NOW + 30 * M) == [0, 4, 8]  # attempt 2, after the base delay
    # Attempt 2 failed at 10h30m. Window 0 is at risk: base delay (30m), not 60m. Window 4 is
    # not yet, but will be at 11h15m, before its backoff ends (11h30m). Window 8 waits it out.
    assert await runner.next_wake("cpu", NOW + 30 * M) == START + 11 * H
    assert await retried_at(START + 11 * H) == [0]  # attempt 3: parked
    assert await runner.next_wake("cpu", START + 11 * H) == START + 11 * H + 15 * M
    assert await retried_at(START + 11 * H + 14 * M) == []
    assert await retried_at(START + 11 * H + 15 * M) == [4]
    assert await retried_at(START + 11 * H + 30 * M) == [8]
    # Parked windows stay parked, at risk or not: they wait for `tierflow retry`.
    assert await retried_at(START + 20 * H) == []
    parked = {e.window.start for e in await runner.store.entries("cpu", START) if e.parked}
    assert parked == {START + k * H for k in failing}
