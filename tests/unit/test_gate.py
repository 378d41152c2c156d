"""The priority gate: at-risk batches first, the soonest to expire first, then first come."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tierflow._gate import Priority, PriorityGate

T = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
NORMAL = Priority()


async def settle() -> None:
    """Let every ready task and callback run (a freed slot is handed out a turn later)."""
    for _ in range(5):
        await asyncio.sleep(0)


class Queue:
    """Tasks that each take a slot, write their name down, and hold it until told to go."""

    def __init__(self, gate: PriorityGate) -> None:
        self.gate = gate
        self.order: list[str] = []
        self.go: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def ask(self, name: str, priority: Priority = NORMAL) -> None:
        self.go[name] = asyncio.Event()
        self.tasks[name] = asyncio.create_task(self._hold(name, priority))
        await settle()

    async def _hold(self, name: str, priority: Priority) -> None:
        async with self.gate.slot(priority):
            self.order.append(name)
            await self.go[name].wait()

    async def finish(self, name: str) -> None:
        self.go[name].set()
        await settle()


def test_priority_keys() -> None:
    assert not NORMAL.at_risk
    assert Priority(T).at_risk
    assert Priority(T).key < Priority(T + H).key < NORMAL.key
    assert NORMAL.key == Priority().key


def test_a_gate_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        PriorityGate(0)


async def test_free_slots_are_taken_at_once_whatever_the_priority() -> None:
    gate = PriorityGate(2)
    queue = Queue(gate)
    await queue.ask("a")
    await queue.ask("b", Priority(T))
    await queue.ask("c", Priority(T - H))
    assert queue.order == ["a", "b"]
    assert (gate.free, gate.waiting) == (0, 1)
    await queue.finish("a")
    assert queue.order == ["a", "b", "c"]


async def test_waiters_go_at_risk_first_soonest_expiry_first_then_in_order() -> None:
    gate = PriorityGate(1)
    queue = Queue(gate)
    await queue.ask("holder")
    asked = [
        ("normal-1", NORMAL),
        ("late-expiry", Priority(T + 5 * H)),
        ("normal-2", NORMAL),
        ("early-expiry-1", Priority(T + H)),
        ("early-expiry-2", Priority(T + H)),
        ("normal-3", NORMAL),
        ("expired", Priority(T - H)),
    ]
    for name, priority in asked:
        await queue.ask(name, priority)
    assert queue.order == ["holder"]
    assert gate.waiting == len(asked)

    for _ in range(len(asked) + 1):
        await queue.finish(queue.order[-1])  # the one holding the slot
    assert queue.order == [
        "holder",
        "expired",
        "early-expiry-1",
        "early-expiry-2",
        "late-expiry",
        "normal-1",
        "normal-2",
        "normal-3",
    ]
    assert (gate.free, gate.waiting) == (1, 0)


async def test_release_wakes_the_most_urgent_waiter_only() -> None:
    gate = PriorityGate(1)
    queue = Queue(gate)
    await queue.ask("holder")
    await queue.ask("normal")
    await queue.ask("urgent", Priority(T))
    await queue.finish("holder")
    assert queue.order == ["holder", "urgent"]
    assert (gate.free, gate.waiting) == (0, 1)


async def test_a_newcomer_more_urgent_than_every_waiter_takes_a_slot_just_freed() -> None:
    # The batch that just finished asks for its job's next, more urgent, batch in the same turn.
    gate = PriorityGate(1)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire(NORMAL))
    await settle()
    gate.release()
    async with asyncio.timeout(1):
        await gate.acquire(Priority(T))  # no wait: it outranks the waiter
    assert not waiter.done()
    gate.release()
    await settle()
    assert waiter.done()
    gate.release()
    assert (gate.free, gate.waiting) == (1, 0)


async def test_a_newcomer_no_more_urgent_queues_behind_the_waiters() -> None:
    gate = PriorityGate(1)
    await gate.acquire(Priority(T))
    first = asyncio.create_task(gate.acquire(Priority(T)))
    await settle()
    gate.release()  # the slot is handed out on the next turn: to `first`, not to an equal
    with pytest.raises(TimeoutError):  # that asks in between
        async with asyncio.timeout(0.05):
            await gate.acquire(Priority(T))
    assert first.done()
    assert (gate.free, gate.waiting) == (0, 0)
    gate.release()
    assert gate.free == 1


async def test_a_cancelled_waiter_leaves_the_queue_and_leaks_no_slot() -> None:
    gate = PriorityGate(1)
    queue = Queue(gate)
    await queue.ask("holder")
    await queue.ask("urgent", Priority(T))
    await queue.ask("normal")
    queue.tasks["urgent"].cancel()
    await settle()
    assert queue.tasks["urgent"].cancelled()
    assert gate.waiting == 1

    await queue.finish("holder")
    assert queue.order == ["holder", "normal"]
    await queue.finish("normal")
    assert (gate.free, gate.waiting) == (1, 0)


async def test_a_waiter_cancelled_after_being_handed_a_slot_passes_it_on() -> None:
    gate = PriorityGate(1)
    queue = Queue(gate)
    await queue.ask("holder")
    await queue.ask("first")
    await queue.ask("second")
    queue.go["holder"].set()
    await asyncio.sleep(0)  # the holder releases
    await asyncio.sleep(0)  # ... and the slot is handed to "first", which has not run yet
    assert gate.free == 0
    queue.tasks["first"].cancel()
    await settle()
    assert queue.tasks["first"].cancelled()
    assert queue.order == ["holder", "second"]
    await queue.finish("second")
    assert (gate.free, gate.waiting) == (1, 0)


async def test_cancelling_every_waiter_leaves_the_gate_as_new() -> None:
    gate = PriorityGate(2)
    queue = Queue(gate)
    for k in range(2):
        await queue.ask(f"holder-{k}")
    for k in range(5):
        await queue.ask(f"waiter-{k}", Priority(T + k * H) if k % 2 else NORMAL)
    for k in range(5):
        queue.tasks[f"waiter-{k}"].cancel()
    await settle()
    assert gate.waiting == 0
    for k in range(2):
        await queue.finish(f"holder-{k}")
    assert (gate.free, gate.waiting) == (2, 0)
    await queue.ask("late")
    assert queue.order[-1] == "late"


async def test_a_gate_lowered_below_its_holders_hands_out_nothing_until_they_are_under_it() -> None:
    gate = PriorityGate(3)
    queue = Queue(gate)
    for name in ("a", "b", "c"):
        await queue.ask(name)
    gate.resize(1)
    assert (gate.limit, gate.free) == (1, -2)
    await queue.ask("d")
    await queue.finish("a")
    await queue.finish("b")
    assert queue.order == ["a", "b", "c"]  # c still holds the one slot
    await queue.finish("c")
    assert queue.order == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="at least one slot"):
        gate.resize(0)


async def test_a_gate_raised_hands_the_new_slots_to_its_waiters() -> None:
    gate = PriorityGate(1)
    queue = Queue(gate)
    for name in ("a", "b", "c"):
        await queue.ask(name)
    assert queue.order == ["a"]
    gate.resize(3)
    await settle()
    assert queue.order == ["a", "b", "c"]
    assert gate.free == 0
    for name in ("a", "b", "c"):
        await queue.finish(name)
    assert gate.free == 3
