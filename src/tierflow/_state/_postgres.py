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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Self, TypeVar

import psycopg
from psycopg import AsyncConnection, AsyncCursor, errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from tierflow._errors import StateError
from tierflow._secrets import SecretSource, aresolve
from tierflow._state._base import (
    Attempt,
    Census,
    Claim,
    ClaimRequest,
    JobDefinition,
    LedgerEntry,
    Outcome,
    RunStatus,
    StateStore,
)
from tierflow._state._rows import attempt_of, census_of, entries_of, params_of
from tierflow._state._rules import (
    Refusal,
    abandon_reason,
    advance,
    claimed,
    finished,
    holds,
    refusal,
    requeued,
    reset_watermark,
)
from tierflow._state._slots import ClusterSlots
from tierflow._state._sql import queries, shipped_migrations
from tierflow._windows import Window

__all__ = ["PostgresStateStore", "describe_url", "migrations"]

T = TypeVar("T")
Q = queries("postgres")
Connection = AsyncConnection[tuple[Any, ...]]
Cursor = AsyncCursor[tuple[Any, ...]]
#: Done windows read per query while the watermark advances.
_ADVANCE_BATCH = 1000
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
    ) -> None:
        self.url = url
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
        return StateError(f"state store {self._where}: {message}")

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
        for tried in range(1, _TRIES + 1):
            try:
                async with pool.connection() as db, db.transaction(), db.cursor() as cursor:
                    return await work(cursor)
            except (errors.DeadlockDetected, errors.SerializationFailure) as exc:
                if tried == _TRIES:
                    raise self._error(exc) from exc
            except psycopg.Error as exc:
                raise self._error(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

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
        async def work(cursor: Cursor) -> list[LedgerEntry]:
            await cursor.execute(Q["entries"], {"job": job, "since": since, "until": until})
            return _entries(job, await cursor.fetchall())

        return await self._transact(work)

    async def census(self, job: str, since: datetime, until: datetime) -> Census:
        async def work(cursor: Cursor) -> Census:
            await cursor.execute(Q["census_counts"], (job, since, until))
            counts = await cursor.fetchall()
            await cursor.execute(Q["census_running"], (job, since, until))
            return census_of(job, counts, await cursor.fetchall(), _utc)

        return await self._transact(work)

    async def _claim(self, request: ClaimRequest) -> Claim:
        job, windows = request.job, request.windows
        started_at = request.started_at
        starts = sorted(window.start for window in windows)  # rows are locked in window order

        async def work(cursor: Cursor) -> Claim:
            await cursor.execute(Q["claim_entries"], (job, starts))
            mine = {e.window.start: e for e in _entries(job, await cursor.fetchall())}
            # Rows another transaction has locked right now: held, as they last read.
            busy = await _entries_at(cursor, job, [s for s in starts if s not in mine])
            fresh = [s for s in starts if s not in mine and s not in busy]
            earlier = await _last_attempts(cursor, job, fresh)
            taken: dict[datetime, LedgerEntry] = {}
            refused: dict[datetime, LedgerEntry | None] = dict(busy)  # None: settled
            for window in windows:
                if window.start in busy:
                    continue
                entry = mine.get(window.start)
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
            await _record_attempts(cursor, taken.values(), request.reason)
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
    ) -> datetime:
        starts = sorted(window.start for window in windows)
        done = {
            "duration_s": outcome.duration_s,
            "query_hash": outcome.query_hash,
            "template_version": outcome.template_version,
        }

        async def work(cursor: Cursor) -> datetime:
            await cursor.execute(Q["lock_watermark"], (job,))
            row = await cursor.fetchone()
            if row is None:
                raise StateError(f"job {job} is not registered in the state store")
            locked = await _lock_entries(cursor, job, starts)
            for start in starts:
                if not holds(locked.get(start), run_id):
                    raise StateError(f"job {job}: run {run_id} no longer holds window {start}")
            new = [finished(locked[start], outcome, park_after) for start in starts]
            await cursor.executemany(Q["finish_run"], [_row(entry) | done for entry in new])
            await cursor.executemany(
                Q["finish_attempt"],
                [
                    (
                        outcome.status.value,
                        outcome.finished_at,
                        outcome.duration_s,
                        outcome.query_hash,
                        outcome.template_version,
                        outcome.error,
                        job,
                        entry.window.start,
                        entry.attempts,
                    )
                    for entry in new
                ],
            )
            undone = None if outcome.status.done else starts[0]
            mark = await _advanced(cursor, job, _utc(row[0]), undone)
            await cursor.execute(Q["set_watermark"], (mark, job))
            return mark

        return await self._transact(work)

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
            if row is not None:
                mark = reset_watermark(_utc(row[0]), since, origin)
                await cursor.execute(Q["set_watermark"], (mark, job))
            await _record(cursor, job, definition)
            return forgotten

        return await self._transact(work)

    # -- slots held across every worker (`tierflow._state._slots`) ------------------------------

    _slots: ClusterSlots | None = None

    def slot(self, scope: str, limit: int) -> AbstractAsyncContextManager[None]:
        """A slot held across every worker of this database: a session-level advisory lock on
        this worker's own slot connection (one more than the pool's `max_connections`), free
        again when released or when the worker's session ends (see `tierflow._state._slots`)."""
        if self._closed:
            raise StateError(f"state store {self._where} is closed")
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots.loop is not loop:
            self._drop_slots()  # a loop that is gone: its slots were given back with it
            self._slots = ClusterSlots(self._connect_slots, self._error, timeout=self._timeout)
        return self._slots.slot(scope, limit)

    async def _connect_slots(self) -> Connection:
        kwargs = await self._connect_kwargs()
        return await AsyncConnection.connect(self.url, autocommit=True, **kwargs)

    def _drop_slots(self) -> None:
        if self._slots is not None:
            self._slots.drop()
            self._slots = None


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


