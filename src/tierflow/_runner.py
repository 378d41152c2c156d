"""The one loop: claim windows, render, execute, record outcome and watermark together."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tierflow._clock import Clock, utc_now
from tierflow._config import Config
from tierflow._engines import Engine, engine_for
from tierflow._errors import EngineError, TemplateError, TierflowError
from tierflow._jobs import render_job
from tierflow._logging import log_event
from tierflow._planner import Batch, coalesce, count_due, due_windows, windows_between
from tierflow._state import LedgerEntry, Outcome, RunStatus, StateStore
from tierflow._windows import Window, isoformat

__all__ = ["BatchRun", "JobPlan", "JobStatus", "Runner", "WindowRun"]


@dataclass(frozen=True, slots=True)
class WindowRun:
    """How one window of one job fared in this run."""

    job: str
    window: Window
    status: RunStatus
    attempts: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BatchRun:
    """How one query (a batch of windows) fared: its windows share its status and error."""

    job: str
    batch: Batch
    status: RunStatus
    attempts: tuple[int, ...]
    error: str | None = None
    points_written: int = 0

    @property
    def windows(self) -> list[WindowRun]:
        return [
            WindowRun(self.job, window, self.status, attempts, self.error)
            for window, attempts in zip(self.batch.windows, self.attempts, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class JobPlan:
    """A job's due windows at some instant, grouped into the batches that will run them."""

    job: str
    batches: tuple[Batch, ...]

    @property
    def windows(self) -> list[Window]:
        return [window for batch in self.batches for window in batch.windows]


@dataclass(frozen=True, slots=True)
class JobStatus:
    """Where a job stands: how far it has got, and what is left."""

    job: str
    watermark: datetime | None
    lag_seconds: float
    last_status: RunStatus | None
    failed_windows: int
    pending_windows: int


_FAILED = frozenset({RunStatus.FAILED, RunStatus.ABANDONED})
Progress = Callable[[int], None]


