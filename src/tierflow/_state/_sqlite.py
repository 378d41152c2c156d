"""The default state store: one SQLite file, for a single tierflow worker."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from tierflow._errors import StateError
from tierflow._state._base import (
    Attempt,
    Census,
    Claim,
    JobDefinition,
    LedgerEntry,
    Outcome,
    RunStatus,
    StateStore,
    _distinct,
)
from tierflow._state._holder import Holder, holder_gone
from tierflow._state._rules import Refusal, abandon_reason, advance, refusal
from tierflow._windows import Window, from_micros, to_micros

__all__ = ["SqliteStateStore", "migrations"]


def migrations() -> list[tuple[int, str]]:
    """The schema migrations shipped with this version, as (version, SQL), in order."""
    folder = resources.files("tierflow._state") / "migrations" / "sqlite"
    found = sorted(
        (int(item.name.split("_", 1)[0]), item.read_text(encoding="utf-8"))
        for item in folder.iterdir()
        if item.name.endswith(".sql")
    )
    if [version for version, _ in found] != list(range(1, len(found) + 1)):
        raise StateError("the shipped SQLite migrations are not numbered 1, 2, 3, …")
    return found


def _micros(moment: datetime | None) -> int | None:
    return None if moment is None else to_micros(moment)


def _moment(micros: int | None) -> datetime | None:
    return None if micros is None else from_micros(micros)


class SqliteStateStore(StateStore):
    """State in a SQLite file (WAL mode), shared safely by the processes of one host: every claim
    and finish is one `BEGIN IMMEDIATE` transaction."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
        except sqlite3.Error as exc:  # e.g. its directory is missing: nothing to close
            raise StateError(f"state store {self.path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise StateError(f"state store {self.path}: {exc}") from exc
        except StateError:
            self._db.close()
            raise

    def _migrate(self) -> None:
        with self._transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            )
            current = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            have = int(current.fetchone()[0])
            shipped = migrations()
            if have > len(shipped):
                raise StateError(
                    f"state store {self.path} has schema version {have}, newer than this "
                    f"tierflow knows ({len(shipped)}); upgrade tierflow"
                )
            for version, sql in shipped[have:]:
                for statement in _statements(sql):
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))

    @property
    def schema_version(self) -> int:
        row = self._db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0])

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StateError(f"state store {self.path}: {exc}") from exc

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StateError(f"state store {self.path}: {exc}") from exc

    def ensure_job(self, job: str, origin: datetime) -> datetime:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (job, watermark) VALUES (?, ?) ON CONFLICT (job) DO NOTHING",
                (job, to_micros(origin)),
            )
            (mark,) = db.execute("SELECT watermark FROM jobs WHERE job = ?", (job,)).fetchone()
        return from_micros(mark)

    def watermark(self, job: str) -> datetime | None:
        rows = self._read("SELECT watermark FROM jobs WHERE job = ?", (job,))
        return from_micros(int(rows[0][0])) if rows else None

    def entries(
        self, job: str, since: datetime, until: datetime | None = None
    ) -> list[LedgerEntry]:
        rows = self._read(
            f"SELECT {_ENTRY} FROM runs WHERE job = ? AND window_start >= ? AND window_start < ?"
            " ORDER BY window_start",
            (job, to_micros(since), to_micros(until) if until else 2**62),
        )
        return [_entry(job, row) for row in rows]

    def census(self, job: str, since: datetime, until: datetime) -> Census:
        span = (job, to_micros(since), to_micros(until))
        where = "job = ? AND window_start >= ? AND window_stop <= ?"
        counts = self._read(
            f"SELECT status, parked, COUNT(*) FROM runs WHERE {where} GROUP BY status, parked", span
        )
        running = self._read(
            f"SELECT {_ENTRY} FROM runs WHERE {where} AND status = 'running' ORDER BY window_start",
            span,
        )
        return Census(
            {(RunStatus(status), bool(parked)): n for status, parked, n in counts},
            tuple(_entry(job, row) for row in running),
        )

    def claim(
        self,
        job: str,
        windows: Sequence[Window],
        *,
        run_id: str,
        started_at: datetime,
        lease_expires_at: datetime,
        reason: str = "scheduled",
        holder: Holder | None = None,
        force: bool = False,
        gone: Callable[[Holder], bool] = holder_gone,
    ) -> Claim:
        _distinct(windows)
        started, lease = to_micros(started_at), to_micros(lease_expires_at)
        host, pid, process_start = (
            (holder.host, holder.pid, holder.started) if holder else (None, None, None)
        )
        taken: list[Window] = []
        held: list[LedgerEntry] = []
        settled: list[Window] = []
        # BEGIN IMMEDIATE: the rows are judged and taken under the write lock, so two processes
        # claiming the same window cannot both see it due.
        with self._transaction() as db:
            for window in windows:
                row = db.execute(
                    f"SELECT {_ENTRY} FROM runs WHERE job = ? AND window_start = ?",
                    (job, to_micros(window.start)),
                ).fetchone()
                entry = _entry(job, row) if row else None
                why = refusal(entry, run_id=run_id, at=started_at, force=force, gone=gone)
                if why is Refusal.HELD:
                    assert entry is not None
                    held.append(entry)
                    continue
                if why is Refusal.SETTLED:
                    settled.append(window)
                    continue
                taken.append(window)
                if entry is not None and entry.status is RunStatus.RUNNING:
                    db.execute(
                        "UPDATE attempts SET status = 'abandoned', finished_at = ?, error = ?"
                        " WHERE job = ? AND window_start = ? AND status = 'running'",
                        (started, abandon_reason(entry, started_at), job, to_micros(window.start)),
                    )
                earlier = 0
                if entry is None:
                    # A window forgotten by `reset` keeps its history: number on from it.
                    (earlier,) = db.execute(
                        "SELECT COALESCE(MAX(attempt), 0) FROM attempts"
                        " WHERE job = ? AND window_start = ?",
                        (job, to_micros(window.start)),
                    ).fetchone()
                (attempt,) = db.execute(
                    "INSERT INTO runs (job, window_start, window_stop, status, attempts, run_id,"
                    " started_at, lease_expires_at, attempt_base, holder_host, holder_pid,"
                    " holder_started) VALUES (?, ?, ?, 'running', ? + 1, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (job, window_start) DO UPDATE SET"
                    " window_stop = excluded.window_stop, status = 'running',"
                    " attempts = runs.attempts + 1, run_id = excluded.run_id,"
                    " started_at = excluded.started_at, finished_at = NULL, parked = 0,"
                    " lease_expires_at = excluded.lease_expires_at, duration_s = NULL,"
                    " error = NULL, holder_host = excluded.holder_host,"
                    " holder_pid = excluded.holder_pid, holder_started = excluded.holder_started"
                    " RETURNING attempts",
                    (
                        job,
                        to_micros(window.start),
                        to_micros(window.stop),
                        earlier,
                        run_id,
                        started,
                        lease,
                        earlier,
                        host,
                        pid,
                        process_start,
                    ),
                ).fetchone()
                db.execute(
                    "INSERT INTO attempts (job, window_start, window_stop, attempt, run_id,"
                    " status, started_at, reason) VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                    (
                        job,
                        to_micros(window.start),
                        to_micros(window.stop),
                        attempt,
                        run_id,
                        started,
                        reason,
                    ),
                )
        return Claim(tuple(taken), tuple(held), tuple(settled))

    def renew(
        self, job: str, windows: Sequence[Window], *, run_id: str, lease_expires_at: datetime
    ) -> bool:
        lease = to_micros(lease_expires_at)
        with self._transaction() as db:
            held = [
                db.execute(
                    "SELECT 1 FROM runs WHERE job = ? AND window_start = ? AND run_id = ?"
                    " AND status = 'running'",
                    (job, to_micros(window.start), run_id),
                ).fetchone()
                for window in windows
            ]
            if not all(held):
                return False
            db.executemany(
                "UPDATE runs SET lease_expires_at = ? WHERE job = ? AND window_start = ?",
                [(lease, job, to_micros(window.start)) for window in windows],
            )
        return True

    def requeue(self, job: str, start: datetime | None = None, stop: datetime | None = None) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE runs SET parked = 0, attempt_base = attempts, finished_at = NULL"
                " WHERE job = ? AND parked = 1 AND window_start >= ? AND window_start < ?",
                (
                    job,
                    to_micros(start) if start else -(2**62),
                    to_micros(stop) if stop else 2**62,
                ),
            )
            return cursor.rowcount

    def count_attempts(self, job: str, *, reason: str) -> int:
        rows = self._read(
            "SELECT COUNT(*) FROM attempts WHERE job = ? AND reason = ?", (job, reason)
        )
        return int(rows[0][0])

    def finish(
        self,
        job: str,
        windows: Sequence[Window],
        *,
        run_id: str,
        outcome: Outcome,
        park_after: int | None = None,
    ) -> datetime:
        finished = to_micros(outcome.finished_at)
        with self._transaction() as db:
            row = db.execute("SELECT watermark FROM jobs WHERE job = ?", (job,)).fetchone()
            if row is None:
                raise StateError(f"job {job} is not registered in the state store")
            for window in windows:
                held = db.execute(
                    "UPDATE runs SET status = ?, finished_at = ?, lease_expires_at = NULL,"
                    " duration_s = ?, query_hash = ?, template_version = ?, error = ?,"
                    " fingerprint = COALESCE(?, fingerprint),"
                    " parked = (? = 'failed' AND ? IS NOT NULL AND attempts - attempt_base >= ?)"
                    " WHERE job = ? AND window_start = ? AND run_id = ? AND status = 'running'"
                    " RETURNING attempts",
                    (
                        outcome.status.value,
                        finished,
                        outcome.duration_s,
                        outcome.query_hash,
                        outcome.template_version,
                        outcome.error,
                        outcome.fingerprints.get(window.start),
                        outcome.status.value,
                        park_after,
                        park_after,
                        job,
                        to_micros(window.start),
                        run_id,
                    ),
                ).fetchone()
                if held is None:
                    raise StateError(f"job {job}: run {run_id} no longer holds window {window}")
                db.execute(
                    "UPDATE attempts SET status = ?, finished_at = ?, duration_s = ?,"
                    " query_hash = ?, template_version = ?, error = ?"
                    " WHERE job = ? AND window_start = ? AND attempt = ?",
                    (
                        outcome.status.value,
                        finished,
                        outcome.duration_s,
                        outcome.query_hash,
                        outcome.template_version,
                        outcome.error,
                        job,
                        to_micros(window.start),
                        held[0],
                    ),
                )

            def done_stop(start: datetime) -> datetime | None:
                step = db.execute(
                    "SELECT window_stop, status FROM runs WHERE job = ? AND window_start = ?",
                    (job, to_micros(start)),
                ).fetchone()
                return from_micros(step[0]) if step and RunStatus(step[1]).done else None

            undone = None if outcome.status.done else min(window.start for window in windows)
            mark = advance(from_micros(row[0]), undone, done_stop)
            db.execute("UPDATE jobs SET watermark = ? WHERE job = ?", (to_micros(mark), job))
        return mark

    def history(self, job: str, *, limit: int = 50) -> list[Attempt]:
        rows = self._read(
            "SELECT window_start, window_stop, attempt, run_id, status, started_at, finished_at,"
            " duration_s, query_hash, template_version, error, reason FROM attempts WHERE job = ?"
            " ORDER BY id DESC LIMIT ?",
            (job, limit),
        )
        return [
            Attempt(
                job,
                Window(from_micros(start), from_micros(stop)),
                attempt,
                run_id,
                RunStatus(status),
                from_micros(started),
                _moment(finished),
                duration,
                query_hash,
                version,
                error,
                reason,
            )
            for (
                start,
                stop,
                attempt,
                run_id,
                status,
                started,
                finished,
                duration,
                query_hash,
                version,
                error,
                reason,
            ) in rows
        ]

    def jobs(self) -> list[str]:
        return [str(row[0]) for row in self._read("SELECT job FROM jobs ORDER BY job")]

    def definition(self, job: str) -> JobDefinition | None:
        rows = self._read("SELECT body FROM job_definitions WHERE job = ?", (job,))
        return JobDefinition(str(rows[0][0])) if rows else None

    def record_definition(self, job: str, definition: JobDefinition) -> None:
        with self._transaction() as db:
            _record(db, job, definition)

    def reset(
        self,
        job: str,
        definition: JobDefinition,
        *,
        since: datetime | None,
        origin: datetime,
    ) -> int:
        start = to_micros(since) if since is not None else -(2**62)
        with self._transaction() as db:
            forgotten = db.execute(
                "DELETE FROM runs WHERE job = ? AND window_start >= ?", (job, start)
            ).rowcount
            mark = to_micros(origin) if since is None else start
            db.execute(
                "UPDATE jobs SET watermark = ? WHERE job = ? AND (? OR watermark > ?)",
                (mark, job, since is None, mark),
            )
            _record(db, job, definition)
        return int(forgotten)

    def close(self) -> None:
        with self._lock:
            self._db.close()


