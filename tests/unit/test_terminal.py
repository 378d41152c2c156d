"""`tierflow run` at a terminal: the daemon's batches and catch-up as a person sees them, rendered
by rich to a forced terminal (a fake engine, the in-memory store, a frozen clock)."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Iterator

import pytest
from rich.console import Console

from tests.fakes import FakeEngine
from tests.unit.test_runner import NOW, make_config, make_runner
from tierflow._daemon import Daemon
from tierflow._errors import QueryError
from tierflow._logging import configure_logging, log_event
from tierflow._terminal import DaemonDisplay


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    configure_logging("warning")


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def run_daemon_through_catch_up(engine: FakeEngine, **job: object) -> str:
    runner, _, _ = make_runner(make_config(**job), engine=engine)
    screen = io.StringIO()
    configure_logging("warning", json_lines=True)
    display = DaemonDisplay(Console(file=screen, force_terminal=True, width=120))

    async def go() -> None:
        daemon = Daemon(runner, clock=lambda: NOW)
        display.attach()
        caught_up = asyncio.Event()

        def advance(windows: int) -> None:
            display.advance(windows)
            if display._progress is None:  # the bar closes once every window is done
                caught_up.set()

        runner.on_progress = advance
        display.catch_up(sum(len(p.windows) for p in await runner.plan(NOW)))
        task = asyncio.create_task(daemon.run())
        async with asyncio.timeout(10):
            await caught_up.wait()
        daemon.stopping.set()
        await task

    asyncio.run(go())
    return plain(screen.getvalue())


def test_the_daemon_shows_each_batch_and_the_catch_up_bar() -> None:
    text = run_daemon_through_catch_up(FakeEngine(points=7))
    # Five hourly windows due at NOW (start + 5h), one query each.
    batches = [line for line in text.splitlines() if " cpu [2026-01-01T0" in line]
    assert len(batches) == 5, text
    assert "cpu [2026-01-01T00:00:00Z, 2026-01-01T01:00:00Z) 1 window, 7 points" in batches[0]
    assert "running 1 job(s): cpu (Ctrl-C stops)" in text
    assert "catching up" in text
    assert "0/5 windows" in text
    assert "5/5 windows" in text
    assert "ETA" in text
    assert "caught up: 5 windows in" in text


def test_a_failed_batch_is_one_red_line_with_its_error() -> None:
    engine = FakeEngine(points=7)
    engine.fail_on(0, QueryError("database not found: raw"))
    text = run_daemon_through_catch_up(engine, catchup_chunk="5h")
    failed = [line for line in text.splitlines() if "failed:" in line]
    assert len(failed) == 1, text
    assert "cpu [2026-01-01T00:00:00Z, 2026-01-01T05:00:00Z) 5 windows failed: " in failed[0]
    assert "database not found: raw" in failed[0]


def test_below_the_threshold_only_batches_show() -> None:
    screen = io.StringIO()
    configure_logging("warning")
    display = DaemonDisplay(Console(file=screen, force_terminal=True, width=120))
    display.attach()
    log_event("window_started", level=logging.DEBUG, job="cpu")
    log_event("late_data_detected", job="cpu", windows=2)
    log_event("lease_lost", level=logging.WARNING, job="cpu", run_id="r1")
    text = plain(screen.getvalue())
    assert "window_started" not in text
    assert "late_data_detected" not in text
    assert "warning lease_lost job=cpu run_id=r1" in text
