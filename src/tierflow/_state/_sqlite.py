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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from tierflow._errors import StateError
from tierflow._state import _rules as rules
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
    entry_of,
    outcome_params,
    params_of,
    range_of,
    range_params,
    settled_attempts,
)
from tierflow._state._sql import queries, shipped_migrations
from tierflow._state._worker import Worker, worker_of, worker_params
from tierflow._windows import Window, from_micros, to_micros

__all__ = ["SqliteStateStore", "migrations"]

T = TypeVar("T")
Q = queries("sqlite")
#: Beyond any window start: the open end of a range.
_NEVER = 2**62
_MICRO = timedelta(microseconds=1)
#: Done windows (and ranges) read per query while the watermark advances.
_ADVANCE_BATCH = 1000


def migrations() -> list[tuple[int, str]]:
    """The schema migrations shipped with this version, as (version, SQL), in order."""
    return shipped_migrations("sqlite", "SQLite")


class SqliteStateStore(StateStore):
    """State in a SQLite file (WAL mode), shared safely by the processes of one host: every claim
    and finish is one `BEGIN IMMEDIATE` transaction. Opening (connecting, migrating) happens in
    the constructor, on the store's thread, and waits for it: open a store before the event
    loop runs, or with `await asyncio.to_thread(SqliteStateStore, path)`."""

    def __init__(
        self, path: Path | str, *, keep_history: timedelta | None = DEFAULT_KEEP_HISTORY
    ) -> None:
        self.path = str(path)
        self.keep_history = keep_history
        self._pruned: dict[str, datetime] = {}  # when each job's history was last pruned
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
        span = (job, to_micros(since), to_micros(until) if until else _NEVER)

        def work() -> list[LedgerEntry]:
            found = entries_of(job, self._fetch("entries", span), from_micros)
            ranges = [_range(job, row) for row in self._fetch("ranges_overlapping", span)]
            if not ranges:  # the common case: asked from the watermark on
                return found
            found += [entry for piece in ranges for entry in piece.entries(since, until)]
            return sorted(found, key=lambda entry: entry.window.start)

        return await self._call(work)

    async def census(self, job: str, since: datetime, until: datetime) -> Census:
        span = (job, to_micros(since), to_micros(until))

        def work() -> Census:
            counts = self._fetch("census_counts", span)
            running = self._fetch("census_running", span)
            ranges = [_range(job, row) for row in self._fetch("ranges_overlapping", span)]
            return census_of(job, counts, running, from_micros, ranges, (since, until))

        return await self._call(work)

    async def _claim(self, request: ClaimRequest) -> Claim:
        job, windows, started_at = request.job, request.windows, request.started_at
        if not windows:
            return Claim()
        span = (
            job,
            to_micros(min(w.start for w in windows)),
            to_micros(max(w.stop for w in windows)),
        )

        # BEGIN IMMEDIATE: the rows are judged and taken under the write lock, so two processes
        # claiming the same window cannot both see it due.
        def work(db: sqlite3.Connection) -> Claim:
            rows = {e.window.start: e for e in _entries(db, "entries", span)}
            ranges = [_range(job, row) for row in db.execute(Q["ranges_overlapping"], span)]

            def entry_of(window: Window) -> LedgerEntry | None:
                return rows.get(window.start) or rules.range_entry(ranges, window.start)

            fresh = [w.start for w in windows if entry_of(w) is None]
            earlier = _last_attempts(db, span, fresh)
            taken: list[LedgerEntry] = []
            over: dict[str, list[LedgerEntry]] = {}  # windows taken over, by the run they leave

            def take(window: Window, entry: LedgerEntry | None) -> None:
                if entry is not None and entry.status is RunStatus.RUNNING:
                    over.setdefault(entry.run_id or "", []).append(entry)
                new = rules.claimed(entry, window, request, earlier.get(window.start, 0))
                taken.append(new)

            claim = rules.judge_claim(request, entry_of, take)
            for run_id, left in over.items():
                starts = {entry.window.start for entry in left}
                _settle(db, job, run_id, starts, _abandoned(left[0], started_at))
            _carve(db, job, ranges, {entry.window.start for entry in taken})
            db.executemany(Q["claim_run"], [_row(entry) for entry in taken])
            db.executemany(
                Q["insert_attempt"],
                [
                    (
                        job,
                        to_micros(run.start),
                        to_micros(run.stop),
                        count,
                        attempt,
                        request.run_id,
                        to_micros(started_at),
                        request.reason,
                    )
                    for run, count, attempt in rules.spans(taken)
                ],
            )
            return claim

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
        compact_before: datetime | None = None,
    ) -> datetime:
        done = {
            "duration_s": outcome.duration_s,
            "query_hash": outcome.query_hash,
            "template_version": outcome.template_version,
        }
        starts = {window.start for window in windows}
        prune = self.keep_history is not None and rules.prune_due(
            self._pruned.get(job), outcome.finished_at
        )

        def work(db: sqlite3.Connection) -> datetime:
            row = db.execute(Q["watermark"], (job,)).fetchone()
            if row is None:
                raise StateError(f"job {job} is not registered in the state store")
            if not windows:
                return from_micros(row[0])
            span = (
                job,
                to_micros(min(starts)),
                to_micros(max(w.stop for w in windows)),
            )
            held = {e.window.start: e for e in _entries(db, "entries", span)}
            for window in windows:
                if not rules.holds(held.get(window.start), run_id):
                    raise StateError(f"job {job}: run {run_id} no longer holds window {window}")
            new = [rules.finished(held[window.start], outcome, park_after) for window in windows]
            db.executemany(Q["finish_run"], [_row(entry) | done for entry in new])
            _settle(db, job, run_id, starts, outcome_params(outcome, to_micros))
            undone = None if outcome.status.done else min(starts)
            mark = _advanced(db, job, from_micros(row[0]), undone)
            db.execute(Q["set_watermark"], (to_micros(mark), job))
            if (limit := rules.compact_limit(mark, compact_before)) is not None:
                _fold(db, job, limit)
            if prune:
                assert self.keep_history is not None
                cutoff = to_micros(outcome.finished_at - self.keep_history)
                db.execute(Q["prune_history"], {"job": job, "cutoff": cutoff})
            return mark

        mark = await self._write(work)
        if prune:
            self._pruned[job] = outcome.finished_at
        return mark

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
            ranges = [
                _range(job, row)
                for row in db.execute(Q["ranges_overlapping"], (job, start, _NEVER))
            ]
            kept: list[LedgerRange] = []
            for piece in ranges:
                left, count = rules.forget_from(piece, since)
                forgotten += count
                kept += [left] if left is not None else []
            _replace_ranges(db, ranges, kept)
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


