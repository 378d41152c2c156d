"""The PostgreSQL state store: one database shared by the tierflow workers of many machines.

psycopg 3 (async), with idle connections reused (`_Pool`); libpq reads the URL, so its
environment variables, `~/.pgpass`, `sslmode` and `target_session_attrs` work as they do for
`psql`. The password, when the config gives one, comes from a secret source and is resolved for
each new connection (a rotated secret is picked up), never put in the URL, a log or an error.

Each call is one transaction on one pooled connection. A claim locks the ledger rows it judges
with `SELECT … FOR UPDATE SKIP LOCKED`: a window whose row another transaction holds locked at
that instant (another worker claiming, renewing or finishing it) is not waited for but reported
held, as its row last read. A window with no row yet is inserted `ON CONFLICT DO NOTHING`, so
of two workers claiming it at once exactly one gets it. Renew and finish lock the rows they check
(`FOR UPDATE`, waiting), so a claim cannot take a window over between the check and the write;
finish and reset lock the job's row first, so watermark moves of one job happen one at a time.
Statements lock rows in window order. What a row becomes is decided by `tierflow._state._rules`,
as in every store; the statements are kept by name in `sql/postgres/queries.sql`, the schema in
`migrations/postgres/`, applied in order under an advisory lock when the store first connects.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Self, TypeVar

import psycopg
from psycopg import AsyncConnection, AsyncCursor, errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from tierflow._errors import StateError, StateUnavailableError
from tierflow._secrets import SecretSource, aresolve
from tierflow._state._base import (
    DEFAULT_KEEP_HISTORY,
    Attempt,
    Census,
    Claim,
    ClaimRequest,
    JobDefinition,
    LedgerEntry,
    LedgerRange,
    Outcome,
    RunStatus,
    StateStore,
)
from tierflow._state._rows import (
    attempt_of,
    census_of,
    entries_of,
    outcome_params,
    params_of,
    range_of,
    range_params,
    settled_attempts,
)
from tierflow._state._rules import (
    Refusal,
    abandon_reason,
    advance,
    carve,
    claimed,
    compact_limit,
    finished,
    fold,
    forget_from,
    holds,
    last_attempts,
    prune_due,
    range_entry,
    refusal,
    requeued,
    reset_watermark,
    spans,
)
from tierflow._state._slots import ClusterSlots
from tierflow._state._sql import queries, shipped_migrations
from tierflow._state._worker import Worker, worker_of, worker_params
from tierflow._windows import Window

__all__ = ["PostgresStateStore", "describe_url", "migrations"]

T = TypeVar("T")
Q = queries("postgres")
Connection = AsyncConnection[tuple[Any, ...]]
Cursor = AsyncCursor[tuple[Any, ...]]
#: Done windows read per query while the watermark advances.
_ADVANCE_BATCH = 1000
#: Before any window: `reset` without `since` forgets every range from here on.
_BEGINNING = datetime(1, 1, 2, tzinfo=UTC)
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
#: Tries of a transaction PostgreSQL aborted to break a deadlock (or a serialization failure).
_TRIES = 3


def migrations() -> list[tuple[int, str]]:
    """The schema migrations shipped with this version, as (version, SQL), in order."""
    return shipped_migrations("postgres", "PostgreSQL")


def describe_url(url: str) -> str:
    """The database a URL names, for errors and logs: `postgresql://user@host:port/db`, never a
    password (one in the URL, which the config refuses anyway, is left out)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://(an unreadable URL)"
    user = f"{params['user']}@" if params.get("user") else ""
    host = params.get("host") or "localhost"
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{host}{port}/{params.get('dbname') or ''}"


