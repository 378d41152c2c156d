"""The capacity a batch takes before it runs: its connection's, then the global one.

Each limit is held twice: by this process's priority gate (at-risk batches first) and by the
state store's slots, which hold it across every worker sharing the state (PostgreSQL: advisory
locks; SQLite and memory: none beyond the process). Always in one order, connection then global,
and within each the process's gate before the store's slot: a batch waiting for a busy
connection sits on no global slot that an idle connection's job could use, and no two workers
can wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field

from tierflow._config import Config
from tierflow._gate import Priority, PriorityGate
from tierflow._state import StateStore

__all__ = ["GLOBAL_SCOPE", "Capacity", "connection_scope"]

#: The store's slot scope of `[scheduler] max_concurrency`.
GLOBAL_SCOPE = "scheduler"


def connection_scope(connection: str) -> str:
    """The store's slot scope of a connection's `max_concurrency`."""
    return f"connection:{connection}"


@dataclass
class Capacity:
    """At most `max_concurrency` batches per connection and `[scheduler] max_concurrency` in
    all, across every worker of `store` (without one: in this process), waiters of this
    process served by priority. The gates are made on first use (inside the loop)."""

    config: Config
    store: StateStore | None = None
    _global: PriorityGate | None = field(default=None, init=False, repr=False)
    _connections: dict[str, PriorityGate] = field(default_factory=dict, init=False, repr=False)

    @asynccontextmanager
    async def slot(self, job: str, priority: Priority | None = None) -> AsyncIterator[None]:
        """A slot on the job's connection, then one of the global slots, each served by
        `priority` (at risk first, soonest to expire first, then first come) in this process,
        then taken from the store's slots shared with the other workers."""
        connection = self.config.tiers[self.config.jobs[job].source].connection
        limit = self.config.connections[connection].max_concurrency
        if connection not in self._connections:
            self._connections[connection] = PriorityGate(limit)
        total = self.config.scheduler.max_concurrency
        if self._global is None:
            self._global = PriorityGate(total)
        async with (
            self._connections[connection].slot(priority),
            self._shared(connection_scope(connection), limit),
            self._global.slot(priority),
            self._shared(GLOBAL_SCOPE, total),
        ):
            yield

    def inherit(self, previous: Capacity) -> None:
        """Share `previous`'s gates, set to this config's limits (after a reload: the batches
        still running under the old config hold slots of the same gates, so a lowered limit
        lets no new batch start until those in flight are under it). A connection the new
        config keeps shares its gate by name, whatever else of it changed."""
        if previous._global is None:
            # Made now, not on first use: a batch the old runner starts later takes it too.
            previous._global = PriorityGate(previous.config.scheduler.max_concurrency)
        self._global = previous._global
        self._global.resize(self.config.scheduler.max_concurrency)
        for name, spec in self.config.connections.items():
            old = previous.config.connections.get(name)
            if old is None:
                continue
            gate = previous._connections.get(name)
            if gate is None:
                gate = previous._connections[name] = PriorityGate(old.max_concurrency)
            gate.resize(spec.max_concurrency)
            self._connections[name] = gate

    def _shared(self, scope: str, limit: int) -> AbstractAsyncContextManager[None]:
        if self.store is None:
            return nullcontext()
        # A stopped worker's slots go back to the others after a lease, as its windows do.
        return self.store.slot(scope, limit, lease=self.config.scheduler.lease)
