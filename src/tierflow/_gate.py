"""A counting gate whose waiters are served by priority: migration must beat expiry.

A batch whose source data expires soon asks with `Priority(expires_at=...)`; every other batch asks
with `Priority()`. A freed slot goes to the most urgent asker (the earliest `expires_at`, then any
batch without one), first come first served among equals.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Priority", "PriorityGate"]

_NEVER = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Priority:
    """How urgently a batch needs a slot: with `expires_at` (its oldest window's source data
    expires then) before any batch without one, the earliest `expires_at` first."""

    expires_at: datetime | None = None

    @property
    def at_risk(self) -> bool:
        return self.expires_at is not None

    @property
    def key(self) -> tuple[bool, datetime]:
        """Sorts the most urgent first."""
        return (self.expires_at is None, self.expires_at or _NEVER)


_Waiter = tuple[tuple[bool, datetime], int, asyncio.Future[None]]


class PriorityGate:
    """At most `limit` holders at a time, like a semaphore, but waiters are served by `Priority`
    and, among equals, in the order they asked.

    A released slot is handed out on the event loop's next turn, not at once: whoever finished
    a batch can ask again for its job's next one first, so a job's run of urgent batches is not
    interrupted by one less urgent waiter. A newcomer takes a free slot only if it is more urgent
    than every waiter; otherwise it queues, so equals never overtake one another. A waiter
    cancelled while it waits leaves the queue; one cancelled after being handed a slot, before
    it could take it, hands the slot on.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a gate needs at least one slot, not {limit}")
        self._limit = limit
        self._free = limit
        self._order = itertools.count()
        self._waiters: list[_Waiter] = []

    @property
    def free(self) -> int:
        """Slots nobody holds and nobody has been handed."""
        return self._free

    @property
    def limit(self) -> int:
        return self._limit

    def resize(self, limit: int) -> None:
        """Hold at most `limit` from now on. Lowered below what is held, no slot is handed out
        until enough holders have released theirs (`free` is negative meanwhile)."""
        if limit < 1:
            raise ValueError(f"a gate needs at least one slot, not {limit}")
        self._free += limit - self._limit
        self._limit = limit
        if self._free > 0 and self._waiters:
            self._hand_out_soon()

    @property
    def waiting(self) -> int:
        """Callers queued for a slot."""
        return sum(not handed.done() for _, _, handed in self._waiters)

    async def acquire(self, priority: Priority | None = None) -> None:
        key = (priority or Priority()).key
        self._prune()
        if self._free > 0 and (not self._waiters or key < self._waiters[0][0]):
            self._free -= 1
            return
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry: _Waiter = (key, next(self._order), handed)
        heapq.heappush(self._waiters, entry)
        if self._free > 0:
            self._hand_out_soon()
        try:
            await handed
        except asyncio.CancelledError:
            if handed.done() and not handed.cancelled():
                self.release()  # handed a slot, then cancelled before taking it: pass it on
            elif entry in self._waiters:
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
            raise

    def release(self) -> None:
        """Free one slot; the most urgent waiter gets it on the event loop's next turn."""
        self._free += 1
        if self._waiters:
            self._hand_out_soon()

    @asynccontextmanager
    async def slot(self, priority: Priority | None = None) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()

    def _hand_out_soon(self) -> None:
        asyncio.get_running_loop().call_soon(self._hand_out)

    def _hand_out(self) -> None:
        while self._free > 0 and self._waiters:
            _, _, handed = heapq.heappop(self._waiters)
            if not handed.done():  # a cancelled waiter's entry: skip it
                handed.set_result(None)
                self._free -= 1

    def _prune(self) -> None:
        """Drop cancelled waiters from the head of the queue."""
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)
