"""An in-memory state store: the fake for unit tests, held to the same contract as the real ones.

Its coroutines never await: each runs to its end at once, so it is one transaction by itself.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

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
from tierflow._state._holder import Holder
from tierflow._state._worker import Worker
from tierflow._windows import Window

__all__ = ["MemoryStateStore"]


class MemoryStateStore(StateStore):
    def __init__(self, *, keep_history: timedelta | None = DEFAULT_KEEP_HISTORY) -> None:
        self.keep_history = keep_history
        self._lock = threading.Lock()  # for threads; a coroutine here never awaits
        self._watermarks: dict[str, datetime] = {}
        self._ledger: dict[tuple[str, datetime], LedgerEntry] = {}
        self._ranges: dict[str, list[LedgerRange]] = {}
        #: The history in the order rows were made (a split appends its pieces).
        self._attempts: list[Attempt] = []
        self._definitions: dict[str, JobDefinition] = {}
        self._pruned: dict[str, datetime] = {}
        self._workers: dict[Holder, Worker] = {}

    async def ensure_job(self, job: str, origin: datetime) -> datetime:
        with self._lock:
            return self._watermarks.setdefault(job, origin)

    async def watermark(self, job: str) -> datetime | None:
        return self._watermarks.get(job)

    async def entries(
        self, job: str, since: datetime, until: datetime | None = None
    ) -> list[LedgerEntry]:
        with self._lock:
            rows = [
                e
                for (j, start), e in self._ledger.items()
                if j == job and start >= since and (until is None or start < until)
            ]
            for piece in self._ranges.get(job, []):
                if piece.stop > since and (until is None or piece.start < until):
                    rows += piece.entries(since, until)
        return sorted(rows, key=lambda e: e.window.start)

    def _entry(self, job: str, start: datetime) -> LedgerEntry | None:
        entry = self._ledger.get((job, start))
        return entry if entry is not None else rules.range_entry(self._ranges.get(job, []), start)

    async def _claim(self, request: ClaimRequest) -> Claim:
        job, started_at = request.job, request.started_at
        taken: list[LedgerEntry] = []
        over: dict[str, list[LedgerEntry]] = {}  # windows taken over, by the run they leave

        def take(window: Window, entry: LedgerEntry | None) -> None:
            if entry is not None and entry.status is RunStatus.RUNNING:
                over.setdefault(entry.run_id or "", []).append(entry)
            # A window forgotten by `reset` keeps its history: number on from it.
            earlier = entry.attempts if entry else self._last_attempt(job, window.start)
            new = rules.claimed(entry, window, request, earlier)
            self._ledger[(job, window.start)] = new
            taken.append(new)

        with self._lock:
            claim = rules.judge_claim(request, lambda window: self._entry(job, window.start), take)
            for run_id, left in over.items():
                starts = {entry.window.start for entry in left}
                self._settle(job, run_id, starts, abandoned(left[0], started_at))
            self._carve(job, {entry.window.start for entry in taken})
            for span, count, attempt in rules.spans(taken):
                self._attempts.append(
                    Attempt(
                        job,
                        span,
                        attempt,
                        request.run_id,
                        RunStatus.RUNNING,
                        started_at,
                        None,
                        None,
                        None,
                        None,
                        None,
                        request.reason,
                        count,
                    )
                )
            return claim

    def _carve(self, job: str, starts: Collection[datetime]) -> None:
        ranges = self._ranges.get(job, [])
        self._ranges[job] = [left for piece in ranges for left in rules.carve(piece, starts)]

    def _last_attempt(self, job: str, start: datetime) -> int:
        rows = [(a.window, a.windows, a.attempt) for a in self._attempts if a.job == job]
        return rules.last_attempts(rows, [start])[start]

    def _settle(
        self,
        job: str,
        run_id: str,
        starts: Collection[datetime],
        done: Callable[[Attempt], Attempt],
    ) -> None:
        """Give the attempts `run_id` is making at the windows starting at `starts` the outcome
        `done` (its status, times, error …), splitting rows that hold other windows too."""
        for index, row in enumerate(list(self._attempts)):
            if row.job != job or row.run_id != run_id or row.status is not RunStatus.RUNNING:
                continue
            pieces = rules.split_span(row.window, row.windows, starts)
            if not any(inside for _, _, inside in pieces):
                continue
            made = [
                replace(done(row) if inside else row, window=span, windows=count)
                for span, count, inside in pieces
            ]
            self._attempts[index] = made[0]
            self._attempts += made[1:]

    async def renew(
        self, job: str, windows: Sequence[Window], *, run_id: str, lease_expires_at: datetime
    ) -> bool:
        with self._lock:
            entries = [self._ledger.get((job, w.start)) for w in windows]
            if not all(rules.holds(e, run_id) for e in entries):
                return False
            for entry in entries:
                assert entry is not None
                self._ledger[(job, entry.window.start)] = replace(
                    entry, lease_expires_at=lease_expires_at
                )
            return True

    async def requeue(
        self, job: str, start: datetime | None = None, stop: datetime | None = None
    ) -> int:
        with self._lock:
            chosen = [
                entry
                for (name, at), entry in self._ledger.items()
                if name == job
                and entry.parked
                and (start is None or at >= start)
                and (stop is None or at < stop)
            ]
            for entry in chosen:
                self._ledger[(job, entry.window.start)] = rules.requeued(entry)
            return len(chosen)

    async def count_attempts(self, job: str, *, reason: str) -> int:
        with self._lock:
            return sum(a.windows for a in self._attempts if a.job == job and a.reason == reason)

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
        with self._lock:
            if job not in self._watermarks:
                raise StateError(f"job {job} is not registered in the state store")
            entries = [self._ledger.get((job, w.start)) for w in windows]
            if not all(rules.holds(e, run_id) for e in entries):
                raise StateError(f"job {job}: run {run_id} no longer holds its windows")
            for entry in entries:
                assert entry is not None
                self._ledger[(job, entry.window.start)] = rules.finished(entry, outcome, park_after)
            self._settle(job, run_id, {w.start for w in windows}, finished(outcome))
            undone = None if outcome.status.done else min(w.start for w in windows)
            mark = self._advance(job, undone)
            if (limit := rules.compact_limit(mark, compact_before)) is not None:
                self._fold(job, limit)
            self._prune(job, outcome.finished_at)
            return mark

    def _advance(self, job: str, undone: datetime | None) -> datetime:
        def done_stop(start: datetime) -> datetime | None:
            entry = self._ledger.get((job, start))
            if entry is not None:
                return entry.window.stop if entry.status.done else None
            return next((r.stop for r in self._ranges.get(job, []) if r.start == start), None)

        self._watermarks[job] = mark = rules.advance(self._watermarks[job], undone, done_stop)
        return mark

    def _fold(self, job: str, limit: datetime) -> None:
        done = [
            entry
            for (name, _), entry in self._ledger.items()
            if name == job and entry.window.stop <= limit and entry.status.done
        ]
        for entry in done:
            del self._ledger[(job, entry.window.start)]
        self._ranges[job] = rules.fold(self._ranges.get(job, []), done)

    def _prune(self, job: str, now: datetime) -> None:
        if self.keep_history is None or not rules.prune_due(self._pruned.get(job), now):
            return
        self._pruned[job] = now
        cutoff = now - self.keep_history
        ranges = self._ranges.get(job, [])
        self._attempts = [
            a
            for a in self._attempts
            if not (
                a.job == job
                and a.finished_at is not None
                and a.finished_at < cutoff
                and rules.prunable(a.window, a.status, ranges)
            )
        ]

    async def census(self, job: str, since: datetime, until: datetime) -> Census:
        with self._lock:
            mine = [
                e
                for (name, start), e in self._ledger.items()
                if name == job and start >= since and e.window.stop <= until
            ]
            counts = Counter((e.status, e.parked) for e in mine)
            for piece in self._ranges.get(job, []):
                if n := piece.within(since, until):
                    counts[(piece.status, False)] += n
        running = sorted(
            (e for e in mine if e.status is RunStatus.RUNNING), key=lambda e: e.window.start
        )
        return Census(dict(counts), tuple(running))

    async def history(self, job: str, *, limit: int = 50) -> list[Attempt]:
        with self._lock:
            mine = [a for a in self._attempts if a.job == job]
        return mine[::-1][:limit]

    async def jobs(self) -> list[str]:
        return sorted(self._watermarks)

    async def definition(self, job: str) -> JobDefinition | None:
        return self._definitions.get(job)

    async def record_definition(self, job: str, definition: JobDefinition) -> None:
        with self._lock:
            self._definitions[job] = definition

    async def reset(
        self,
        job: str,
        definition: JobDefinition,
        *,
        since: datetime | None,
        origin: datetime,
    ) -> int:
        with self._lock:
            gone = [
                key for key in self._ledger if key[0] == job and (since is None or key[1] >= since)
            ]
            for key in gone:
                del self._ledger[key]
            forgotten = len(gone)
            kept: list[LedgerRange] = []
            for piece in self._ranges.pop(job, []):
                left, count = rules.forget_from(piece, since)
                forgotten += count
                kept += [left] if left is not None else []
            if kept:
                self._ranges[job] = kept
            if job in self._watermarks:
                self._watermarks[job] = rules.reset_watermark(self._watermarks[job], since, origin)
            self._definitions[job] = definition
            return forgotten

    # -- workers -------------------------------------------------------------------------------

    async def beat(self, worker: Worker, *, forget_before: datetime | None = None) -> None:
        with self._lock:
            known = self._workers.get(worker.holder)
            if known is not None and known.last_seen > worker.last_seen:
                worker = replace(worker, last_seen=known.last_seen)
            self._workers[worker.holder] = worker
            if forget_before is not None:
                self._workers = {
                    h: w for h, w in self._workers.items() if w.last_seen >= forget_before
                }

    async def workers(self, since: datetime) -> list[Worker]:
        with self._lock:
            found = [w for w in self._workers.values() if w.last_seen >= since]
        return sorted(found, key=_worker_order)


def abandoned(entry: LedgerEntry, at: datetime) -> Callable[[Attempt], Attempt]:
    """What the history says of the attempt a claim at `at` took over from `entry`."""
    error = rules.abandon_reason(entry, at)
    return lambda row: replace(row, status=RunStatus.ABANDONED, finished_at=at, error=error)


def finished(outcome: Outcome) -> Callable[[Attempt], Attempt]:
    """An attempt's row once it ended with `outcome`."""
    return lambda row: replace(
        row,
        status=outcome.status,
        finished_at=outcome.finished_at,
        duration_s=outcome.duration_s,
        query_hash=outcome.query_hash,
        template_version=outcome.template_version,
        error=outcome.error,
    )


def _worker_order(worker: Worker) -> tuple[datetime, str, int, str]:
    return (worker.started_at, worker.holder.host, worker.holder.pid, worker.holder.started)
