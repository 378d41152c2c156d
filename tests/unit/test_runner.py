"""The runner against a fake engine and the in-memory state store, with a frozen clock."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeEngine
from tierflow._config import Config, parse_config
from tierflow._errors import QueryError, TierflowError, TransientEngineError
from tierflow._jobs import render_job
from tierflow._runner import BatchRun, JobStatus, Mode, Runner
from tierflow._state import MemoryStateStore, Outcome, RunStatus
from tierflow._state._rules import WindowState
from tierflow._windows import Window

START = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)
NOW = START + 5 * H


def make_config(**job: Any) -> Config:
    body: dict[str, Any] = {
        "kind": "downsample",
        "source": "raw",
        "dest": "rollup",
        "measurements": ["cpu"],
        "every": "1h",
        "start": START,
        "aggregates": {"usage": ["mean"]},
    }
    body.update(job)
    raw = {
        "connections": {"plant": {"kind": "influxdb1", "url": "http://influx.example:8086"}},
        "tiers": {
            "raw": {"connection": "plant", "bucket": "raw/autogen"},
            "rollup": {"connection": "plant", "bucket": "rollup"},
        },
        "jobs": {"cpu": body},
    }
    return parse_config(raw, Path("t.toml"))


def make_runner(
    config: Config | None = None, *, now: datetime = NOW, engine: FakeEngine | None = None
) -> tuple[Runner, MemoryStateStore, FakeEngine]:
    store = MemoryStateStore()
    fake = engine or FakeEngine(points=7)
    runner = Runner(config or make_config(), store, engines={"plant": fake}, clock=lambda: now)
    return runner, store, fake


def hourly(k: int) -> Window:
    return Window(START + k * H, START + (k + 1) * H)


_BOUNDS = re.compile(r"time >= '([^']+)' AND time < '([^']+)'")


def ranges_run(fake: FakeEngine) -> list[Window]:
    """The time range of every query the engine received, read back from the query text."""
    found = []
    for query in fake.queries:
        start, stop = _BOUNDS.findall(query.text)[0]
        found.append(Window(datetime.fromisoformat(start), datetime.fromisoformat(stop)))
    return found


def windows_of(runs: list[BatchRun]) -> list[Window]:
    return [window for run in runs for window in run.batch.windows]


async def ledger(store: MemoryStateStore, job: str = "cpu") -> dict[Window, tuple[RunStatus, int]]:
    return {e.window: (e.status, e.attempts) for e in await store.entries(job, START - 24 * H)}


# --- run_due -----------------------------------------------------------------------------------


async def test_run_due_runs_every_due_window_once_in_order() -> None:
    runner, store, fake = make_runner()
    runs = await runner.run_due(NOW)
    expected = [hourly(k) for k in range(5)]
    assert ranges_run(fake) == expected
    assert windows_of(runs) == expected
    assert {call.database for call in fake.calls} == {"rollup"}
    assert all(run.status is RunStatus.SUCCEEDED and run.error is None for run in runs)
    assert [run.attempts for run in runs] == [(1,)] * 5
    assert [run.points_written for run in runs] == [7] * 5
    assert await store.watermark("cpu") == START + 5 * H
    assert await ledger(store) == dict.fromkeys(expected, (RunStatus.SUCCEEDED, 1))


async def test_run_due_again_at_the_same_now_runs_nothing() -> None:
    runner, store, fake = make_runner()
    await runner.run_due(NOW)
    assert await runner.run_due(NOW) == []
    assert len(fake.calls) == 5
    assert await store.watermark("cpu") == START + 5 * H


async def test_run_due_picks_up_windows_that_became_due_since() -> None:
    runner, _, fake = make_runner()
    await runner.run_due(NOW)
    runs = await runner.run_due(NOW + 2 * H + 30 * M)
    assert windows_of(runs) == [hourly(5), hourly(6)]
    assert ranges_run(fake)[5:] == [hourly(5), hourly(6)]


async def test_offset_holds_back_recent_windows() -> None:
    runner, _, fake = make_runner(make_config(offset="15m"))
    await runner.run_due(NOW + 14 * M)
    assert ranges_run(fake) == [hourly(k) for k in range(4)]


async def test_plan_shows_what_run_due_runs() -> None:
    runner, _, fake = make_runner(make_config(every="15m", catchup_chunk="1h"))
    plans = await runner.plan(START + 2 * H)
    assert [len(b.windows) for p in plans for b in p.batches] == [4, 4]
    assert fake.calls == []
    await runner.run_due(START + 2 * H)
    assert ranges_run(fake) == [Window(START, START + H), Window(START + H, START + 2 * H)]
    planned = [b for p in plans for b in p.batches]
    assert fake.queries == [render_job(runner.config, "cpu", b) for b in planned]


@pytest.mark.parametrize(
    "error",
    [
        QueryError("database not found: raw"),
        TransientEngineError("HTTP 503: database not found: raw"),
    ],
    ids=["query-error", "transient"],
)
async def test_a_failing_batch_is_recorded_and_retried(error: Exception) -> None:
    runner, store, fake = make_runner()
    fake.fail_on(1, error)
    runs = await runner.run_due(NOW)

    assert [run.status for run in runs] == [RunStatus.SUCCEEDED, RunStatus.FAILED] + [
        RunStatus.SUCCEEDED
    ] * 3
    assert runs[1].error is not None
    assert "database not found: raw" in runs[1].error
    assert runs[1].points_written == 0
    assert await store.watermark("cpu") == START + H
    failed = (await store.entries("cpu", hourly(1).start))[0]
    assert (failed.window, failed.status, failed.attempts) == (hourly(1), RunStatus.FAILED, 1)
    assert failed.error is not None
    assert "database not found: raw" in failed.error
    assert failed.lease_expires_at is None

    retry = await runner.run_due(NOW)
    assert [(run.batch.windows, run.status, run.attempts) for run in retry] == [
        ((hourly(1),), RunStatus.SUCCEEDED, (2,))
    ]
    assert ranges_run(fake) == [hourly(k) for k in range(5)] + [hourly(1)]
    assert await store.watermark("cpu") == START + 5 * H
    assert (await ledger(store))[hourly(1)] == (RunStatus.SUCCEEDED, 2)
    tries = [a for a in await store.history("cpu") if a.window == hourly(1)]
    assert [(a.attempt, a.status) for a in tries] == [
        (2, RunStatus.SUCCEEDED),
        (1, RunStatus.FAILED),
    ]


async def test_a_patient_runner_waits_before_retrying() -> None:
    runner, _, fake = make_runner()
    runner.mode = Mode.DAEMON  # the daemon: scheduler.retry_delay (5s by default) after attempt 1
    fake.fail_on(0, TransientEngineError("HTTP 503"))
    await runner.run_due(NOW)
    assert await runner.run_due(NOW + timedelta(seconds=4)) == []
    retry = await runner.run_due(NOW + timedelta(seconds=5))
    assert [(r.batch.windows, r.status, r.attempts) for r in retry] == [
        ((hourly(0),), RunStatus.SUCCEEDED, (2,))
    ]


async def test_a_failing_coalesced_batch_fails_all_its_windows() -> None:
    runner, store, fake = make_runner(make_config(every="15m", catchup_chunk="1h"))
    fake.fail_on(0, QueryError("partial write: field type conflict"))
    now = START + 2 * H
    runs = await runner.run_due(now)
    assert [(len(r.batch.windows), r.status) for r in runs] == [
        (4, RunStatus.FAILED),
        (4, RunStatus.SUCCEEDED),
    ]
    assert [w.status for w in runs[0].windows] == [RunStatus.FAILED] * 4
    assert await store.watermark("cpu") == START

    retry = await runner.run_due(now)
    assert [(r.batch.range, r.attempts) for r in retry] == [
        (Window(START, START + H), (2, 2, 2, 2))
    ]
    assert await store.watermark("cpu") == START + 2 * H


async def test_an_unexpected_engine_exception_fails_the_window() -> None:
    runner, store, fake = make_runner()
    fake.fail_on(0, RuntimeError("kaboom"))
    runs = await runner.run_due(NOW)
    assert runs[0].status is RunStatus.FAILED
    assert runs[0].error == "internal error: RuntimeError: kaboom"
    assert [run.status for run in runs[1:]] == [RunStatus.SUCCEEDED] * 4
    entry = (await store.entries("cpu", START))[0]
    assert (entry.status, entry.error) == (RunStatus.FAILED, "internal error: RuntimeError: kaboom")
    assert all(e.status is not RunStatus.RUNNING for e in await store.entries("cpu", START))
    assert await store.watermark("cpu") == START


async def test_a_template_error_fails_the_window_without_calling_the_engine() -> None:
    # A carriage return passes config validation but no InfluxQL literal can hold it.
    config = make_config(measurements=["cpu\r"])
    runner, store, fake = make_runner(config, now=START + H)
    runs = await runner.run_due(START + H)
    assert [(r.status, r.attempts) for r in runs] == [(RunStatus.FAILED, (1,))]
    assert runs[0].error is not None
    assert "carriage return" in runs[0].error
    assert fake.calls == []
    assert (await store.history("cpu"))[0].query_hash is None


async def test_history_records_the_query_that_ran() -> None:
    runner, store, fake = make_runner()
    await runner.run_due(START + 2 * H)
    attempts = sorted(await store.history("cpu"), key=lambda a: a.window.start)
    assert [a.query_hash for a in attempts] == [q.hash for q in fake.queries]
    assert {a.template_version for a in attempts} == {fake.queries[0].template_version}
    assert all(a.started_at == a.finished_at == NOW for a in attempts)  # the runner's clock


# --- claims held by other runs -----------------------------------------------------------------


async def test_a_window_claimed_by_another_live_run_is_not_run() -> None:
    runner, store, fake = make_runner()
    await store.ensure_job("cpu", START)
    assert await store.claim(
        "cpu", [hourly(2)], run_id="other", started_at=NOW - M, lease_expires_at=NOW + 5 * M
    )
    runs = await runner.run_due(NOW)
    assert ranges_run(fake) == [hourly(0), hourly(1), hourly(3), hourly(4)]
    assert windows_of(runs) == [hourly(0), hourly(1), hourly(3), hourly(4)]
    held = (await store.entries("cpu", hourly(2).start))[0]
    assert (held.status, held.run_id, held.attempts) == (RunStatus.RUNNING, "other", 1)
    assert await store.watermark("cpu") == START + 2 * H


async def test_backfill_does_not_take_over_a_live_claim() -> None:
    runner, store, fake = make_runner()
    await store.ensure_job("cpu", START)
    await store.claim(
        "cpu", [hourly(2)], run_id="other", started_at=NOW - M, lease_expires_at=NOW + 5 * M
    )
    runs = await runner.backfill("cpu", START, NOW, NOW)
    assert windows_of(runs) == [hourly(0), hourly(1), hourly(3), hourly(4)]
    assert hourly(2) not in ranges_run(fake)
    assert (await store.entries("cpu", hourly(2).start))[0].run_id == "other"


async def test_a_window_whose_claim_expired_is_taken_over() -> None:
    runner, store, fake = make_runner()
    await store.ensure_job("cpu", START)
    await store.claim(
        "cpu", [hourly(2)], run_id="other", started_at=NOW - 20 * M, lease_expires_at=NOW - M
    )
    runs = await runner.run_due(NOW)
    assert ranges_run(fake) == [hourly(k) for k in range(5)]
    assert runs[2].attempts == (2,)
    assert (await store.entries("cpu", hourly(2).start))[0].status is RunStatus.SUCCEEDED
    assert await store.watermark("cpu") == START + 5 * H


# --- backfill ----------------------------------------------------------------------------------


async def test_backfill_reruns_done_windows() -> None:
    runner, store, fake = make_runner()
    await runner.run_due(NOW)
    runs = await runner.backfill("cpu", START + 2 * H, START + 4 * H, NOW)
    assert [(r.batch.windows, r.status, r.attempts) for r in runs] == [
        ((hourly(2),), RunStatus.SUCCEEDED, (2,)),
        ((hourly(3),), RunStatus.SUCCEEDED, (2,)),
    ]
    assert ranges_run(fake)[5:] == [hourly(2), hourly(3)]
    assert await store.watermark("cpu") == START + 5 * H


async def test_a_failed_backfill_records_the_window_failed() -> None:
    runner, store, fake = make_runner()
    await runner.run_due(NOW)
    fake.fail_on(5, QueryError("partial write: field type conflict"))
    runs = await runner.backfill("cpu", START + 2 * H, START + 3 * H, NOW)
    assert [(r.status, r.attempts) for r in runs] == [(RunStatus.FAILED, (2,))]
    assert (await ledger(store))[hourly(2)] == (RunStatus.FAILED, 2)


async def test_a_failed_backfill_shows_in_status() -> None:
    runner, _, fake = make_runner()
    await runner.run_due(NOW)
    fake.fail_on(5, QueryError("partial write: field type conflict"))
    await runner.backfill("cpu", START + 2 * H, START + 3 * H, NOW)
    status = await status_of(runner, NOW)
    assert (status.failed_windows, status.pending_windows) == (1, 1)


async def test_backfill_clips_to_the_job_start_and_to_complete_windows() -> None:
    # The job starts mid-hour (first window at 01:00) and waits 15 minutes after each window.
    config = make_config(start=START + 20 * M, offset="15m")
    now = START + 5 * H + 10 * M
    runner, store, fake = make_runner(config, now=now)
    runs = await runner.backfill("cpu", START - 3 * H, START + 24 * H, now)
    assert windows_of(runs) == [hourly(1), hourly(2), hourly(3)]
    assert ranges_run(fake) == [hourly(1), hourly(2), hourly(3)]
    assert await store.watermark("cpu") == START + 4 * H


async def test_backfill_of_a_range_inside_one_window_runs_that_window() -> None:
    runner, _, fake = make_runner()
    await runner.backfill("cpu", START + 2 * H + 10 * M, START + 2 * H + 20 * M, NOW)
    assert ranges_run(fake) == [hourly(2)]


async def test_backfill_coalesces_like_run_due() -> None:
    runner, _, _ = make_runner(make_config(every="15m", catchup_chunk="30m"))
    batches = runner.backfill_batches("cpu", START, START + H, START + 2 * H)
    assert [b.range for b in batches] == [
        Window(START, START + 30 * M),
        Window(START + 30 * M, START + H),
    ]


# --- status ------------------------------------------------------------------------------------


async def status_of(runner: Runner, now: datetime) -> JobStatus:
    [status] = await runner.status(now)
    return status


def states(**counts: int) -> dict[WindowState, int]:
    return {state: counts.get(state.value, 0) for state in WindowState}


async def test_status_follows_what_happened() -> None:
    runner, _, fake = make_runner()
    assert await status_of(runner, NOW) == JobStatus(
        "cpu", None, 5 * 3600.0, None, 0, 5, window_states=states(pending=5)
    )

    fake.fail_on(1, QueryError("database not found: raw"))
    await runner.run_due(NOW)
    # The gap at window 1 holds the watermark at 01:00; window 4 was the last one attempted.
    assert await status_of(runner, NOW) == JobStatus(
        "cpu",
        START + H,
        4 * 3600.0,
        RunStatus.SUCCEEDED,
        1,
        1,
        window_states=states(succeeded=4, failed=1),
    )
    later = NOW + 2 * H + 30 * M
    assert await status_of(runner, later) == JobStatus(
        "cpu",
        START + H,
        6.5 * 3600.0,
        RunStatus.SUCCEEDED,
        1,
        3,
        window_states=states(succeeded=4, failed=1, pending=2),
    )

    await runner.run_due(NOW)
    assert await status_of(runner, NOW) == JobStatus(
        "cpu", START + 5 * H, 0.0, RunStatus.SUCCEEDED, 0, 0, window_states=states(succeeded=5)
    )


async def test_status_reports_a_failed_last_attempt() -> None:
    runner, _, fake = make_runner()
    fake.fail_on(4, TransientEngineError("HTTP 503"))
    await runner.run_due(NOW)
    status = await status_of(runner, NOW)
    assert (status.last_status, status.failed_windows, status.pending_windows) == (
        RunStatus.FAILED,
        1,
        1,
    )
    assert status.watermark == START + 4 * H


async def test_status_does_not_count_windows_held_elsewhere_as_pending() -> None:
    runner, store, _ = make_runner()
    await store.ensure_job("cpu", START)
    await store.claim(
        "cpu", [hourly(0)], run_id="other", started_at=NOW - M, lease_expires_at=NOW + 5 * M
    )
    assert (await status_of(runner, NOW)).pending_windows == 4


# --- jobs by name, progress, closing -----------------------------------------------------------


async def test_unknown_jobs_are_refused() -> None:
    runner, _, fake = make_runner()
    with pytest.raises(TierflowError, match="unknown job 'nope'"):
        await runner.run_due(NOW, ["nope"])
    with pytest.raises(TierflowError, match="unknown job 'nope'"):
        await runner.status(NOW, ["cpu", "nope"])
    with pytest.raises(TierflowError, match="unknown job 'nope'"):
        await runner.plan(NOW, ["nope"])
    with pytest.raises(TierflowError, match="unknown job 'nope'"):
        await runner.backfill("nope", START, NOW, NOW)
    assert fake.calls == []


async def test_progress_counts_every_window() -> None:
    seen: list[int] = []
    runner, _, _ = make_runner(make_config(every="15m", catchup_chunk="1h"))
    runner.on_progress = seen.append
    await runner.run_due(START + 2 * H)
    assert seen == [4, 4]


async def test_aclose_closes_the_engines() -> None:
    runner, _, fake = make_runner()
    await runner.aclose()
    assert fake.closed


# --- windows held by another run: reported, or waited for ------------------------------------


async def hold(store: MemoryStateStore, k: int) -> None:
    await store.ensure_job("cpu", START)
    assert await store.claim(
        "cpu", [hourly(k)], run_id="other", started_at=NOW - M, lease_expires_at=NOW + 5 * M
    )


async def test_a_held_window_is_reported_undone_until_its_holder_finishes_it() -> None:
    runner, store, _ = make_runner()
    await hold(store, 2)
    await runner.run_due(NOW)
    assert [(e.window, e.run_id) for e in await runner.held_undone()] == [(hourly(2), "other")]
    await store.finish(
        "cpu", [hourly(2)], run_id="other", outcome=Outcome(RunStatus.SUCCEEDED, NOW, 1)
    )
    assert await runner.held_undone() == []


@pytest.mark.parametrize("outcome", [RunStatus.SUCCEEDED, RunStatus.FAILED])
async def test_run_waiting_waits_for_a_held_window_and_runs_it_only_if_still_due(
    outcome: RunStatus,
) -> None:
    runner, store, fake = make_runner()
    await hold(store, 2)

    async def other_run_ends() -> None:
        await asyncio.sleep(0.2)
        await store.finish("cpu", [hourly(2)], run_id="other", outcome=Outcome(outcome, NOW, 1))

    ending = asyncio.create_task(other_run_ends())
    runs = await runner.run_waiting(NOW, poll=0.05)
    await ending
    again = [hourly(2)] if outcome is RunStatus.FAILED else []
    assert windows_of(runs) == [hourly(0), hourly(1), hourly(3), hourly(4), *again]
    assert ranges_run(fake) == windows_of(runs)
    assert await runner.held_undone() == []
    assert await store.watermark("cpu") == START + 5 * H
