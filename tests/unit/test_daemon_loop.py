"""The daemon's per-job loop outlives an unexpected exception: it logs it and tries again, so one
bug cannot silently stop a job's windows while the daemon looks alive. The daemon beats as a
worker in the state store, and claims nothing while its beats do not get through."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from tests.events import Events
from tests.unit.test_runner import NOW, make_runner
from tierflow._config import ServerConfig
from tierflow._daemon import Daemon, MetricsServer, StateWatch
from tierflow._errors import StateUnavailableError
from tierflow._runner import BatchRun
from tierflow._state import MemoryStateStore, StateStore, Worker, WorkerState
from tierflow._state._holder import this_process


async def test_an_unexpected_exception_is_logged_and_the_job_loop_goes_on(
    events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, _, _ = make_runner()
    monkeypatch.setattr("tierflow._daemon._FAILURE_PAUSE", timedelta(0))  # no wait between tries
    calls: list[datetime] = []
    again = asyncio.Event()
    real = runner.run_job

    async def flaky(job: str, now: datetime) -> list[BatchRun]:
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("boom")
        again.set()
        return await real(job, now)

    monkeypatch.setattr(runner, "run_job", flaky)
    daemon = Daemon(runner, clock=lambda: NOW)
    task = asyncio.create_task(daemon.run())
    async with asyncio.timeout(10):
        await again.wait()
    daemon.stopping.set()
    await task

    (logged,) = events.named("job_loop_error")
    assert logged["job"] == "cpu"
    assert logged["error"] == "internal error: RuntimeError: boom"
    assert len(calls) >= 2


class FlakyStore(MemoryStateStore):
    """The memory store, whose beats fail while `down` (as PostgreSQL's do while it is away)."""

    down = False

    async def beat(self, worker: Worker, *, forget_before: datetime | None = None) -> None:
        if self.down:
            raise StateUnavailableError("state store postgresql://x@db/t: connection refused")
        await super().beat(worker, forget_before=forget_before)


def watched(store: StateStore) -> StateWatch:
    worker = Worker(this_process(), "test", NOW, NOW, ("cpu",))
    return StateWatch(store, worker, clock=lambda: NOW, interval=timedelta(milliseconds=20))


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - no event says so: poll
            await asyncio.sleep(0.005)


async def test_the_daemon_registers_as_a_worker_beats_and_says_it_stopped() -> None:
    runner, store, _ = make_runner()
    watch = watched(store)
    daemon = Daemon(runner, clock=lambda: NOW, watch=watch)
    task = asyncio.create_task(daemon.run())
    await until(lambda: watch.up.is_set())
    (me,) = await store.workers(NOW)
    assert (me.holder, me.jobs, me.stopped_at) == (this_process(), ("cpu",), None)
    assert me.state(NOW) is WorkerState.LIVE
    daemon.stopping.set()
    await task
    (me,) = await store.workers(NOW)
    assert me.stopped_at == NOW
    assert me.state(NOW) is WorkerState.STOPPED


async def test_no_window_is_claimed_while_the_store_does_not_answer_and_runs_resume_after(
    events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, _, _ = make_runner()
    store = FlakyStore()
    runner.store = store
    calls: list[datetime] = []
    real = runner.run_job

    async def counted(job: str, now: datetime) -> list[BatchRun]:
        calls.append(now)
        return await real(job, now)

    monkeypatch.setattr(runner, "run_job", counted)
    watch = watched(store)
    # A loop would run the job every 10 ms: only the watch keeps it from claiming.
    daemon = Daemon(runner, clock=lambda: NOW, max_sleep=timedelta(milliseconds=10), watch=watch)
    server = MetricsServer(runner, ServerConfig(listen="127.0.0.1:0"), watch)
    task = asyncio.create_task(daemon.run())
    await until(lambda: len(calls) >= 2)

    store.down = True
    await until(lambda: not watch.up.is_set())
    await asyncio.sleep(0.05)  # a run that had begun ends
    before = len(calls)
    ready = await server._readyz(None)  # type: ignore[arg-type]
    await asyncio.sleep(0.2)  # ten beats, twenty loop turns
    assert len(calls) == before
    assert ready.status == 503
    body = json.loads(ready.text or "")
    assert body["checks"]["state"] == (
        "unavailable, not claiming: state store postgresql://x@db/t: connection refused"
    )

    store.down = False
    await until(lambda: len(calls) > before + 2)
    assert (await server._readyz(None)).status == 200  # type: ignore[arg-type]
    daemon.stopping.set()
    await task
    assert events.names().count("state_unavailable") == 1
    (back,) = events.named("state_available")
    assert back["down_s"] == 0  # the frozen clock


def test_a_job_loop_failing_again_and_again_backs_off() -> None:
    runner, _, _ = make_runner()
    daemon = Daemon(runner, clock=lambda: NOW)
    pauses = [daemon._backoff(n).total_seconds() for n in range(1, 8)]
    assert pauses == [5, 10, 20, 40, 60, 60, 60]
