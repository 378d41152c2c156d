"""`status` accounts for every window: from a job's start to now, each window is in exactly one
state (succeeded, pending, running, failed, parked, skipped), and a watermark that lags is always
explained by a window that is not done. Checked over random histories of claims and outcomes, on
the in-memory store and on SQLite alike (the same history must give the same status)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_runner import START, make_config
from tierflow._errors import StateError
from tierflow._runner import JobStatus, Runner
from tierflow._state import Holder, MemoryStateStore, Outcome, RunStatus, SqliteStateStore
from tierflow._state._base import StateStore
from tierflow._state._rules import WindowState, state_of
from tierflow._windows import Window

H = timedelta(hours=1)
WINDOWS = 8
NOW = START + WINDOWS * H + 30 * timedelta(minutes=1)
HOLDERS = [Holder("here", 101, "boot:1"), Holder("here", 202, "boot:2"), None]
DEAD = HOLDERS[1]


def hourly(k: int) -> Window:
    return Window(START + k * H, START + (k + 1) * H)


claims = st.tuples(
    st.just("claim"),
    st.lists(st.integers(0, WINDOWS - 1), min_size=1, max_size=4, unique=True),
    st.integers(0, 3),  # run
    st.sampled_from(range(len(HOLDERS))),
    st.integers(0, 90),  # minutes after NOW - 1h: some leases live at NOW, some expired
    st.booleans(),  # force
)
finishes = st.tuples(
    st.just("finish"),
    st.integers(0, 3),
    st.sampled_from([RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED]),
    st.sampled_from([None, 1, 3]),
)
requeues = st.tuples(st.just("requeue"))
steps = st.lists(st.one_of(claims, finishes, requeues), max_size=25)


async def apply(store: StateStore, step: tuple[Any, ...], held: dict[int, list[Window]]) -> None:
    if step[0] == "claim":
        _, indexes, run, holder, minutes, force = step
        at = NOW - H + timedelta(minutes=minutes)
        taken = await store.claim(
            "cpu",
            [hourly(i) for i in indexes],
            run_id=f"r{run}",
            started_at=at,
            lease_expires_at=at + 30 * timedelta(minutes=1),
            holder=HOLDERS[holder],
            force=force,
            gone=lambda h: h == DEAD,
        )
        held[run] = sorted({*held.get(run, []), *taken.taken}, key=lambda w: w.start)
    elif step[0] == "finish":
        _, run, status, park_after = step
        windows = held.pop(run, [])
        if windows:
            outcome = Outcome(status, NOW, 0.1, error=None if status.done else "boom")
            # StateError: another run took some over, and nothing was recorded.
            with contextlib.suppress(StateError):
                await store.finish(
                    "cpu", windows, run_id=f"r{run}", outcome=outcome, park_after=park_after
                )
    else:
        await store.requeue("cpu")


async def check(runner: Runner) -> JobStatus:
    (status,) = await runner.status(NOW)
    states = status.window_states
    assert set(states) == set(WindowState)
    assert all(count >= 0 for count in states.values())
    assert sum(states.values()) == WINDOWS, states
    assert states[WindowState.RUNNING] == len(status.claims)
    # The same partition, window by window from the ledger, without the census.
    ledger = {e.window: e for e in await runner.store.entries("cpu", START)}
    naive = dict.fromkeys(WindowState, 0)
    for k in range(WINDOWS):
        entry = ledger.get(hourly(k))
        naive[state_of(entry.status, entry.parked) if entry else WindowState.PENDING] += 1
    assert naive == states
    # A lagging watermark is explained: the window it stops at is not done, and status says so.
    mark = await runner.store.watermark("cpu") or START
    if mark < hourly(WINDOWS - 1).stop:
        at_mark = ledger.get(Window(mark, mark + H))
        undone = {WindowState.PENDING, WindowState.RUNNING, WindowState.FAILED, WindowState.PARKED}
        assert (state_of(at_mark.status, at_mark.parked) if at_mark else WindowState.PENDING) in (
            undone
        )
        assert sum(states[state] for state in undone) > 0
    return status


@settings(max_examples=60, deadline=None)
@given(steps)
def test_every_window_is_in_one_state_and_a_lagging_watermark_is_explained(
    history: list[tuple[Any, ...]],
) -> None:
    # Hypothesis drives a plain function: each example runs on an event loop of its own.
    asyncio.run(replay(history))


async def replay(history: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as where:
        stores: list[StateStore] = [MemoryStateStore(), SqliteStateStore(Path(where) / "s.db")]
        runners = [Runner(make_config(), store, engines={}) for store in stores]
        held: list[dict[int, list[Window]]] = [{}, {}]
        try:
            for store in stores:
                await store.ensure_job("cpu", START)
            for step in history:
                for store, mine in zip(stores, held, strict=True):
                    await apply(store, step, mine)
                memory, sqlite = [await check(runner) for runner in runners]
                assert memory == sqlite
        finally:
            for store in stores:
                await store.aclose()
