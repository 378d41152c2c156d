"""A catch-up is planned a page of the ledger at a time, as the runner takes its batches: what
the runner holds does not grow with the length of the catch-up, and the batches, skips and
outcomes are those of planning it whole."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.unit.test_runner import START, ledger, make_config, make_runner, ranges_run
from tierflow._errors import QueryError
from tierflow._planner import Batch
from tierflow._runner import _loop, _planning
from tierflow._runner._planning import Mode, Planning
from tierflow._state import Claim, LedgerEntry, MemoryStateStore, RunStatus
from tierflow._windows import Window

Q = timedelta(minutes=15)
H = timedelta(hours=1)


class RecordingStore(MemoryStateStore):
    """The memory store, noting each ledger read and each claim in the order they come."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, ...]] = []

    async def entries(
        self, job: str, since: datetime, until: datetime | None = None
    ) -> list[LedgerEntry]:
        self.calls.append(("entries", since, until))
        return await super().entries(job, since, until)

    async def claim(self, job: str, windows: Sequence[Window], **kwargs: Any) -> Claim:
        self.calls.append(("claim", windows[0].start, len(windows), kwargs.get("reason")))
        return await super().claim(job, windows, **kwargs)


def quarters(first: int, count: int) -> list[Window]:
    return [Window(START + k * Q, START + (k + 1) * Q) for k in range(first, first + count)]


def planned_reads(calls: list[tuple[Any, ...]], claims: list[Window]) -> list[tuple[Any, ...]]:
    """The calls, less the runner's read of a claim's attempt numbers (its claimed range)."""
    return [c for c in calls if not (c[0] == "entries" and Window(c[1], c[2]) in claims)]


async def test_a_catch_up_reads_the_ledger_a_page_at_a_time_as_batches_are_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_planning, "PAGE_WINDOWS", 6)  # a page: 6 quarters, 1h30m
    store = RecordingStore()
    runner, _, fake = make_runner(make_config(every="15m", catchup_chunk="1h"), now=START + 5 * H)
    runner.store = store
    runner._planning.store = store

    runs = await runner.run_due(START + 5 * H)

    hours = [Window(START + k * H, START + (k + 1) * H) for k in range(5)]
    assert ranges_run(fake) == hours  # four quarters a query, as planned in one go
    assert [run.batch for run in runs] == [Batch(quarters(4 * k, 4)) for k in range(5)]
    # Each page is read just before the batches it completes are claimed, never ahead.
    page = [START + k * 6 * Q for k in range(4)] + [START + 5 * H]
    assert planned_reads(store.calls, hours) == [
        ("entries", page[0], page[1]),
        ("claim", hours[0].start, 4, "scheduled"),
        ("entries", page[1], page[2]),
        ("claim", hours[1].start, 4, "scheduled"),
        ("claim", hours[2].start, 4, "scheduled"),
        ("entries", page[2], page[3]),
        ("claim", hours[3].start, 4, "scheduled"),
        ("entries", page[3], page[4]),
        ("claim", hours[4].start, 4, "scheduled"),
    ]
    # A claim's attempt numbers are read once for it, not once per window or per part.
    attempt_reads = [c for c in store.calls if c[0] == "entries" and Window(c[1], c[2]) in hours]
    assert len(attempt_reads) == len(hours)


async def test_planning_a_year_reads_one_page_for_the_first_batches() -> None:
    config = make_config(every="1m", catchup_chunk="1h")
    store = RecordingStore()
    planning = Planning(config, store, make_runner(config)[0].metrics)
    year = START + timedelta(days=365)

    stream = planning.batches("cpu", year, Mode.ONCE)
    first = [await anext(stream) for _ in range(3)]
    await stream.aclose()

    assert [b.range for b in first] == [
        Window(START + k * H, START + (k + 1) * H) for k in range(3)
    ]
    (read,) = store.calls  # one page of the ledger, not the year's
    assert read == ("entries", START, START + _planning.PAGE_WINDOWS * timedelta(minutes=1))


async def test_a_whole_plan_of_a_year_is_its_batches() -> None:
    config = make_config(every="1m", catchup_chunk="1h")
    runner = make_runner(config)[0]

    (plan,) = await runner.plan(START + timedelta(days=365))

    assert len(plan.batches) == 8_760
    assert plan.window_count == 525_600
    assert await runner.due_count(START + timedelta(days=365)) == 525_600
    assert all(b.count == 60 for b in plan.batches)
    assert [b.first.start for b in plan.batches[:2]] == [START, START + H]


