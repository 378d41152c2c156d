"""An in-memory state store: the fake for unit tests, held to the same contract as the real ones.

Its coroutines never await: each runs to its end at once, so it is one transaction by itself.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

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
from tierflow._state._holder import Holder
from tierflow._state._worker import Worker
from tierflow._windows import Window

__all__ = ["MemoryStateStore"]


class MemoryStateStore(StateStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()  # for threads; a coroutine here never awaits
        self._watermarks: dict[str, datetime] = {}
        self._ledger: dict[tuple[str, datetime], LedgerEntry] = {}
        self._attempts: dict[tuple[str, datetime, int], Attempt] = {}
        self._definitions: dict[str, JobDefinition] = {}
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
        return sorted(rows, key=lambda e: e.window.start)

    async def _claim(self, request: ClaimRequest) -> Claim:
        job, started_at = request.job, request.started_at

        def take(window: Window, entry: LedgerEntry | None) -> None:
            if entry is not None and entry.status is RunStatus.RUNNING:
                self._abandon(job, entry, started_at)
            # A window forgotten by `reset` keeps its history: number on from it.
            earlier = entry.attempts if entry else self._last_attempt(job, window.start)
            new = rules.claimed(entry, window, request, earlier)
            self._ledger[(job, window.start)] = new
            self._attempts[(job, window.start, new.attempts)] = Attempt(
                job,
                window,
                new.attempts,
                request.run_id,
                RunStatus.RUNNING,
                started_at,
                None,
                None,
                None,
                None,
                None,
                request.reason,
            )

        with self._lock:
            return rules.judge_claim(
                request, lambda window: self._ledger.get((job, window.start)), take
            )

    def _last_attempt(self, job: str, start: datetime) -> int:
        return max((n for (j, at, n) in self._attempts if j == job and at == start), default=0)

    def _abandon(self, job: str, entry: LedgerEntry, at: datetime) -> None:
        key = (job, entry.window.start, entry.attempts)
        if key in self._attempts:
            self._attempts[key] = replace(
                self._attempts[key],
                status=RunStatus.ABANDONED,
                finished_at=at,
                error=rules.abandon_reason(entry, at),
            )

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
            return sum(a.job == job and a.reason == reason for a in self._attempts.values())

    async def finish(
        self,
        job: str,
        windows: Sequence[Window],
        *,
        run_id: str,
        outcome: Outcome,
        park_after: int | None = None,
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
                self._record_attempt(job, entry, outcome)
            undone = None if outcome.status.done else min(w.start for w in windows)
            return self._advance(job, undone)

    def _record_attempt(self, job: str, entry: LedgerEntry, outcome: Outcome) -> None:
        key = (job, entry.window.start, entry.attempts)
        self._attempts[key] = replace(
            self._attempts[key],
            status=outcome.status,
            finished_at=outcome.finished_at,
            duration_s=outcome.duration_s,
            query_hash=outcome.query_hash,
            template_version=outcome.template_version,
            error=outcome.error,
        )

    def _advance(self, job: str, undone: datetime | None) -> datetime:
        def done_stop(start: datetime) -> datetime | None:
            entry = self._ledger.get((job, start))
            return entry.window.stop if entry is not None and entry.status.done else None

        self._watermarks[job] = mark = rules.advance(self._watermarks[job], undone, done_stop)
        return mark

    async def census(self, job: str, since: datetime, until: datetime) -> Census:
        with self._lock:
            mine = [
                e
                for (name, start), e in self._ledger.items()
                if name == job and start >= since and e.window.stop <= until
            ]
        counts = Counter((e.status, e.parked) for e in mine)
        running = sorted(
            (e for e in mine if e.status is RunStatus.RUNNING), key=lambda e: e.window.start
        )
        return Census(dict(counts), tuple(running))

    async def history(self, job: str, *, limit: int = 50) -> list[Attempt]:
        with self._lock:
            mine = [a for a in self._attempts.values() if a.job == job]
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
            if job in self._watermarks:
                self._watermarks[job] = rules.reset_watermark(self._watermarks[job], since, origin)
            self._definitions[job] = definition
            return len(gone)

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


def _worker_order(worker: Worker) -> tuple[datetime, str, int, str]:
    return (worker.started_at, worker.holder.host, worker.holder.pid, worker.holder.started)