_ENTRY = (
    "window_start, window_stop, status, attempts, run_id, started_at, finished_at,"
    " lease_expires_at, error, fingerprint, parked, attempt_base, holder_host, holder_pid,"
    " holder_started"
)


def _entry(job: str, row: Sequence[Any]) -> LedgerEntry:
    """A ledger entry from a row of `SELECT {_ENTRY}`."""
    (start, stop, status, attempts, run_id, started, finished, lease, error) = row[:9]
    fingerprint, parked, attempt_base, host, pid, process_start = row[9:]
    return LedgerEntry(
        job,
        Window(from_micros(start), from_micros(stop)),
        RunStatus(status),
        attempts,
        run_id,
        _moment(started),
        _moment(finished),
        _moment(lease),
        error,
        fingerprint,
        bool(parked),
        attempt_base,
        Holder(host, pid, process_start or "") if host is not None else None,
    )


def _record(db: sqlite3.Connection, job: str, definition: JobDefinition) -> None:
    db.execute(
        "INSERT INTO job_definitions (job, digest, body) VALUES (?, ?, ?)"
        " ON CONFLICT (job) DO UPDATE SET digest = excluded.digest, body = excluded.body,"
        " recorded_at = CURRENT_TIMESTAMP",
        (job, definition.digest, definition.body),
    )


def _statements(sql: str) -> list[str]:
    """Split a migration script into statements (ours hold no ';' inside literals)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