@dataclass
class Runner:
    """Runs jobs' windows against their engines and records every outcome in the state store.

    Jobs run concurrently; the windows of one job run one batch at a time, oldest first.
    """

    config: Config
    store: StateStore
    engines: dict[str, Engine] = field(default_factory=dict)
    clock: Clock = utc_now
    lease: timedelta = timedelta(minutes=10)
    on_progress: Progress | None = None

    def engine(self, connection: str) -> Engine:
        if connection not in self.engines:
            self.engines[connection] = engine_for(connection, self.config.connections[connection])
        return self.engines[connection]

    async def aclose(self) -> None:
        await asyncio.gather(*(engine.aclose() for engine in self.engines.values()))

    def origin(self, job: str) -> datetime:
        """Where a job's first window starts."""
        spec = self.config.jobs[job]
        return spec.schedule.first_window(spec.start).start

    def plan(self, now: datetime, jobs: Iterable[str] | None = None) -> list[JobPlan]:
        """The due windows of each job at `now`, as batches. Reads the store, writes nothing."""
        return [self._plan_job(job, now) for job in self._select(jobs)]

    def _plan_job(self, job: str, now: datetime) -> JobPlan:
        spec = self.config.jobs[job]
        begin, ledger = self._ledger(job)
        windows = due_windows(
            spec.schedule, begin=begin, offset=spec.offset, now=now, ledger=ledger
        )
        return JobPlan(job, tuple(coalesce(windows, spec.chunk)))

    def _ledger(self, job: str) -> tuple[datetime, dict[datetime, LedgerEntry]]:
        """Where planning starts (watermark, or the first window) and the ledger beyond it."""
        origin = self.origin(job)
        begin = max(origin, self.store.watermark(job) or origin)
        return begin, {entry.window.start: entry for entry in self.store.entries(job, begin)}

    def status(self, now: datetime, jobs: Iterable[str] | None = None) -> list[JobStatus]:
        """Where each job stands at `now`."""
        return [self._status(job, now) for job in self._select(jobs)]

    def _status(self, job: str, now: datetime) -> JobStatus:
        spec = self.config.jobs[job]
        begin, ledger = self._ledger(job)
        last = self.store.history(job, limit=1)
        return JobStatus(
            job=job,
            watermark=self.store.watermark(job),
            lag_seconds=max(0.0, (now - begin).total_seconds()),
            last_status=last[0].status if last else None,
            failed_windows=sum(e.status in _FAILED for e in ledger.values()),
            pending_windows=count_due(
                spec.schedule, begin=begin, offset=spec.offset, now=now, ledger=ledger
            ),
        )

    def _select(self, jobs: Iterable[str] | None) -> list[str]:
        chosen = list(self.config.jobs) if jobs is None else list(jobs)
        unknown = [job for job in chosen if job not in self.config.jobs]
        if unknown:
            raise TierflowError(
                f"unknown job {unknown[0]!r}; jobs in {self.config.path}: "
                f"{', '.join(self.config.jobs) or 'none'}"
            )
        return chosen

    async def run_due(self, now: datetime, jobs: Iterable[str] | None = None) -> list[BatchRun]:
        """Run every window due at `now` for the chosen jobs (all by default)."""
        plans = self.plan(now, jobs)
        results = await asyncio.gather(*(self._run_batches(p.job, p.batches) for p in plans))
        return [run for job_runs in results for run in job_runs]

    def backfill_batches(
        self, job: str, start: datetime, stop: datetime, now: datetime
    ) -> list[Batch]:
        """Every window of `job` that overlaps `[start, stop)`, is on or after the job's start and
        is complete at `now` (stop + offset), whatever the ledger says, as batches."""
        self._select([job])
        spec = self.config.jobs[job]
        origin = self.origin(job)
        windows = (
            w
            for w in windows_between(spec.schedule, max(start, origin), stop)
            if w.start >= origin and w.stop + spec.offset <= now
        )
        return list(coalesce(windows, spec.chunk))

    async def backfill(
        self, job: str, start: datetime, stop: datetime, now: datetime
    ) -> list[BatchRun]:
        """Re-run `job`'s windows in `[start, stop)`; results overwrite the earlier ones."""
        return await self._run_batches(job, self.backfill_batches(job, start, stop, now))

    async def _run_batches(self, job: str, batches: Sequence[Batch]) -> list[BatchRun]:
        if batches:
            self.store.ensure_job(job, self.origin(job))
        runs: list[BatchRun] = []
        for batch in batches:
            if (run := await self._run_batch(job, batch)) is not None:
                runs.append(run)
            if self.on_progress is not None:
                self.on_progress(len(batch.windows))
        return runs

    async def _run_batch(self, job: str, batch: Batch) -> BatchRun | None:
        spec = self.config.jobs[job]
        run_id = uuid.uuid4().hex
        started_at = self.clock()
        window_fields: dict[str, Any] = {
            "job": job,
            "window_start": isoformat(batch.range.start),
            "window_stop": isoformat(batch.range.stop),
            "run_id": run_id,
        }
        if not self.store.claim(
            job,
            batch.windows,
            run_id=run_id,
            started_at=started_at,
            lease_expires_at=started_at + self.lease,
        ):
            log_event("window_claimed_elsewhere", **window_fields)
            return None
        attempts = {
            e.window.start: e.attempts
            for e in self.store.entries(job, batch.range.start)
            if e.window.start < batch.range.stop
        }
        began = time.perf_counter()
        written, error, query = 0, None, None
        try:
            query = render_job(self.config, job, batch)
            dest = self.config.tiers[spec.dest]
            engine = self.engine(self.config.tiers[spec.source].connection)
            written = (await engine.execute(query, database=dest.database)).points_written
        except (EngineError, TemplateError) as exc:
            error = str(exc)
        except Exception as exc:
            error = f"internal error: {type(exc).__name__}: {exc}"
            log_event("window_internal_error", level=logging.ERROR, exc_info=True, **window_fields)
        status = RunStatus.FAILED if error else RunStatus.SUCCEEDED
        outcome = Outcome(
            status=status,
            finished_at=self.clock(),
            duration_s=time.perf_counter() - began,
            query_hash=query.hash if query else None,
            template_version=query.template_version if query else None,
            error=error,
        )
        watermark = self.store.finish(job, batch.windows, run_id=run_id, outcome=outcome)
        log_event(
            f"window_{status.value}",
            level=logging.WARNING if error else logging.INFO,
            windows=len(batch.windows),
            points_written=written,
            error=error,
            watermark=isoformat(watermark),
            duration_s=round(outcome.duration_s, 6),
            **window_fields,
        )
        counts = tuple(attempts.get(w.start, 1) for w in batch.windows)
        return BatchRun(job, batch, status, counts, error, written)
