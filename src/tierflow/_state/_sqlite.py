"""The default state store: one SQLite file, for a single tierflow worker."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from tierflow._errors import StateError
from tierflow._state._base import (
    Attempt,
    JobDefinition,
    LedgerEntry,
    Outcome,
    RunStatus,
    StateStore,
    _distinct,
)
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
    """State in a SQLite file (WAL mode). Several processes may read; one should write."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
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
            "SELECT window_start, window_stop, status, attempts, run_id, started_at,"
            " finished_at, lease_expires_at, error, fingerprint, parked, attempt_base FROM runs"
            " WHERE job = ? AND window_start >= ? AND window_start < ? ORDER BY window_start",
            (job, to_micros(since), to_micros(until) if until else 2**62),
        )
        return [
            LedgerEntry(
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
            )
            for (
                start,
                stop,
                status,
                attempts,
                run_id,
                started,
                finished,
                lease,
                error,
                fingerprint,
                parked,
                attempt_base,
            ) in rows
        ]

    def claim(
        self,
        job: str,
        windows: Sequence[Window],
        *,
        run_id: str,
        started_at: datetime,
        lease_expires_at: datetime,
        reason: str = "scheduled",
    ) -> bool:
        _distinct(windows)
        started, lease = to_micros(started_at), to_micros(lease_expires_at)
        with self._transaction() as db:
            for window in windows:
                held = db.execute(
                    "SELECT 1 FROM runs WHERE job = ? AND window_start = ? AND status = 'running'"
                    " AND run_id != ? AND lease_expires_at > ?",
                    (job, to_micros(window.start), run_id, started),
                ).fetchone()
                if held:
                    return False  # nothing written yet: the empty transaction commits
            for window in windows:
                db.execute(
                    "UPDATE attempts SET status = 'abandoned', finished_at = ?,"
                    " error = 'lease expired before the run finished'"
                    " WHERE job = ? AND window_start = ? AND status = 'running'",
                    (started, job, to_micros(window.start)),
                )
                # A window forgotten by `reset` keeps its history: number on from it.
                (earlier,) = db.execute(
                    "SELECT COALESCE(MAX(attempt), 0) FROM attempts"
                    " WHERE job = ? AND window_start = ?",
                    (job, to_micros(window.start)),
                ).fetchone()
                (attempt,) = db.execute(
                    "INSERT INTO runs (job, window_start, window_stop, status, attempts, run_id,"
                    " started_at, lease_expires_at, attempt_base)"
                    " VALUES (?, ?, ?, 'running', ? + 1, ?, ?, ?, ?)"
                    " ON CONFLICT (job, window_start) DO UPDATE SET"
                    " window_stop = excluded.window_stop, status = 'running',"
                    " attempts = runs.attempts + 1, run_id = excluded.run_id,"
                    " started_at = excluded.started_at, finished_at = NULL, parked = 0,"
                    " lease_expires_at = excluded.lease_expires_at, duration_s = NULL,"
                    " error = NULL RETURNING attempts",
                    (
                        job,
                        to_micros(window.start),
                        to_micros(window.stop),
                        earlier,
                        run_id,
                        started,
                        lease,
                        earlier,
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
        return True

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
            mark = int(row[0])
            if not outcome.status.done:
                # A window behind the watermark failed (e.g. a backfill): it is no longer true
                # that every window before the watermark succeeded.
                mark = min(mark, min(to_micros(window.start) for window in windows))
            while True:
                step = db.execute(
                    "SELECT window_stop FROM runs WHERE job = ? AND window_start = ?"
                    " AND status IN ('succeeded', 'skipped')",
                    (job, mark),
                ).fetchone()
                if step is None:
                    break
                mark = int(step[0])
            db.execute("UPDATE jobs SET watermark = ? WHERE job = ?", (mark, job))
        return from_micros(mark)

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