def _entries(db: sqlite3.Connection, query: str, args: Sequence[object]) -> list[LedgerEntry]:
    return entries_of(str(args[0]), db.execute(Q[query], args), from_micros)


def _range(job: str, row: Sequence[Any]) -> LedgerRange:
    return range_of(job, row, from_micros, _length)


def _length(micros: int) -> timedelta:
    return timedelta(microseconds=micros)


def _replace_ranges(
    db: sqlite3.Connection, old: Sequence[LedgerRange], new: Sequence[LedgerRange]
) -> None:
    """Write `new` in place of `old` (unless they are the same)."""
    if list(old) == list(new):
        return
    db.executemany(Q["delete_range"], [(piece.job, to_micros(piece.start)) for piece in old])
    db.executemany(
        Q["insert_range"],
        [range_params(piece, to_micros, lambda length: length // _MICRO) for piece in new],
    )


def _carve(
    db: sqlite3.Connection, job: str, ranges: Sequence[LedgerRange], starts: set[datetime]
) -> None:
    """Take the windows starting at `starts` out of the ranges holding them (a claim makes
    them rows of their own)."""
    _replace_ranges(db, ranges, [left for piece in ranges for left in rules.carve(piece, starts)])


def _fold(db: sqlite3.Connection, job: str, limit: datetime) -> None:
    """Fold the done windows stopping at or before `limit` into ledger ranges."""
    bound = (job, to_micros(limit), to_micros(limit))
    done = _entries(db, "fold_candidates", bound)
    if not done:
        return
    touching = (job, to_micros(done[0].window.start), to_micros(done[-1].window.stop))
    ranges = [_range(job, row) for row in db.execute(Q["ranges_touching"], touching)]
    _replace_ranges(db, ranges, rules.fold(ranges, done))
    db.execute(Q["delete_folded"], bound)


def _advanced(
    db: sqlite3.Connection, job: str, mark: datetime, undone: datetime | None
) -> datetime:
    """The watermark `_rules.advance` gives, reading the done windows and ranges ahead a batch at
    a time."""
    mark = rules.advance(mark, undone, lambda _: None)  # back to a window that did not succeed
    while True:
        ahead = (job, to_micros(mark), _ADVANCE_BATCH)
        rows = db.execute(Q["done_from"], ahead).fetchall()
        ranges = db.execute(Q["ranges_from"], ahead).fetchall()
        done = {from_micros(start): from_micros(stop) for start, stop in [*rows, *ranges]}
        moved = rules.advance(mark, None, done.get)
        if moved == mark or max(len(rows), len(ranges)) < _ADVANCE_BATCH:
            return moved
        mark = moved


def _last_attempts(
    db: sqlite3.Connection, span: tuple[str, int, int], starts: list[datetime]
) -> dict[datetime, int]:
    if not starts:
        return {}
    rows = [
        (Window(from_micros(start), from_micros(stop)), count, attempt)
        for start, stop, count, attempt in db.execute(Q["history_overlapping"], span)
    ]
    return rules.last_attempts(rows, starts)


def _abandoned(entry: LedgerEntry, at: datetime) -> dict[str, object]:
    """How the attempt a claim at `at` takes over from `entry` ended, as `settle_attempt`'s
    parameters."""
    return outcome_params(None, to_micros) | {
        "status": RunStatus.ABANDONED.value,
        "finished_at": to_micros(at),
        "error": rules.abandon_reason(entry, at),
    }


def _settle(
    db: sqlite3.Connection,
    job: str,
    run_id: str,
    starts: set[datetime],
    ended: dict[str, object],
) -> None:
    """Give the attempts `run_id` is making at the windows starting at `starts` the ending
    `ended` (`settle_attempt`'s parameters), splitting history rows that hold other windows:
    the first part ended keeps the row's id, the other parts are rows of their own."""
    rows = db.execute(Q["running_attempts"], (run_id, job)).fetchall()
    kept, split = settled_attempts(rows, starts, ended, from_micros, to_micros)
    db.executemany(Q["split_attempt"], split)  # copies of the rows as they still are
    db.executemany(Q["settle_attempt"], kept)


def _row(entry: LedgerEntry) -> dict[str, object]:
    """A ledger entry as named parameters; a time parameter is microseconds since the epoch."""
    return params_of(entry, to_micros)


def _record(db: sqlite3.Connection, job: str, definition: JobDefinition) -> None:
    db.execute(Q["record_definition"], (job, definition.digest, definition.body))


def _statements(sql: str) -> list[str]:
    """Split a migration script into statements (ours hold no ';' inside literals)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
