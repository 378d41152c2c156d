"""The capacity gates a batch passes before it runs: its connection's, then the global one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from tierflow._config import Config
from tierflow._gate import Priority, PriorityGate

__all__ = ["Capacity"]


@dataclass
class Capacity:
    """At most `max_concurrency` requests per connection and `[scheduler] max_concurrency`
    in all, waiters served by priority. The gates are made on first use (inside the loop)."""

    config: Config
    _global: PriorityGate | None = field(default=None, init=False, repr=False)
    _connections: dict[str, PriorityGate] = field(default_factory=dict, init=False, repr=False)

    @asynccontextmanager
    async def slot(self, job: str, priority: Priority | None = None) -> AsyncIterator[None]:
        """A slot on the job's connection, then one of the global slots, each served by
        `priority` (at risk first, soonest to expire first, then first come). In that order: a
        batch waiting for a busy connection must not sit on a global slot that an idle
        connection's job could use."""
        connection = self.config.tiers[self.config.jobs[job].source].connection
        if connection not in self._connections:
            limit = self.config.connections[connection].max_concurrency
            self._connections[connection] = PriorityGate(limit)
        if self._global is None:
            self._global = PriorityGate(self.config.scheduler.max_concurrency)
        async with self._connections[connection].slot(priority), self._global.slot(priority):
            yield
