"""An in-memory state store: the fake for unit tests, held to the same contract as the real ones."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

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
from tierflow._windows import Window

__all__ = ["MemoryStateStore"]


class MemoryStateStore(StateStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watermarks: dict[str, datetime] = {}
        self._ledger: dict[tuple[str, datetime], LedgerEntry] = {}
        self._attempts: dict[tuple[str, datetime, int], Attempt] = {}
        self._bases: dict[tuple[str, datetime], int] = {}
        self._definitions: dict[str, JobDefinition] = {}

    def ensure_job(self, job: str, origin: datetime) -> datetime:
        with self._lock:
            return self._watermarks.setdefault(job, origin)

    def watermark(self, job: str) -> datetime | None:
        return self._watermarks.get(job)

    def entries(
        self, job: str, since: datetime, until: datetime | None = None
    ) -> list[LedgerEntry]:
        with self._lock:
            rows = [
                replace(e, attempt_base=self._bases.get((j, start), 0))
                for (j, start), e in self._ledger.items()
                if j == job and start >= since and (until is None or start < until)
            ]
        return sorted(rows, key=lambda e: e.window.start)

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
        taken: list[Window] = []
        held: list[LedgerEntry] = []
        settled: list[Window] = []
        with self._lock:
            for window in windows:
                entry = self._ledger.get((job, window.start))
                why = refusal(entry, run_id=run_id, at=started_at, force=force, gone=gone)
                if why is Refusal.HELD:
                    assert entry is not None
                    base = self._bases.get((job, window.start), 0)
                    held.append(replace(entry, attempt_base=base))
                    continue
                if why is Refusal.SETTLED:
                    settled.append(window)
                    continue
                taken.append(window)
                if entry is not None and entry.status is RunStatus.RUNNING:
                    self._abandon(job, entry, started_at)
                if entry is None:
                    # A window forgotten by `reset` keeps its history: number on from it.
                    earlier = max(
                        (n for (j, at, n) in self._attempts if j == job and at == window.start),
                        default=0,
                    )
                    self._bases[(job, window.start)] = earlier
                attempt = (entry.attempts if entry else earlier) + 1
                self._ledger[(job, window.start)] = LedgerEntry(
                    job,
                    window,
                    RunStatus.RUNNING,
                    attempt,
                    run_id,
                    started_at,
                    None,
                    lease_expires_at,
                    None,
                    entry.fingerprint if entry else None,
                    holder=holder,
                )
                self._attempts[(job, window.start, attempt)] = Attempt(
                    job,
                    window,
                    attempt,
                    run_id,
                    RunStatus.RUNNING,
                    started_at,
                    None,
                    None,
                    None,
                    None,
                    None,
                    reason,
                )
        return Claim(tuple(taken), tuple(held), tuple(settled))

    def _abandon(self, job: str, entry: LedgerEntry, at: datetime) -> None:
        key = (job, entry.window.start, entry.attempts)
        if key in self._attempts:
            self._attempts[key] = replace(
                self._attempts[key],
                status=RunStatus.ABANDONED,
                finished_at=at,
                error=abandon_reason(entry, at),
            )

    def renew(
        self, job: str, windows: Sequence[Window], *, run_id: str, lease_expires_at: datetime
    ) -> bool:
        with self._lock:
            entries = [self._ledger.get((job, w.start)) for w in windows]
            if any(
                e is None or e.run_id != run_id or e.status is not RunStatus.RUNNING
                for e in entries
            ):
                return False
            for entry in entries:
                assert entry is not None
                self._ledger[(job, entry.window.start)] = replace(
                    entry, lease_expires_at=lease_expires_at
                )
            return True

    def requeue(self, job: str, start: datetime | None = None, stop: datetime | None = None) -> int:
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
                key = (job, entry.window.start)
                self._ledger[key] = replace(entry, parked=False, finished_at=None)
                self._bases[key] = entry.attempts
            return len(chosen)

    def count_attempts(self, job: str, *, reason: str) -> int:
        with self._lock:
            return sum(a.job == job and a.reason == reason for a in self._attempts.values())

    def finish(
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
            if any(
                e is None or e.run_id != run_id or e.status is not RunStatus.RUNNING
                for e in entries
            ):
                raise StateError(f"job {job}: run {run_id} no longer holds its windows")
            for entry in entries:
                assert entry is not None
                self._ledger[(job, entry.window.start)] = replace(
                    entry,
                    status=outcome.status,
                    finished_at=outcome.finished_at,
                    lease_expires_at=None,
                    error=outcome.error,
                    fingerprint=outcome.fingerprints.get(entry.window.start, entry.fingerprint),
                    parked=outcome.status is RunStatus.FAILED
                    and park_after is not None
                    and entry.attempts - self._bases.get((job, entry.window.start), 0)
                    >= park_after,
                )
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

        self._watermarks[job] = mark = advance(self._watermarks[job], undone, done_stop)
        return mark

    def census(self, job: str, since: datetime, until: datetime) -> Census:
        with self._lock:
            mine = [
                e
                for (name, start), e in self._ledger.items()
                if name == job and start >= since and e.window.stop <= until
            ]
        counts = Counter((e.status, e.parked) for e in mine)
        running = sorted(
            (
                replace(e, attempt_base=self._bases.get((job, e.window.start), 0))
                for e in mine
                if e.status is RunStatus.RUNNING
            ),
            key=lambda e: e.window.start,
        )
        return Census(dict(counts), tuple(running))

    def history(self, job: str, *, limit: int = 50) -> list[Attempt]:
        with self._lock:
            mine = [a for a in self._attempts.values() if a.job == job]
        return mine[::-1][:limit]

    def jobs(self) -> list[str]:
        return sorted(self._watermarks)

    def definition(self, job: str) -> JobDefinition | None:
        return self._definitions.get(job)

    def record_definition(self, job: str, definition: JobDefinition) -> None:
        with self._lock:
            self._definitions[job] = definition

    def reset(
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
                self._bases.pop(key, None)
            if job in self._watermarks:
                mark = self._watermarks[job]
                self._watermarks[job] = origin if since is None else min(mark, since)
            self._definitions[job] = definition
            return len(gone)
