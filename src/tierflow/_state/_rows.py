"""What a row of the SQL stores becomes, and what a ledger entry is written as.

The SQLite and PostgreSQL stores select the same columns in the same order (the ledger queries
`entry`, `entries`, `census_running`, … and `history`, in `sql/<dialect>/queries.sql`) and bind
the same named parameters (`claim_run`, `finish_run`, `requeue_run`). They differ only in how a
time is kept: SQLite keeps microseconds since the epoch (`from_micros` / `to_micros`),
PostgreSQL a timestamptz (read back in UTC, written as is); a range's window length likewise
(microseconds, or an interval). Each store passes its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from tierflow._state._base import Attempt, Census, LedgerEntry, LedgerRange, Outcome, RunStatus
from tierflow._state._holder import Holder
from tierflow._state._rules import split_span
from tierflow._windows import Window

__all__ = [
    "Moment",
    "Stored",
    "attempt_of",
    "census_of",
    "entries_of",
    "entry_of",
    "outcome_params",
    "params_of",
    "range_of",
    "range_params",
    "settled_attempts",
]

#: How a store's time column is read: the stored value as a UTC datetime.
Moment = Callable[[Any], datetime]
#: How a store's time column is written: a datetime as the value it stores.
Stored = Callable[[datetime], object]


def _maybe(moment: Moment, value: Any) -> datetime | None:
    return None if value is None else moment(value)


def entry_of(job: str, row: Sequence[Any], moment: Moment) -> LedgerEntry:
    """A ledger entry from a row of the ledger queries' columns, `window_start` to
    `holder_started`."""
    (start, stop, status, attempts, run_id, started, finished_at, lease, error) = row[:9]
    fingerprint, parked, attempt_base, host, pid, process_start = row[9:]
    return LedgerEntry(
        job,
        Window(moment(start), moment(stop)),
        RunStatus(status),
        attempts,
        run_id,
        _maybe(moment, started),
        _maybe(moment, finished_at),
        _maybe(moment, lease),
        error,
        fingerprint,
        bool(parked),
        attempt_base,
        Holder(host, pid, process_start or "") if host is not None else None,
    )


def entries_of(job: str, rows: Iterable[Sequence[Any]], moment: Moment) -> list[LedgerEntry]:
    """The ledger entries of rows of the ledger queries' columns."""
    return [entry_of(job, row, moment) for row in rows]


def census_of(
    job: str,
    counts: Iterable[Sequence[Any]],
    running: Iterable[Sequence[Any]],
    moment: Moment,
    ranges: Iterable[LedgerRange] = (),
    span: tuple[datetime, datetime] | None = None,
) -> Census:
    """A census from the rows of `census_counts` (status, parked, count) and `census_running`,
    and the windows of `ranges` inside `span` (since, until)."""
    found = {(RunStatus(status), bool(parked)): int(n) for status, parked, n in counts}
    for piece in ranges:
        assert span is not None
        if n := piece.within(*span):
            key = (piece.status, False)
            found[key] = found.get(key, 0) + n
    return Census(found, tuple(entries_of(job, running, moment)))


def range_of(
    job: str, row: Sequence[Any], moment: Moment, length: Callable[[Any], timedelta]
) -> LedgerRange:
    """A ledger range from a row of the `ranges_*` queries' columns."""
    start, stop, window_length, status, attempts, attempt_base, error, started, finished = row
    return LedgerRange(
        job,
        moment(start),
        moment(stop),
        length(window_length),
        RunStatus(status),
        attempts,
        attempt_base,
        error,
        _maybe(moment, started),
        _maybe(moment, finished),
    )


def range_params(
    piece: LedgerRange, stored: Stored, length: Callable[[timedelta], object]
) -> dict[str, object]:
    """A ledger range as the named parameters of `insert_range`."""
    return {
        "job": piece.job,
        "window_start": stored(piece.start),
        "window_stop": stored(piece.stop),
        "window_length": length(piece.length),
        "status": piece.status.value,
        "attempts": piece.attempts,
        "attempt_base": piece.attempt_base,
        "error": piece.error,
        "started_at": None if piece.started_at is None else stored(piece.started_at),
        "finished_at": None if piece.finished_at is None else stored(piece.finished_at),
    }


def outcome_params(outcome: Outcome | None, stored: Stored) -> dict[str, object]:
    """What `settle_attempt` writes of how an attempt ended (None: it still runs)."""
    if outcome is None:
        return dict.fromkeys(
            ("finished_at", "duration_s", "query_hash", "template_version", "error"), None
        ) | {"status": RunStatus.RUNNING.value}
    return {
        "status": outcome.status.value,
        "finished_at": stored(outcome.finished_at),
        "duration_s": outcome.duration_s,
        "query_hash": outcome.query_hash,
        "template_version": outcome.template_version,
        "error": outcome.error,
    }


def attempt_of(job: str, row: Sequence[Any], moment: Moment) -> Attempt:
    """An attempt from a row of the `history` query's columns."""
    (start, stop, attempt, run_id, status, started, finished_at) = row[:7]
    duration, query_hash, version, error, reason, windows = row[7:]
    return Attempt(
        job,
        Window(moment(start), moment(stop)),
        attempt,
        run_id,
        RunStatus(status),
        moment(started),
        _maybe(moment, finished_at),
        duration,
        query_hash,
        version,
        error,
        reason,
        windows,
    )


def params_of(entry: LedgerEntry, stored: Stored) -> dict[str, object]:
    """A ledger entry as the named parameters of `claim_run`, `finish_run`, `requeue_run` (and
    PostgreSQL's `claim_new_run`)."""
    holder = entry.holder

    def maybe(moment: datetime | None) -> object:
        return None if moment is None else stored(moment)

    return {
        "job": entry.job,
        "window_start": stored(entry.window.start),
        "window_stop": stored(entry.window.stop),
        "status": entry.status.value,
        "attempts": entry.attempts,
        "run_id": entry.run_id,
        "started_at": maybe(entry.started_at),
        "finished_at": maybe(entry.finished_at),
        "lease_expires_at": maybe(entry.lease_expires_at),
        "error": entry.error,
        "fingerprint": entry.fingerprint,
        "parked": entry.parked,
        "attempt_base": entry.attempt_base,
        "holder_host": holder.host if holder else None,
        "holder_pid": holder.pid if holder else None,
        "holder_started": holder.started if holder else None,
    }


def settled_attempts(
    rows: Iterable[Sequence[Any]],
    starts: set[datetime],
    ended: dict[str, object],
    moment: Moment,
    stored: Stored,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """A run's `running_attempts` rows (id, start, stop, windows) given the ending `ended` at
    the windows starting at `starts`: the parameters of `settle_attempt` (each touched row's
    first part that ended, keeping the row's id) and of `split_attempt` (its other parts, rows of
    their own: the windows that ended, or those still running as the row still is)."""
    running = outcome_params(None, stored)
    kept: list[dict[str, object]] = []
    split: list[dict[str, object]] = []
    for row_id, start, stop, count in rows:
        parts = split_span(Window(moment(start), moment(stop)), count, starts)
        if not any(inside for _, _, inside in parts):
            continue
        first = next(index for index, (_, _, inside) in enumerate(parts) if inside)
        for index, (part, windows, inside) in enumerate(parts):
            params = {
                "id": row_id,
                "window_start": stored(part.start),
                "window_stop": stored(part.stop),
                "windows": windows,
            } | (ended if inside else running)
            (kept if index == first else split).append(params)
    return kept, split
