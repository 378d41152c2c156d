"""The capacity a batch takes: this process's gate, then the store's slot shared with the other
workers, for its connection and then for the scheduler, always in that order (so no two workers
wait on each other in a cycle). A store whose slots are recorded stands in for PostgreSQL here;
the real one is tested in tests/integration/test_cluster_slots.py."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from tierflow._config import Config, parse_config
from tierflow._gate import Priority
from tierflow._runner import Runner
from tierflow._runner._capacity import GLOBAL_SCOPE, Capacity, connection_scope
from tierflow._state import MemoryStateStore


def config(connection_limit: int, total: int) -> Config:
    """Jobs `a` on connection `one`, `b` and `c` on `two`."""
    text = f"""
    [scheduler]
    max_concurrency = {total}
    """
    for name in ("one", "two"):
        text += f"""
        [connections.{name}]
        kind = "influxdb1"
        url = "http://{name}.example:8086"
        max_concurrency = {connection_limit}

        [tiers.hot_{name}]
        connection = "{name}"
        bucket = "hot/autogen"

        [tiers.warm_{name}]
        connection = "{name}"
        bucket = "warm/autogen"
        """
    for job, connection in (("a", "one"), ("b", "two"), ("c", "two")):
        text += f"""
        [jobs.{job}]
        kind = "downsample"
        source = "hot_{connection}"
        dest = "warm_{connection}"
        measurements = ["cpu"]
        into = "{{{{ measurement }}}}_{job}"
        every = "1h"
        start = 2026-01-01T00:00:00Z
        aggregates = {{ usage = ["mean"] }}
        """
    return parse_config(tomllib.loads(text), Path("t.toml"))


class SharedSlots(MemoryStateStore):
    """A store whose slots are shared as PostgreSQL's are, within this test: at most `limit`
    holders per scope, every take and give-back written down in `log`."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []
        self.held: dict[str, int] = {}
        self.asked: list[tuple[str, int]] = []
        self._freed = asyncio.Condition()

    def slot(self, scope: str, limit: int) -> AbstractAsyncContextManager[None]:
        self.asked.append((scope, limit))
        return self._slot(scope, limit)

    @asynccontextmanager
    async def _slot(self, scope: str, limit: int) -> AsyncIterator[None]:
        async with self._freed:
            await self._freed.wait_for(lambda: self.held.get(scope, 0) < limit)
            self.held[scope] = self.held.get(scope, 0) + 1
        self.log.append(f"take {scope}")
        try:
            yield
        finally:
            self.log.append(f"give {scope}")
            async with self._freed:
                self.held[scope] -= 1
                self._freed.notify_all()


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_the_connection_slot_then_the_scheduler_slot_given_back_in_reverse() -> None:
    store = SharedSlots()
    capacity = Capacity(config(2, 4), store)
    async with capacity.slot("a"):
        assert store.log == [f"take {connection_scope('one')}", f"take {GLOBAL_SCOPE}"]
    assert store.log[2:] == [f"give {GLOBAL_SCOPE}", f"give {connection_scope('one')}"]
    assert store.asked == [("connection:one", 2), ("scheduler", 4)]


async def test_the_process_gate_comes_before_the_store_slot() -> None:
    """A batch waiting at its process's gate holds no shared slot that another worker's batch
    could use: it asks the store only once the gate let it through."""
    store = SharedSlots()
    capacity = Capacity(config(1, 1), store)
    go = asyncio.Event()

    async def batch(job: str) -> None:
        async with capacity.slot(job):
            await go.wait()

    first = asyncio.create_task(batch("b"))
    await settle()
    second = asyncio.create_task(batch("c"))  # same connection: waits at the process's gate
    third = asyncio.create_task(batch("a"))  # another connection: waits at the global gate
    await settle()
    assert store.asked == [
        ("connection:two", 1),
        ("scheduler", 1),
        ("connection:one", 1),  # `a` took its connection's slot, then met the global gate
    ]
    go.set()
    await asyncio.gather(first, second, third)
    assert store.held == {"connection:one": 0, "connection:two": 0, "scheduler": 0}


async def test_the_store_slot_bounds_the_process_with_the_gates() -> None:
    """Two runners (two workers) on one store: together they hold no more than the limits."""
    store = SharedSlots()
    shared = config(2, 3)
    capacities = [Capacity(shared, store), Capacity(shared, store)]
    inside = {"two": 0, "all": 0}
    most = {"two": 0, "all": 0}

    async def batch(capacity: Capacity, job: str) -> None:
        async with capacity.slot(job, Priority()):
            connection = "two" if job in "bc" else "one"
            for key in {connection, "all"}:
                inside[key] = inside.get(key, 0) + 1
                most[key] = max(most.get(key, 0), inside[key])
            await asyncio.sleep(0.001)
            for key in {connection, "all"}:
                inside[key] -= 1

    await asyncio.gather(
        *(batch(capacity, job) for capacity in capacities for job in "abcbcabc" for _ in (1, 2))
    )
    assert most["two"] == 2  # not 2 x 2
    assert most["all"] == 3  # not 2 x 3


async def test_a_runner_takes_its_stores_slots() -> None:
    store = SharedSlots()
    runner = Runner(config(2, 4), store)
    async with runner._capacity.slot("b"):
        assert store.asked == [("connection:two", 2), ("scheduler", 4)]


async def test_a_store_of_one_host_adds_no_slot_beyond_the_gates() -> None:
    """Memory and SQLite: the process's gates alone (the default a user of either gets)."""
    store = MemoryStateStore()
    async with store.slot("s", 1), store.slot("s", 1):
        pass
    with pytest.raises(ValueError, match="at least one slot"):
        store.slot("s", 0)
    capacity = Capacity(config(1, 1))  # no store at all: the gates
    async with capacity.slot("a"):
        pass