async def test_max_catchup_skips_a_page_at_a_time_and_logs_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_planning, "PAGE_WINDOWS", 3)
    monkeypatch.setattr(_loop, "_SKIP_CHUNK", 5)
    store = RecordingStore()
    config = make_config(every="15m", catchup_chunk="1h", max_catchup="1h")
    runner, _, fake = make_runner(config, now=START + 5 * H)
    runner.store = store
    runner._planning.store = store

    (plan,) = await runner.plan(START + 5 * H)
    with caplog.at_level(logging.WARNING, logger="tierflow"):
        runs = await runner.run_due(START + 5 * H)

    # The plan's skipped windows are one run, whatever the pages cut.
    assert plan.skipped == (Batch(quarters(0, 16)),)
    assert plan.batches == (Batch(quarters(16, 4)),)
    skips = [c for c in store.calls if c[0] == "claim" and c[3] == "max_catchup"]
    assert [(c[1], c[2]) for c in skips] == [
        (START, 5),
        (START + 5 * Q, 5),
        (START + 10 * Q, 5),
        (START + 15 * Q, 1),
    ]
    assert ranges_run(fake) == [Window(START + 4 * H, START + 5 * H)]
    assert [run.batch for run in runs] == [Batch(quarters(16, 4))]
    found = await ledger(store)
    assert found == dict.fromkeys(quarters(0, 16), (RunStatus.SKIPPED, 1)) | dict.fromkeys(
        quarters(16, 4), (RunStatus.SUCCEEDED, 1)
    )
    (skipped,) = [r for r in caplog.records if r.getMessage() == "windows_skipped"]
    fields = skipped.tierflow_fields  # type: ignore[attr-defined]
    assert (fields["windows"], fields["window_start"], fields["window_stop"]) == (
        16,
        "2026-01-01T00:00:00Z",
        "2026-01-01T04:00:00Z",
    )


async def test_parallel_workers_share_one_stream_and_run_each_window_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_planning, "PAGE_WINDOWS", 5)
    config = make_config(every="15m", catchup_chunk="30m", parallel_windows=3)
    runner, store, fake = make_runner(config, now=START + 6 * H)

    runs = await runner.run_due(START + 6 * H)

    halves = [Window(START + k * 2 * Q, START + (k + 1) * 2 * Q) for k in range(12)]
    assert sorted(ranges_run(fake)) == halves
    assert [run.batch.range for run in runs] == halves
    assert await ledger(store) == dict.fromkeys(quarters(0, 24), (RunStatus.SUCCEEDED, 1))
    assert await store.watermark("cpu") == START + 6 * H


async def test_a_long_catch_up_keeps_one_shared_attempts_tuple() -> None:
    config = make_config(every="1m", catchup_chunk="1h")
    runner, _, _ = make_runner(config, now=START + 3 * H)

    runs = await runner.run_due(START + 3 * H)

    assert [run.attempts for run in runs] == [(1,) * 60] * 3
    # Every run's attempts are one tuple, not one each: runs kept for a report stay small.
    assert len({id(run.attempts) for run in runs}) == 1


async def test_status_and_next_wake_read_the_ledger_a_page_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Windows 1 and 6 fail (not transient); the rest succeed: the watermark stays at window 1,
    # with the ledger of 18 later windows beyond it, read across pages of 3.
    config = make_config(every="15m", catchup_chunk="15m")
    now = START + 5 * H
    runner, _, fake = make_runner(config, now=now)
    store = RecordingStore()
    runner.store = store
    runner._planning.store = store
    fake.fail_on(1, QueryError("bad"))
    fake.fail_on(6, QueryError("bad"))
    await runner.run_due(now)
    whole = await runner.status(now)
    monkeypatch.setattr(_planning, "PAGE_WINDOWS", 3)
    store.calls.clear()

    paged = await runner.status(now)
    reads = [c for c in store.calls if c[0] == "entries"]
    wake = await runner.next_wake("cpu", now)

    (status,) = paged
    assert paged == whole
    assert (status.failed_windows, status.parked_windows, status.pending_windows) == (2, 0, 2)
    assert status.watermark == START + Q
    assert reads[0] == ("entries", START + Q, START + 4 * Q)
    assert all(until is None or until - since == 3 * Q for _, since, until in reads)
    assert len(reads) == 7  # [1, 4) [4, 7) … [16, 19) and the rest of the ledger from 19 on
    assert wake == now  # the failed windows are due already: the job has work now
