"""The default state store: one SQLite file, for the tierflow workers of one host.

sqlite3 blocks: waiting for another process's write lock takes up to the 30 s busy timeout. So
every call runs on the store's own thread (one per store, which also owns the connection) and
the event loop only awaits it: lease heartbeats keep beating while a claim waits for the lock.
The statements are kept by name in `sql/sqlite/queries.sql`; what a row becomes is decided by
`tierflow._state._rules`, as in every store.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from tierflow._errors import StateError
from tierflow._state import _rules as rules
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
from tierflow._state._rows import attempt_of, census_of, entries_of, entry_of, params_of
from tierflow._state._sql import queries, shipped_migrations
from tierflow._state._worker import Worker, worker_of, worker_params
from tierflow._windows import Window, from_micros, to_micros

__all__ = ["SqliteStateStore", "migrations"]

T = TypeVar("T")
Q = queries("sqlite")
#: Beyond any window start: the open end of a range.
_NEVER = 2**62


def migrations() -> list[tuple[int, str]]:
    """The schema migrations shipped with this version, as (version, SQL), in order."""
    return shipped_migrations("sqlite", "SQLite")


class SqliteStateStore(StateStore):
    """State in a SQLite file (WAL mode), shared safely by the processes of one host: every claim
    and finish is one `BEGIN IMMEDIATE` transaction. Opening (connecting, migrating) happens in
    the constructor, on the store's thread, and waits for it: open a store before the event
    loop runs, or with `await asyncio.to_thread(SqliteStateStore, path)`."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tierflow-sqlite")
        self._db: sqlite3.Connection | None = None
        self._closed = False
        try:
            #: The schema version of the file, once migrated.
            self.schema_version: int = self._thread.submit(self._open).result()
        except BaseException:
            self._thread.shutdown(wait=False)
            raise

    # -- on the store's thread ------------------------------------------------------------------

    def _open(self) -> int:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:  # e.g. its directory is missing: nothing to close
            raise StateError(f"state store {self.path}: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            self._db = db
            return self._migrate()
        except sqlite3.Error as exc:
            self._db = None
            db.close()
            raise StateError(f"state store {self.path}: {exc}") from exc
        except StateError:
            self._db = None
            db.close()
            raise

    def _migrate(self) -> int:
        with self._transaction() as db:
            db.execute(Q["create_schema_migrations"])
            have = int(db.execute(Q["schema_version"]).fetchone()[0])
            shipped = migrations()
            if have > len(shipped):
                raise StateError(
                    f"state store {self.path} has schema version {have}, newer than this "
                    f"tierflow knows ({len(shipped)}); upgrade tierflow"
                )
            for version, sql in shipped[have:]:
                for statement in _statements(sql):
                    db.execute(statement)
                db.execute(Q["record_migration"], (version,))
            return int(db.execute(Q["schema_version"]).fetchone()[0])

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StateError(f"state store {self.path} is closed")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"state store {self.path}: {exc}") from exc

    def _in_transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._transaction() as db:
            return work(db)

    def _fetch(self, name: str, args: Sequence[object]) -> list[Any]:
        try:
            return self._connection().execute(Q[name], args).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"state store {self.path}: {exc}") from exc

    # -- from the event loop --------------------------------------------------------------------

    async def _call(self, work: Callable[..., T], *args: Any) -> T:
        """Run `work(*args)` on the store's thread; the loop goes on meanwhile."""
        if self._closed:
            raise StateError(f"state store {self.path} is closed")
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, *args)

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one `BEGIN IMMEDIATE` transaction on the store's thread."""
        return await self._call(self._in_transaction, work)

    async def _read(self, name: str, *args: object) -> list[Any]:
        """The rows of query `name`, read on the store's thread."""
        return await self._call(self._fetch, name, args)

    async def aclose(self) -> None:
        if self._closed:
            return
        await self._call(self._close_db)
        self._closed = True
        self._thread.shutdown(wait=False)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def ensure_job(self, job: str, origin: datetime) -> datetime:
        def work(db: sqlite3.Connection) -> datetime:
            db.execute(Q["ensure_job"], (job, to_micros(origin)))
            (mark,) = db.execute(Q["watermark"], (job,)).fetchone()
            return from_micros(mark)

        return await self._write(work)

    async def watermark(self, job: str) -> datetime | None:
        rows = await self._read("watermark", job)
        return from_micros(int(rows[0][0])) if rows else None

    async def entries(
        self, job: str, since: datetime, until: datetime | None = None
    ) -> list[LedgerEntry]:
        until_micros = to_micros(until) if until else _NEVER
        rows = await self._read("entries", job, to_micros(since), until_micros)
        return entries_of(job, rows, from_micros)

    async def census(self, job: str, since: datetime, until: datetime) -> Census:
        span = (job, to_micros(since), to_micros(until))

        def work() -> Census:
            counts = self._fetch("census_counts", span)
            running = self._fetch("census_running", span)
            return census_of(job, counts, running, from_micros)

        return await self._call(work)

    async def _claim(self, request: ClaimRequest) -> Claim:
        job, started_at = request.job, request.started_at
        started = to_micros(started_at)

        def take(db: sqlite3.Connection, window: Window, entry: LedgerEntry | None) -> None:
            key = (job, to_micros(window.start))
            if entry is not None and entry.status is RunStatus.RUNNING:
                db.execute(
                    Q["abandon_attempt"], (started, rules.abandon_reason(entry, started_at), *key)
                )
            earlier = entry.attempts if entry else db.execute(Q["last_attempt"], key).fetchone()[0]
            new = rules.claimed(entry, window, request, earlier)
            db.execute(Q["claim_run"], _row(new))
            db.execute(
                Q["insert_attempt"],
                (
                    *key,
                    to_micros(window.stop),
                    new.attempts,
                    request.run_id,
                    started,
                    request.reason,
                ),
            )

        # BEGIN IMMEDIATE: the rows are judged and taken under the write lock, so two processes
        # claiming the same window cannot both see it due.
        def work(db: sqlite3.Connection) -> Claim:
            return rules.judge_claim(
                request,
                lambda window: _read_entry(db, job, window.start),
                lambda window, entry: take(db, window, entry),
            )

        return await self._write(work)

    async def renew(
        self, job: str, windows: Sequence[Window], *, run_id: str, lease_expires_at: datetime
    ) -> bool:
        lease = to_micros(lease_expires_at)

        def work(db: sqlite3.Connection) -> bool:
            if not all(rules.holds(_read_entry(db, job, w.start), run_id) for w in windows):
                return False
            db.executemany(
                Q["renew_lease"], [(lease, job, to_micros(window.start)) for window in windows]
            )
            return True

        return await self._write(work)

    async def requeue(
        self, job: str, start: datetime | None = None, stop: datetime | None = None
    ) -> int:
        span = (job, to_micros(start) if start else -_NEVER, to_micros(stop) if stop else _NEVER)

        def work(db: sqlite3.Connection) -> int:
            parked = entries_of(job, db.execute(Q["parked_entries"], span), from_micros)
            db.executemany(Q["requeue_run"], [_row(rules.requeued(entry)) for entry in parked])
            return len(parked)

        return await self._write(work)

    async def count_attempts(self, job: str, *, reason: str) -> int:
        rows = await self._read("count_attempts", job, reason)
        return int(rows[0][0])

    async def finish(
        self,
        job: str,
        windows: Sequence[Window],
        *,
        run_id: str,
        outcome: Outcome,
        park_after: int | None = None,
    ) -> datetime:
        done = {
            "duration_s": outcome.duration_s,
            "query_hash": outcome.query_hash,
            "template_version": outcome.template_version,
        }

        def work(db: sqlite3.Connection) -> datetime:
            row = db.execute(Q["watermark"], (job,)).fetchone()
            if row is None:
                raise StateError(f"job {job} is not registered in the state store")
            for window in windows:
                entry = _read_entry(db, job, window.start)
                if entry is None or not rules.holds(entry, run_id):
                    raise StateError(f"job {job}: run {run_id} no longer holds window {window}")
                new = rules.finished(entry, outcome, park_after)
                db.execute(Q["finish_run"], _row(new) | done)
                db.execute(
                    Q["finish_attempt"],
                    (
                        outcome.status.value,
                        to_micros(outcome.finished_at),
                        outcome.duration_s,
                        outcome.query_hash,
                        outcome.template_version,
                        outcome.error,
                        job,
                        to_micros(window.start),
                        entry.attempts,
                    ),
                )

            def done_stop(start: datetime) -> datetime | None:
                entry = _read_entry(db, job, start)
                return entry.window.stop if entry and entry.status.done else None

            undone = None if outcome.status.done else min(window.start for window in windows)
            mark = rules.advance(from_micros(row[0]), undone, done_stop)
            db.execute(Q["set_watermark"], (to_micros(mark), job))
            return mark

        return await self._write(work)

    async def history(self, job: str, *, limit: int = 50) -> list[Attempt]:
        rows = await self._read("history", job, limit)
        return [attempt_of(job, row, from_micros) for row in rows]

    async def jobs(self) -> list[str]:
        return [str(row[0]) for row in await self._read("jobs")]

    async def definition(self, job: str) -> JobDefinition | None:
        rows = await self._read("definition", job)
        return JobDefinition(str(rows[0][0])) if rows else None

    async def record_definition(self, job: str, definition: JobDefinition) -> None:
        await self._write(lambda db: _record(db, job, definition))

    async def reset(
        self,
        job: str,
        definition: JobDefinition,
        *,
        since: datetime | None,
        origin: datetime,
    ) -> int:
        def work(db: sqlite3.Connection) -> int:
            start = to_micros(since) if since is not None else -_NEVER
            forgotten = db.execute(Q["forget_runs"], (job, start)).rowcount
            row = db.execute(Q["watermark"], (job,)).fetchone()
            if row is not None:
                mark = rules.reset_watermark(from_micros(row[0]), since, origin)
                db.execute(Q["set_watermark"], (to_micros(mark), job))
            _record(db, job, definition)
            return int(forgotten)

        return await self._write(work)

    # -- workers -------------------------------------------------------------------------------

    async def beat(self, worker: Worker, *, forget_before: datetime | None = None) -> None:
        params = worker_params(worker, to_micros, json.dumps(list(worker.jobs)))

        def work(db: sqlite3.Connection) -> None:
            db.execute(Q["beat"], params)
            if forget_before is not None:
                db.execute(Q["forget_workers"], (to_micros(forget_before),))

        await self._write(work)

    async def workers(self, since: datetime) -> list[Worker]:
        rows = await self._read("workers", to_micros(since))
        return [worker_of(row, from_micros, json.loads(row[7])) for row in rows]


def _read_entry(db: sqlite3.Connection, job: str, start: datetime) -> LedgerEntry | None:
    row = db.execute(Q["entry"], (job, to_micros(start))).fetchone()
    return entry_of(job, row, from_micros) if row else None


def _row(entry: LedgerEntry) -> dict[str, object]:
    """A ledger entry as named parameters; a time parameter is microseconds since the epoch."""
    return params_of(entry, to_micros)


def _record(db: sqlite3.Connection, job: str, definition: JobDefinition) -> None:
    db.execute(Q["record_definition"], (job, definition.digest, definition.body))


def _statements(sql: str) -> list[str]:
    """Split a migration script into statements (ours hold no ';' inside literals)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