class PostgresStateStore(StateStore):
    """State in a PostgreSQL database, shared by any number of workers on any hosts.

    Nothing connects until the first call (or `async with`, which connects at once): the first
    connection migrates the schema, then up to `max_connections` at a time serve the calls.
    `password` is a secret source (`{ env = "…" }`, `{ file = "…" }`, `{ command = […] }`);
    without one libpq's usual sources apply (PGPASSWORD, ~/.pgpass). `timeout` bounds
    connecting, in seconds, unless the URL sets `connect_timeout`."""

    def __init__(
        self,
        url: str,
        *,
        password: SecretSource | None = None,
        max_connections: int = 8,
        timeout: float = 30.0,
        keep_history: timedelta | None = DEFAULT_KEEP_HISTORY,
    ) -> None:
        self.url = url
        self.keep_history = keep_history
        self._pruned: dict[str, datetime] = {}  # when each job's history was last pruned
        self._where = describe_url(url)
        self._password = password
        self._max_connections = max_connections
        self._timeout = timeout
        self._pool: _Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the pool's
        self._opening = asyncio.Lock()
        self._closed = False
        self._secrets: set[str] = set()  # resolved passwords, kept out of every message
        self._inflight: set[asyncio.Task[Any]] = set()
        #: The schema version of the database, once connected and migrated.
        self.schema_version: int | None = None

    def __repr__(self) -> str:
        return f"PostgresStateStore({self._where!r})"

    # -- connecting ------------------------------------------------------------------------------

    async def _connect_kwargs(self) -> dict[str, Any]:
        params = conninfo_to_dict(self.url)
        kwargs: dict[str, Any] = {}
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = max(1, round(self._timeout))
        if "application_name" not in params:
            kwargs["application_name"] = "tierflow"
        if not any(key.startswith("keepalives") for key in params):
            # A server cut off without closing the connection (a partition, a crashed host):
            # noticed within about a minute of silence instead of the system's two hours.
            kwargs |= _KEEPALIVES
        if self._password is not None:
            secret = await aresolve(self._password)
            self._secrets.add(secret)
            kwargs["password"] = secret
        return kwargs

    async def _connect(self) -> Connection:
        return await AsyncConnection.connect(self.url, **await self._connect_kwargs())

    async def _ready(self) -> _Pool:
        if self._closed:
            raise StateError(f"state store {self._where} is closed")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._forget_loop(loop)
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                if self.schema_version is None:
                    try:
                        self.schema_version = await self._migrate()
                    except psycopg.Error as exc:
                        raise self._error(exc) from exc
                self._pool = _Pool(self._connect, self._max_connections)
        return self._pool

    def _forget_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Move to another event loop. Connections belong to the loop they were opened on, and
        the CLI runs each step in its own `asyncio.run`: the idle connections of a loop that is
        gone are closed at once, and the next call connects afresh on its loop. The schema is
        not migrated again."""
        if self._pool is not None:
            self._pool.drop()
        self._pool = None
        self._inflight = set()
        self._opening = asyncio.Lock()
        self._loop = loop

    async def _migrate(self) -> int:
        """Apply the migrations the database lacks, in order, in one transaction under an
        advisory lock: of workers starting at once, one migrates and the others find it done."""
        async with await self._connect() as db, db.transaction():
            await db.execute(Q["migration_lock"])
            if not await _scalar(db, "has_schema_migrations"):
                await db.execute(Q["create_schema_migrations"])
            have = await _scalar(db, "schema_version")
            shipped = migrations()
            if have > len(shipped):
                raise StateError(
                    f"state store {self._where} has schema version {have}, newer than this "
                    f"tierflow knows ({len(shipped)}); upgrade tierflow"
                )
            for version, sql in shipped[have:]:
                await db.execute(sql.encode())
                await db.execute(Q["record_migration"], (version,))
            return await _scalar(db, "schema_version")

    async def __aenter__(self) -> Self:
        await self._ready()
        return self

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._drop_slots()
        if self._loop is not asyncio.get_running_loop():
            self._forget_loop(None)  # the pool's loop is gone: close its connections at once
            return
        if self._inflight:  # calls whose callers were cancelled: let them commit or not
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    def _error(self, exc: BaseException) -> StateError:
        message = str(exc).strip() or type(exc).__name__
        for secret in self._secrets:
            message = message.replace(secret, "***")
        # Connecting failed, the connection was lost, the server is shutting down, a deadlock
        # outlasted its retries: worth trying again later (psycopg's OperationalError).
        unavailable = isinstance(exc, psycopg.OperationalError)
        kind = StateUnavailableError if unavailable else StateError
        return kind(f"state store {self._where}: {message}")

    # -- transactions ----------------------------------------------------------------------------

    async def _transact(self, work: Callable[[Cursor], Awaitable[T]]) -> T:
        """Run `work` in one transaction, to its end even if the caller is cancelled (as SQLite's
        thread does): the caller sees the cancellation, the transaction commits or not whole."""
        task = asyncio.ensure_future(self._in_transaction(work))
        self._inflight.add(task)
        task.add_done_callback(self._settled)
        return await asyncio.shield(task)

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self._inflight.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a cancelled caller's failure is not "never retrieved"

    async def _in_transaction(self, work: Callable[[Cursor], Awaitable[T]]) -> T:
        pool = await self._ready()
        tried, fresh = 0, False
        while True:
            connected = began = False
            try:
                async with pool.connection() as db:
                    connected = True
                    async with db.transaction(), db.cursor() as cursor:
                        began = True
                        return await work(cursor)
            except (errors.DeadlockDetected, errors.SerializationFailure) as exc:
                tried += 1
                if tried == _TRIES:
                    raise self._error(exc) from exc
            except psycopg.OperationalError as exc:
                if began or not connected or fresh:
                    raise self._error(exc) from exc
                # BEGIN failed on a connection we had, so nothing was done. An idle connection
                # dies with the server (restarted, failed over, or it dropped us), and so do
                # all the others: try once more on a new connection.
                pool.drop()
                fresh = True
            except psycopg.Error as exc:
                raise self._error(exc) from exc

    async def _read(self, name: str, *args: Any) -> list[tuple[Any, ...]]:
        async def work(cursor: Cursor) -> list[tuple[Any, ...]]:
            await cursor.execute(Q[name], args)
            return await cursor.fetchall()

        return await self._transact(work)

    # -- the contract ----------------------------------------------------------------------------

    async def ensure_job(self, job: str, origin: datetime) -> datetime:
        async def work(cursor: Cursor) -> datetime:
            await cursor.execute(Q["ensure_job"], (job, origin))
            await cursor.execute(Q["watermark"], (job,))
            return _utc(await _one(cursor))

        return await self._transact(work)

    async def watermark(self, job: str) -> datetime | None:
        rows = await self._read("watermark", job)
        return _utc(rows[0][0]) if rows else None

    async def entries(
        self, job: str, since: datetime, until: datetime | None = None
    ) -> list[LedgerEntry]:
        span = {"job": job, "since": since, "until": until}

        async def work(cursor: Cursor) -> list[LedgerEntry]:
            await cursor.execute(Q["entries"], span)
            found = _entries(job, await cursor.fetchall())
            ranges = await _ranges(cursor, span)
            if not ranges:  # the common case: asked from the watermark on
                return found
            found += [entry for piece in ranges for entry in piece.entries(since, until)]
            return sorted(found, key=lambda entry: entry.window.start)

        return await self._transact(work)

    async def census(self, job: str, since: datetime, until: datetime) -> Census:
        async def work(cursor: Cursor) -> Census:
            await cursor.execute(Q["census_counts"], (job, since, until))
            counts = await cursor.fetchall()
            await cursor.execute(Q["census_running"], (job, since, until))
            running = await cursor.fetchall()
            ranges = await _ranges(cursor, {"job": job, "since": since, "until": until})
            return census_of(job, counts, running, _utc, ranges, (since, until))

        return await self._transact(work)

    async def _claim(self, request: ClaimRequest) -> Claim:
        job, windows = request.job, request.windows
        started_at = request.started_at
        starts = sorted(window.start for window in windows)  # rows are locked in window order
        if not starts:
            return Claim()
        span = {"job": job, "since": starts[0], "until": max(w.stop for w in windows)}

        async def work(cursor: Cursor) -> Claim:
            if request.force:
                # A forced claim may carve windows out of ranges: under the job's lock, as
                # folds (in `finish`) are, so the two happen one at a time.
                await cursor.execute(Q["lock_watermark"], (job,))
            await cursor.execute(Q["claim_entries"], (job, starts))
            mine = {e.window.start: e for e in _entries(job, await cursor.fetchall())}
            # Rows another transaction has locked right now: held, as they last read.
            busy = await _entries_at(cursor, job, [s for s in starts if s not in mine])
            # Ranges are read after the rows: a window a concurrent fold moved into a range
            # since is seen in one or the other (the fold deletes rows it holds locked).
            ranges = await _ranges(cursor, span)
            folded = {s: e for s in starts if (e := range_entry(ranges, s)) is not None}
            fresh = [s for s in starts if s not in mine and s not in busy and s not in folded]
            earlier = await _last_attempts(cursor, job, fresh, span)
            taken: dict[datetime, LedgerEntry] = {}
            refused: dict[datetime, LedgerEntry | None] = dict(busy)  # None: settled
            for window in windows:
                if window.start in busy:
                    continue
                entry = mine.get(window.start) or folded.get(window.start)
                why = refusal(entry, request)
                if why is not None:
                    refused[window.start] = entry if why is Refusal.HELD else None
                    continue
                taken[window.start] = claimed(entry, window, request, earlier.get(window.start, 0))
            await _abandon(cursor, job, [mine[s] for s in taken if s in mine], started_at)
            rows = [_row(new) for start, new in sorted(taken.items()) if start in mine]
            if rows:
                await cursor.executemany(Q["claim_run"], rows)
            new_rows = [new for start, new in sorted(taken.items()) if start not in mine]
            if lost := await _insert_new(cursor, new_rows):
                # Another worker made these rows since we looked: its claim holds them.
                refused |= await _entries_at(cursor, job, sorted(lost))
                taken = {start: new for start, new in taken.items() if start not in lost}
            carved = [left for piece in ranges for left in carve(piece, taken.keys())]
            await _replace_ranges(cursor, ranges, carved)
            await _record_attempts(cursor, list(taken.values()), request)
            return Claim(
                tuple(w for w in windows if w.start in taken),
                tuple(e for w in windows if (e := refused.get(w.start)) is not None),
                tuple(w for w in windows if w.start in refused and refused[w.start] is None),
            )

        return await self._transact(work)

    async def renew(
        self, job: str, windows: Sequence[Window], *, run_id: str, lease_expires_at: datetime
    ) -> bool:
        starts = sorted(window.start for window in windows)

        async def work(cursor: Cursor) -> bool:
            locked = await _lock_entries(cursor, job, starts)
            if not all(holds(locked.get(start), run_id) for start in starts):
                return False
            await cursor.execute(Q["renew_lease"], (lease_expires_at, job, starts))
            return True

        return await self._transact(work)

    async def finish(
        self,
        job: str,
        windows: Sequence[Window],
        *,
        run_id: str,
        outcome: Outcome,
        park_after: int | None = None,
        compact_before: datetime | None = None,
    ) -> datetime:
        starts = sorted(window.start for window in windows)
        done = {
            "duration_s": outcome.duration_s,
            "query_hash": outcome.query_hash,
            "template_version": outcome.template_version,
        }
        prune = self.keep_history is not None and prune_due(
            self._pruned.get(job), outcome.finished_at
        )

        async def work(cursor: Cursor) -> datetime:
            await cursor.execute(Q["lock_watermark"], (job,))
            row = await cursor.fetchone()
            if row is None:
                raise StateError(f"job {job} is not registered in the state store")
            if not starts:
                return _utc(row[0])
            locked = await _lock_entries(cursor, job, starts)
            for start in starts:
                if not holds(locked.get(start), run_id):
                    raise StateError(f"job {job}: run {run_id} no longer holds window {start}")
            new = [finished(locked[start], outcome, park_after) for start in starts]
            await cursor.executemany(Q["finish_run"], [_row(entry) | done for entry in new])
            await _settle(cursor, job, run_id, set(starts), outcome_params(outcome, _same))
            undone = None if outcome.status.done else starts[0]
            mark = await _advanced(cursor, job, _utc(row[0]), undone)
            await cursor.execute(Q["set_watermark"], (mark, job))
            if (limit := compact_limit(mark, compact_before)) is not None:
                await _fold(cursor, job, limit)
            if prune:
                assert self.keep_history is not None
                cutoff = outcome.finished_at - self.keep_history
                await cursor.execute(Q["prune_history"], {"job": job, "cutoff": cutoff})
            return mark

        mark = await self._transact(work)
        if prune:
            self._pruned[job] = outcome.finished_at
        return mark

    async def requeue(
        self, job: str, start: datetime | None = None, stop: datetime | None = None
    ) -> int:
        async def work(cursor: Cursor) -> int:
            await cursor.execute(Q["parked_entries"], {"job": job, "start": start, "stop": stop})
            parked = _entries(job, await cursor.fetchall())
            if parked:
                await cursor.executemany(Q["requeue_run"], [_row(requeued(e)) for e in parked])
            return len(parked)

        return await self._transact(work)

    async def count_attempts(self, job: str, *, reason: str) -> int:
        rows = await self._read("count_attempts", job, reason)
        return int(rows[0][0])

    async def history(self, job: str, *, limit: int = 50) -> list[Attempt]:
        rows = await self._read("history", job, limit)
        return [attempt_of(job, row, _utc) for row in rows]

    async def jobs(self) -> list[str]:
        return [str(row[0]) for row in await self._read("jobs")]

    async def definition(self, job: str) -> JobDefinition | None:
        rows = await self._read("definition", job)
        return JobDefinition(str(rows[0][0])) if rows else None

    async def record_definition(self, job: str, definition: JobDefinition) -> None:
        async def work(cursor: Cursor) -> None:
            await _record(cursor, job, definition)

        await self._transact(work)

    async def reset(
        self,
        job: str,
        definition: JobDefinition,
        *,
        since: datetime | None,
        origin: datetime,
    ) -> int:
        async def work(cursor: Cursor) -> int:
            await cursor.execute(Q["lock_watermark"], (job,))
            row = await cursor.fetchone()
            await cursor.execute(Q["forget_runs"], (job, since, since))
            forgotten = cursor.rowcount
            everything = {"job": job, "since": since or _BEGINNING, "until": None}
            ranges = await _ranges(cursor, everything)
            kept: list[LedgerRange] = []
            for piece in ranges:
                left, count = forget_from(piece, since)
                forgotten += count
                kept += [left] if left is not None else []
            await _replace_ranges(cursor, ranges, kept)
            if row is not None:
                mark = reset_watermark(_utc(row[0]), since, origin)
                await cursor.execute(Q["set_watermark"], (mark, job))
            await _record(cursor, job, definition)
            return forgotten

        return await self._transact(work)

    # -- slots held across every worker (`tierflow._state._slots`) ------------------------------

    _slots: ClusterSlots | None = None

    def slot(
        self, scope: str, limit: int, *, lease: timedelta
    ) -> AbstractAsyncContextManager[None]:
        """A slot held across every worker of this database: a session-level advisory lock on
        this worker's own slot connection (one more than the pool's `max_connections`), free
        again when released, when the worker's session ends, or once the worker has stopped
        beating it for `lease` (see `tierflow._state._slots`)."""
        if self._closed:
            raise StateError(f"state store {self._where} is closed")
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots.loop is not loop:
            self._drop_slots()  # a loop that is gone: its slots were given back with it
            self._slots = ClusterSlots(
                self._connect_slots, self._error, timeout=self._timeout, lease=lease
            )
        return self._slots.slot(scope, limit, lease=lease)

    async def _connect_slots(self, keepalives: Mapping[str, Any]) -> Connection:
        kwargs = await self._connect_kwargs()
        params = conninfo_to_dict(self.url)  # the URL's own keepalive settings win
        extra = {key: value for key, value in keepalives.items() if key not in params}
        # The slot session's keepalives follow the lease (they replace the pool's defaults).
        return await AsyncConnection.connect(self.url, autocommit=True, **(kwargs | extra))

    def _drop_slots(self) -> None:
        if self._slots is not None:
            self._slots.drop()
            self._slots = None

    # -- workers -------------------------------------------------------------------------------

    async def beat(self, worker: Worker, *, forget_before: datetime | None = None) -> None:
        params = worker_params(worker, lambda moment: moment, list(worker.jobs))

        async def work(cursor: Cursor) -> None:
            await cursor.execute(Q["beat"], params)
            if forget_before is not None:
                await cursor.execute(Q["forget_workers"], (forget_before,))

        await self._transact(work)

    async def workers(self, since: datetime) -> list[Worker]:
        rows = await self._read("workers", since)
        return [worker_of(row, _utc, row[7]) for row in rows]


# -- helpers inside a transaction ---------------------------------------------------------------


class _Pool:
    """The connections of one event loop: idle ones reused, new ones opened on demand, at most
    `size` in use. Unlike psycopg_pool it runs no background tasks (connecting, growing,
    checking), which would outlive a loop that ends mid-connect: the CLI's `asyncio.run`s
    would hang closing it. A connection that fails or is left in a transaction is closed."""

    def __init__(self, connect: Callable[[], Awaitable[Connection]], size: int) -> None:
        self._connect = connect
        self._idle: list[Connection] = []
        self._slots = asyncio.Semaphore(size)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self._slots:
            db = self._idle.pop() if self._idle else await self._connect()
            try:
                yield db
            finally:
                if not db.closed and db.info.transaction_status is TransactionStatus.IDLE:
                    self._idle.append(db)
                else:
                    db.pgconn.finish()

    def drop(self) -> None:
        """Close the idle connections at once, without the event loop (theirs may be gone)."""
        for db in self._idle:
            db.pgconn.finish()
        self._idle.clear()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for db in idle:
            await db.close()


async def _scalar(db: Connection, name: str) -> int:
    cursor = await db.execute(Q[name])
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def _one(cursor: Cursor) -> Any:
    row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def _lock_entries(
    cursor: Cursor, job: str, starts: list[datetime]
) -> dict[datetime, LedgerEntry]:
    await cursor.execute(Q["lock_entries"], (job, starts))
    return {entry.window.start: entry for entry in _entries(job, await cursor.fetchall())}


async def _entries_at(
    cursor: Cursor, job: str, starts: list[datetime]
) -> dict[datetime, LedgerEntry]:
    if not starts:
        return {}
    await cursor.execute(Q["entries_at"], (job, starts))
    return {entry.window.start: entry for entry in _entries(job, await cursor.fetchall())}


async def _ranges(cursor: Cursor, span: dict[str, Any]) -> list[LedgerRange]:
    """The ledger ranges holding windows that start in `[since, until)` of `span`."""
    await cursor.execute(Q["ranges_overlapping"], span)
    return [range_of(span["job"], row, _utc, _same_length) for row in await cursor.fetchall()]


async def _replace_ranges(
    cursor: Cursor, old: Sequence[LedgerRange], new: Sequence[LedgerRange]
) -> None:
    """Write `new` in place of `old` (unless they are the same)."""
    if list(old) == list(new):
        return
    if old:
        await cursor.executemany(Q["delete_range"], [(piece.job, piece.start) for piece in old])
    if new:
        await cursor.executemany(
            Q["insert_range"], [range_params(piece, _same, _same_length) for piece in new]
        )


async def _fold(cursor: Cursor, job: str, limit: datetime) -> None:
    """Fold the done windows stopping at or before `limit` into ledger ranges (the caller holds
    the job's lock)."""
    await cursor.execute(Q["fold_candidates"], (job, limit, limit))
    done = _entries(job, await cursor.fetchall())
    if not done:
        return
    await cursor.execute(Q["ranges_touching"], (job, done[0].window.start, done[-1].window.stop))
    ranges = [range_of(job, row, _utc, _same_length) for row in await cursor.fetchall()]
    await _replace_ranges(cursor, ranges, fold(ranges, done))
    await cursor.execute(Q["delete_folded"], (job, limit, limit))


async def _last_attempts(
    cursor: Cursor, job: str, starts: list[datetime], span: dict[str, Any]
) -> dict[datetime, int]:
    if not starts:
        return {}
    await cursor.execute(Q["history_overlapping"], (job, span["since"], span["until"]))
    rows = [
        (Window(_utc(start), _utc(stop)), count, attempt)
        for start, stop, count, attempt in await cursor.fetchall()
    ]
    return last_attempts(rows, starts)


async def _abandon(cursor: Cursor, job: str, entries: list[LedgerEntry], at: datetime) -> None:
    """Mark abandoned the attempts a claim takes over (running under another run), each run's
    at once."""
    over: dict[str, list[LedgerEntry]] = {}
    for entry in entries:
        if entry.status is RunStatus.RUNNING:
            over.setdefault(entry.run_id or "", []).append(entry)
    for run_id, left in over.items():
        ended = outcome_params(None, _same) | {
            "status": RunStatus.ABANDONED.value,
            "finished_at": at,
            "error": abandon_reason(left[0], at),
        }
        await _settle(cursor, job, run_id, {entry.window.start for entry in left}, ended)


async def _settle(
    cursor: Cursor, job: str, run_id: str, starts: set[datetime], ended: dict[str, object]
) -> None:
    """Give the attempts `run_id` is making at the windows starting at `starts` the ending
    `ended` (`settle_attempt`'s parameters), splitting history rows that hold other windows:
    the first part ended keeps the row's id, the other parts are rows of their own."""
    await cursor.execute(Q["running_attempts"], (run_id, job))
    kept, split = settled_attempts(await cursor.fetchall(), starts, ended, _utc, _same)
    if split:  # copies of the rows as they still are
        await cursor.executemany(Q["split_attempt"], split)
    if kept:
        await cursor.executemany(Q["settle_attempt"], kept)


async def _insert_new(cursor: Cursor, new: list[LedgerEntry]) -> set[datetime]:
    """Insert the rows of windows that had none; return the starts another transaction inserted
    first (those rows are not ours)."""
    if not new:
        return set()
    await cursor.executemany(Q["claim_new_run"], [_row(entry) for entry in new], returning=True)
    inserted: set[datetime] = set()
    while True:
        row = await cursor.fetchone()
        if row is not None:
            inserted.add(_utc(row[0]))
        if not cursor.nextset():
            break
    return {entry.window.start for entry in new} - inserted


async def _record_attempts(cursor: Cursor, taken: list[LedgerEntry], request: ClaimRequest) -> None:
    """One history row per run of adjacent windows taken at the same attempt."""
    rows = [
        (
            request.job,
            run.start,
            run.stop,
            count,
            attempt,
            request.run_id,
            request.started_at,
            request.reason,
        )
        for run, count, attempt in spans(taken)
    ]
    if rows:
        await cursor.executemany(Q["insert_attempt"], rows)


async def _advanced(cursor: Cursor, job: str, mark: datetime, undone: datetime | None) -> datetime:
    """The watermark `_rules.advance` gives, reading the done windows ahead a batch at a time."""
    mark = advance(mark, undone, lambda _: None)  # back to a window that did not succeed
    while True:
        await cursor.execute(Q["done_from"], (job, mark, _ADVANCE_BATCH))
        rows = await cursor.fetchall()
        await cursor.execute(Q["ranges_from"], (job, mark, _ADVANCE_BATCH))
        ranges = await cursor.fetchall()
        done = {_utc(start): _utc(stop) for start, stop in [*rows, *ranges]}
        moved = advance(mark, None, done.get)
        if moved == mark or max(len(rows), len(ranges)) < _ADVANCE_BATCH:
            return moved
        mark = moved


async def _record(cursor: Cursor, job: str, definition: JobDefinition) -> None:
    await cursor.execute(Q["record_definition"], (job, definition.digest, definition.body))


def _same(moment: datetime) -> object:
    """A timestamptz parameter: the datetime as it is."""
    return moment


def _same_length(length: timedelta) -> timedelta:
    """An interval, read or written: the timedelta as it is."""
    return length


def _utc(moment: datetime) -> datetime:
    """A timestamptz as tierflow keeps times: in UTC, whatever the session's TimeZone."""
    return moment.astimezone(UTC)


def _entries(job: str, rows: Iterable[Sequence[Any]]) -> list[LedgerEntry]:
    return entries_of(job, rows, _utc)


def _row(entry: LedgerEntry) -> dict[str, object]:
    """A ledger entry as named parameters; a timestamptz parameter is the datetime as it is."""
    return params_of(entry, lambda moment: moment)