async def _last_attempts(cursor: Cursor, job: str, starts: list[datetime]) -> dict[datetime, int]:
    if not starts:
        return {}
    await cursor.execute(Q["last_attempts"], (job, starts))
    return {_utc(start): int(last) for start, last in await cursor.fetchall()}


async def _abandon(cursor: Cursor, job: str, entries: list[LedgerEntry], at: datetime) -> None:
    """Mark abandoned the attempts a claim takes over (running under another run)."""
    rows = [
        (at, abandon_reason(entry, at), job, entry.window.start)
        for entry in entries
        if entry.status is RunStatus.RUNNING
    ]
    if rows:
        await cursor.executemany(Q["abandon_attempt"], rows)


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


async def _record_attempts(cursor: Cursor, taken: Iterable[LedgerEntry], reason: str) -> None:
    rows = [
        (
            entry.job,
            entry.window.start,
            entry.window.stop,
            entry.attempts,
            entry.run_id,
            entry.started_at,
            reason,
        )
        for entry in taken
    ]
    if rows:
        await cursor.executemany(Q["insert_attempt"], rows)


async def _advanced(cursor: Cursor, job: str, mark: datetime, undone: datetime | None) -> datetime:
    """The watermark `_rules.advance` gives, reading the done windows ahead a batch at a time."""
    mark = advance(mark, undone, lambda _: None)  # back to a window that did not succeed
    while True:
        await cursor.execute(Q["done_from"], (job, mark, _ADVANCE_BATCH))
        done = {_utc(start): _utc(stop) for start, stop in await cursor.fetchall()}
        moved = advance(mark, None, done.get)
        if moved == mark or len(done) < _ADVANCE_BATCH:
            return moved
        mark = moved


async def _record(cursor: Cursor, job: str, definition: JobDefinition) -> None:
    await cursor.execute(Q["record_definition"], (job, definition.digest, definition.body))


def _utc(moment: datetime) -> datetime:
    """A timestamptz as tierflow keeps times: in UTC, whatever the session's TimeZone."""
    return moment.astimezone(UTC)


def _entries(job: str, rows: Iterable[Sequence[Any]]) -> list[LedgerEntry]:
    return entries_of(job, rows, _utc)


def _row(entry: LedgerEntry) -> dict[str, object]:
    """A ledger entry as named parameters; a timestamptz parameter is the datetime as it is."""
    return params_of(entry, lambda moment: moment)
