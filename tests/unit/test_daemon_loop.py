"""The daemon's per-job loop outlives an unexpected exception: it logs it and tries again, so one
bug cannot silently stop a job's windows while the daemon looks alive."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from tests.events import Events
from tests.unit.test_runner import NOW, make_runner
from tierflow._daemon import Daemon
from tierflow._runner import BatchRun


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
