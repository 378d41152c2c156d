"""Slots that hold across every worker of one PostgreSQL state database.

`[scheduler] max_concurrency` and each connection's `max_concurrency` bound what InfluxDB sees,
so they must hold across all `tierflow run` processes sharing the state, not per process. Each
worker keeps one connection for its slots; a slot of a scope (`connection:plant`, `scheduler`)
with limit N is a session-level advisory lock `(scope key, i)` for one `i < N`, taken with
`pg_try_advisory_lock` and given back with `pg_advisory_unlock`.

Why advisory locks and not rows with leases: a lock lives exactly as long as the session that
took it. A worker killed with `kill -9` closes its socket, PostgreSQL ends the session and its
slots are free at once: no lease to wait out, nothing to reap. A worker that is alive but stopped
(SIGSTOP) keeps its session and so its slots; rightly, since a request it sent may still be
running at InfluxDB. Workers whose configs disagree on a limit (a rolling change) share the
indexes below the smaller one, so together they never hold more than the larger.

Waiting: per scope, one waiter of the process asks PostgreSQL at a time (the others queue behind
it, in the order the process's priority gates let them through), polling with a backoff from
10 ms to 250 ms, and at once when the process itself frees a slot of the scope. Workers are
served by whoever asks first after a slot is freed, not in turn: the worker that freed one
usually takes it again. That leaves the at-risk-first order intact: the runner claims a batch's
windows only once it holds its slots, and every worker plans every job, so whichever worker
holds them runs the most urgent batches first.

The slot connection may drop (PostgreSQL restarts, a network cut, an administrator ends it).
Its locks are then gone, though the requests they admitted may still be in flight. The worker
notices at its next statement, connects again and first takes those slots back (they are likely
still free); a slot another worker took meanwhile stays *lost*: until the request it admitted
finishes, the worker takes no new slot of that scope, so the overshoot lasts no longer than the
requests that were in flight when the connection dropped. Until it has connected again it takes
no slot at all: asking raises `StateError` (the daemon pauses and tries again).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection

from tierflow._errors import StateError
from tierflow._logging import log_event
from tierflow._state._sql import parse_queries

__all__ = ["ClusterSlots", "scope_key"]

T = TypeVar("T")
Connection = AsyncConnection[tuple[Any, ...]]
#: How long a waiter first waits before asking again, and at most.
_FIRST_PAUSE = 0.01
_MAX_PAUSE = 0.25


@cache
def _queries() -> Mapping[str, str]:
    source = resources.files("tierflow._state") / "sql" / "postgres" / "slots.sql"
    return parse_queries(source.read_text(encoding="utf-8"))


def scope_key(scope: str) -> int:
    """The first advisory-lock key of `scope`: a signed 32-bit hash of its name. Two scopes
    whose keys collide share their slots, which is stricter, never looser, than their limits."""
    digest = hashlib.sha256(f"tierflow slot {scope}".encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


@dataclass(eq=False)
class _Holding:
    """One slot this worker holds: lock `(scope_key(scope), index)`, taken on the slot
    connection of `generation`; on an earlier one, it was lost with that connection."""

    scope: str
    index: int
    generation: int


class _Lost(Exception):
    """The slot connection failed under a statement; it is closed and its locks are gone."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class ClusterSlots:
    """The slots of one worker, on one connection of its own (see the module's doc). Belongs to
    the event loop it was made on. `connect` opens the connection (autocommit), `error` turns a
    driver error into the store's `StateError` (naming the database, never a password);
    `timeout` (seconds) bounds each statement: one that hangs is a lost connection."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Connection]],
        error: Callable[[BaseException], StateError],
        *,
        timeout: float,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._connect = connect
        self._error = error
        self._timeout = timeout
        self._db: Connection | None = None
        self._generation = 0
        self._using = asyncio.Lock()  # one statement at a time, and one reconnection
        self._holdings: set[_Holding] = set()
        self._turns: dict[str, asyncio.Lock] = {}
        self._freed: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @asynccontextmanager
    async def slot(self, scope: str, limit: int) -> AsyncIterator[None]:
        """One of `limit` slots of `scope` across every worker, held until the block ends."""
        if limit < 1:
            raise ValueError(f"a slot scope needs at least one slot, not {limit}")
        holding = await self._wait(scope, limit)
        try:
            yield
        finally:
            await self._detached(self._release(holding))

    def drop(self) -> None:
        """Close the slot connection at once, without the event loop (it may be gone): every
        slot it holds is free for the other workers."""
        db, self._db = self._db, None
        if db is not None:
            db.pgconn.finish()
        self._generation += 1

    # -- taking and giving back --------------------------------------------------------------------

    async def _wait(self, scope: str, limit: int) -> _Holding:
        freed = self._freed.setdefault(scope, asyncio.Event())
        async with self._turns.setdefault(scope, asyncio.Lock()):
            pause = _FIRST_PAUSE
            while True:
                freed.clear()  # before asking: a slot freed while we ask wakes the next ask
                holding = await self._take_detached(scope, limit)
                if holding is not None:
                    return holding
                with suppress(TimeoutError):
                    # Jittered, so that workers that missed the same slot do not ask in step.
                    await asyncio.wait_for(freed.wait(), pause * (0.5 + random.random() / 2))
                pause = min(pause * 2, _MAX_PAUSE)

    async def _take_detached(self, scope: str, limit: int) -> _Holding | None:
        """`_take`, run to its end even if the caller is cancelled; a slot it took for a caller
        that is gone is given back."""
        task = self._spawn(self._take(scope, limit))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._give_back)
            raise

    def _give_back(self, task: asyncio.Task[_Holding | None]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        holding = task.result()
        if holding is not None:
            self._spawn(self._release(holding))

    async def _take(self, scope: str, limit: int) -> _Holding | None:
        params = {"scope": scope_key(scope), "limit": limit}
        async with self._using:
            for tried in (1, 2):  # a connection found lost is opened again once at once
                try:
                    db = await self._connection()
                    if any(h.scope == scope and self._lost(h) for h in self._holdings):
                        return None  # a request admitted by a lost slot may still be in flight
                    mine = sorted(h.index for h in self._holdings if h.scope == scope)
                    row = await self._fetch(db, "take_slot", params | {"mine": mine})
                except _Lost as lost:
                    if tried == 2:
                        raise self._error(lost.cause) from lost.cause
                    continue
                if row is None:
                    return None
                holding = _Holding(scope, int(row[0]), self._generation)
                self._holdings.add(holding)
                return holding
        raise AssertionError("unreachable")  # pragma: no cover

    async def _release(self, holding: _Holding) -> None:
        async with self._using:
            self._holdings.discard(holding)
            db = self._db
            if not self._lost(holding) and db is not None and not db.closed:
                key = (scope_key(holding.scope), holding.index)
                # A failure closes the connection, which frees the lock as well.
                with suppress(_Lost):
                    row = await self._fetch(db, "release_slot", key)
                    if row is None or not row[0]:
                        log_event(
                            "slot_not_held",
                            level=logging.WARNING,
                            scope=holding.scope,
                            index=holding.index,
                        )
        self._freed.setdefault(holding.scope, asyncio.Event()).set()

    # -- the connection ----------------------------------------------------------------------------

    def _lost(self, holding: _Holding) -> bool:
        return holding.generation != self._generation

    async def _connection(self) -> Connection:
        """The slot connection, opened again if it was lost (then the slots it held are taken
        back where no other worker took them meanwhile). Raises StateError if it cannot be
        opened, `_Lost` if it fails at once."""
        if self._db is not None and not self._db.closed:
            return self._db
        if self._db is not None:
            self._lose(None)
        try:
            db = await self._connect()
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        self._db = db
        lost = [h for h in self._holdings if self._lost(h)]
        for holding in lost:
            row = await self._fetch(db, "retake_slot", (scope_key(holding.scope), holding.index))
            if row is not None and row[0]:
                holding.generation = self._generation
        if lost:
            log_event(
                "slot_connection_restored",
                retaken=sum(not self._lost(h) for h in lost),
                still_lost=sum(self._lost(h) for h in lost),
            )
        return db

    async def _fetch(self, db: Connection, name: str, params: Any) -> tuple[Any, ...] | None:
        try:
            async with asyncio.timeout(self._timeout):
                cursor = await db.execute(_queries()[name], params)
                return await cursor.fetchone()
        except (psycopg.Error, TimeoutError) as exc:
            self._lose(exc)
            raise _Lost(exc) from exc

    def _lose(self, cause: BaseException | None) -> None:
        """Close the slot connection: the slots it held are lost (their requests finish)."""
        in_use = sum(not self._lost(h) for h in self._holdings)
        self.drop()
        log_event(
            "slot_connection_lost",
            level=logging.WARNING,
            slots_in_use=in_use,
            error=str(self._error(cause)) if cause is not None else "connection closed",
        )

    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _detached(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` to its end even if the caller is cancelled (the caller sees that)."""
        await asyncio.shield(self._spawn(work))
