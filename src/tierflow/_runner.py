"""The one loop: claim windows, render, execute, record outcome and watermark together."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from itertools import islice
from typing import TYPE_CHECKING, Any

from tierflow._clock import Clock, utc_now
from tierflow._config import ArchiveJob, Config, DownsampleJob
from tierflow._engines import Engine, engine_for
from tierflow._errors import EngineError, TemplateError, TierflowError, UnknownJobError
from tierflow._field_check import warn_missing_fields
from tierflow._gate import Priority, PriorityGate
from tierflow._jobs import (
    dialect_of,
    fingerprints,
    is_relay,
    render_fingerprint,
    render_job,
    render_relay,
)
from tierflow._logging import log_event
from tierflow._metrics import Metrics
from tierflow._planner import (
    Batch,
    coalesce,
    count_due,
    due_windows,
    next_wake,
    windows_between,
)
from tierflow._resilience import CircuitOpenError
from tierflow._state import Claim, LedgerEntry, Outcome, RunStatus, StateStore
from tierflow._state._holder import Holder, holder_gone, this_process
from tierflow._state._rules import WindowState, state_of
from tierflow._templates import DeleteRange
from tierflow._windows import Window, isoformat

if TYPE_CHECKING:
    from tierflow._archiving import Archives

__all__ = [
    "BatchRun",
    "ClaimView",
    "JobPlan",
    "JobStatus",
    "Runner",
    "WindowRun",
    "select_jobs",
]


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
    reason: str = "scheduled"

    @property
    def windows(self) -> list[WindowRun]:
        return [
            WindowRun(self.job, window, self.status, attempts, self.error)
            for window, attempts in zip(self.batch.windows, self.attempts, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class JobPlan:
    """A job's due windows at some instant: the batches that will run them, and the windows
    that `max_catchup` says to skip."""

    job: str
    batches: tuple[Batch, ...]
    skipped: tuple[Window, ...] = ()

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
    rechecked_windows: int = 0
    parked_windows: int = 0
    expiry_risk: bool = False
    windows_at_risk: int = 0
    windows_lost: int = 0
    #: Every window from the job's first to the last complete at `now`, counted by the one
    #: state it is in (they add up to all of them; a lagging watermark shows as not succeeded).
    window_states: Mapping[WindowState, int] = field(default_factory=dict)
    #: The running windows: holder, run and lease of each.
    claims: tuple[ClaimView, ...] = ()


@dataclass(frozen=True, slots=True)
class ClaimView:
    """A running window as `status` shows it. `stale`: its lease expired or its holder is dead,
    so the next run takes it over."""

    window: Window
    run_id: str | None
    holder: Holder | None
    lease_expires_at: datetime | None
    stale: bool


_FAILED = frozenset({RunStatus.FAILED, RunStatus.ABANDONED})
#: Claims that take windows whatever the ledger says (but never from a live holder).
_FORCED = frozenset({"backfill", "late_data"})
_SKIP_CHUNK = 500
LATE_DATA = "late_data"
Progress = Callable[[int], None]


@dataclass
class Runner:
    """Runs jobs' windows against their engines and records every outcome in the state store.

    Jobs run concurrently. A job runs up to `parallel_windows` batches at a time (default one,
    oldest first); all jobs together at most `[scheduler] max_concurrency`; each connection's
    engine at most its `max_concurrency` requests. Batches waiting for those slots are served
    at-risk first (their oldest window's source data expires within the tier's margin), the
    soonest to expire first, then in the order they asked. A claim on windows is a lease, renewed
    while the query runs, so windows of a crashed worker are taken over once it expires.

    `patient` runners (the daemon) wait a growing delay before retrying a failed window (at most
    `retry_delay` once the window is at risk); impatient ones (`run-once`, asked for by a person
    or a cron job) retry failed windows at once.
    Once `stopping` is set, no new batch starts.
    """

    config: Config
    store: StateStore
    engines: dict[str, Engine] = field(default_factory=dict)
    clock: Clock = utc_now
    on_progress: Progress | None = None
    metrics: Metrics = field(default_factory=Metrics)
    patient: bool = False
    stopping: asyncio.Event | None = None
    #: Look each downsample job's source fields up before its first batch and log
    #: `fields_missing` for fields the source lacks (what `run-once` does).
    check_fields: bool = False
    #: Windows this runner's claims found held by another live run (holder, lease): run-once
    #: reports those still undone.
    held: list[LedgerEntry] = field(default_factory=list, init=False, repr=False)
    _slots: PriorityGate | None = field(default=None, init=False, repr=False)
    _warned: set[tuple[str, datetime]] = field(default_factory=set, init=False, repr=False)
    _refused: set[tuple[str, datetime]] = field(default_factory=set, init=False, repr=False)
    _fields_checked: set[str] = field(default_factory=set, init=False, repr=False)
    _connection_slots: dict[str, PriorityGate] = field(default_factory=dict, init=False, repr=False)

    @property
    def lease(self) -> timedelta:
        return self.config.scheduler.lease

    def engine(self, connection: str) -> Engine:
        if connection not in self.engines:
            self.engines[connection] = engine_for(
                connection, self.config.connections[connection], self.metrics
            )
        return self.engines[connection]

    def engine_of(self, job: str) -> Engine:
        return self.engine(self.config.tiers[self.config.jobs[job].source].connection)

    async def aclose(self) -> None:
        await asyncio.gather(*(engine.aclose() for engine in self.engines.values()))

    def origin(self, job: str) -> datetime:
        """Where a job's first window starts."""
        spec = self.config.jobs[job]
        return spec.schedule.first_window(spec.start).start

    # -- planning (reads the store, writes nothing) ---------------------------------------------

    def plan(self, now: datetime, jobs: Iterable[str] | None = None) -> list[JobPlan]:
        """The due windows of each job at `now`, as batches."""
        return [self._plan_job(job, now) for job in self._select(jobs)]

    def _plan_job(self, job: str, now: datetime) -> JobPlan:
        spec = self.config.jobs[job]
        begin, ledger = self._ledger(job)
        # Windows held by other runs are planned too: the claim judges them (their holder may be
        # dead) and reports who holds them, instead of leaving them silently out.
        windows = due_windows(
            spec.schedule,
            begin=begin,
            offset=spec.offset,
            now=now,
            ledger=ledger,
            retry_at=self._retry_at if self.patient else None,
            include_held=True,
        )
        skipped: list[Window] = []
        if spec.max_catchup is not None:
            horizon = now - spec.max_catchup
            windows, skipped = _split_before(windows, horizon)
        return JobPlan(job, tuple(coalesce(windows, spec.chunk)), tuple(skipped))

    def _retry_at(self, entry: LedgerEntry) -> datetime:
        """When a failed window may run again: after a delay doubling per attempt, but no later
        than `retry_delay` after it failed (or than the instant it became at risk, if later)
        once its source data expires within the tier's margin."""
        scheduler = self.config.scheduler
        delay = min(
            scheduler.retry_delay * (1 << min(max(entry.attempts - entry.attempt_base, 1) - 1, 30)),
            scheduler.max_retry_delay,
        )
        assert entry.finished_at is not None
        retry_at = entry.finished_at + delay
        if (expiry := self._retention(entry.job)) is not None:
            retention, margin = expiry
            at_risk_from = entry.window.start + retention - margin
            retry_at = min(retry_at, max(at_risk_from, entry.finished_at + scheduler.retry_delay))
        return retry_at

    def _retention(self, job: str) -> tuple[timedelta, timedelta] | None:
        """The retention of the job's source tier and its expiry margin (None: data never
        expires there)."""
        tier = self.config.tiers[self.config.jobs[job].source]
        if tier.retention is None:
            return None
        return tier.retention, tier.expiry_margin or max(tier.retention / 10, timedelta(hours=1))

    def _priority(self, job: str, batch: Batch, now: datetime) -> Priority:
        """A batch whose oldest window is at risk at `now` (its source data expires within the
        margin, or has expired) asks for capacity by when that data expires; others by turn."""
        expiry = self._retention(job)
        if expiry is None:
            return Priority()
        retention, margin = expiry
        oldest = batch.windows[0].start
        if oldest >= now - retention + margin:
            return Priority()
        return Priority(expires_at=oldest + retention)

    def _ledger(self, job: str) -> tuple[datetime, dict[datetime, LedgerEntry]]:
        """Where planning starts (watermark, or the first window) and the ledger beyond it."""
        origin = self.origin(job)
        begin = max(origin, self.store.watermark(job) or origin)
        return begin, {entry.window.start: entry for entry in self.store.entries(job, begin)}

    def next_wake(self, job: str, now: datetime) -> datetime:
        """When the job may next have work: a window closing, a lease expiring, a retry."""
        spec = self.config.jobs[job]
        begin, ledger = self._ledger(job)
        return next_wake(
            spec.schedule,
            begin=begin,
            offset=spec.offset,
            now=now,
            ledger=ledger,
            retry_at=self._retry_at if self.patient else None,
        )

    def status(self, now: datetime, jobs: Iterable[str] | None = None) -> list[JobStatus]:
        """Where each job stands at `now` (and the lag and pending gauges say so too)."""
        return [self._status(job, now) for job in self._select(jobs)]

    def _status(self, job: str, now: datetime) -> JobStatus:
        spec = self.config.jobs[job]
        begin, ledger = self._ledger(job)
        # Windows that max_catchup will skip are not pending: they will never run.
        counted_from = begin
        if spec.max_catchup is not None:
            horizon = spec.schedule.first_window(now - spec.max_catchup).start
            counted_from = max(begin, horizon)
        last = self.store.history(job, limit=1)
        status = JobStatus(
            job=job,
            watermark=self.store.watermark(job),
            lag_seconds=max(0.0, (now - begin).total_seconds()),
            last_status=last[0].status if last else None,
            failed_windows=sum(e.status in _FAILED for e in ledger.values()),
            pending_windows=count_due(
                spec.schedule, begin=counted_from, offset=spec.offset, now=now, ledger=ledger
            ),
            rechecked_windows=self.store.count_attempts(job, reason=LATE_DATA),
            parked_windows=sum(e.parked for e in ledger.values()),
            **self._expiry(job, begin, ledger, now),
            **self._census(job, now),
        )
        self.metrics.windows_at_risk.labels(job).set(status.windows_at_risk)
        self.metrics.watermark_lag.labels(job).set(status.lag_seconds)
        self.metrics.windows_pending.labels(job).set(status.pending_windows)
        self.metrics.windows_parked.labels(job).set(status.parked_windows)
        return status

    def _census(self, job: str, now: datetime) -> dict[str, Any]:
        """Each window from the job's first to the last complete at `now`, by state."""
        spec = self.config.jobs[job]
        origin = self.origin(job)
        until = now - spec.offset
        total = count_due(spec.schedule, begin=origin, offset=spec.offset, now=now, ledger={})
        census = self.store.census(job, origin, until)
        states: Counter[WindowState] = Counter(dict.fromkeys(WindowState, 0))
        for (status, parked), count in census.counts.items():
            states[state_of(status, parked)] += count
        # A window without a ledger row has never been claimed: it waits for its first run.
        states[WindowState.PENDING] = total - sum(states.values())
        claims = tuple(
            ClaimView(
                e.window,
                e.run_id,
                e.holder,
                e.lease_expires_at,
                e.lease_expires_at is None
                or e.lease_expires_at <= now
                or (e.holder is not None and holder_gone(e.holder)),
            )
            for e in census.running
        )
        return {"window_states": dict(states), "claims": claims}

    def _expiry(
        self, job: str, begin: datetime, ledger: dict[datetime, LedgerEntry], now: datetime
    ) -> dict[str, Any]:
        """Windows not yet done whose source data expires within the tier's margin (at risk),
        or has expired already (lost: never silently skipped, always reported)."""
        spec = self.config.jobs[job]
        if (expiry := self._retention(job)) is None:
            return {}
        retention, margin = expiry
        risky_before, lost_before = now - retention + margin, now - retention
        # Due windows, and parked ones: those wait for a person, not for the clock.
        due = due_windows(spec.schedule, begin=begin, offset=spec.offset, now=now, ledger=ledger)
        undone = list(_until(due, risky_before))
        undone += [e.window for e in ledger.values() if e.parked and e.window.start < risky_before]
        for window in undone:
            if (job, window.start) not in self._warned:
                self._warned.add((job, window.start))
                log_event(
                    "window_at_risk",
                    level=logging.WARNING,
                    job=job,
                    window_start=isoformat(window.start),
                    window_stop=isoformat(window.stop),
                    expires_at=isoformat(window.start + retention),
                    lost=window.start < lost_before,
                )
        lost = sum(window.start < lost_before for window in undone)
        return {"expiry_risk": bool(undone), "windows_at_risk": len(undone), "windows_lost": lost}

    def _select(self, jobs: Iterable[str] | None) -> list[str]:
        return select_jobs(self.config, jobs)

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

    # -- running ----------------------------------------------------------------------------------

    async def run_due(self, now: datetime, jobs: Iterable[str] | None = None) -> list[BatchRun]:
        """Run every window due at `now` for the chosen jobs (all by default)."""
        results = await asyncio.gather(*(self.run_job(job, now) for job in self._select(jobs)))
        return [run for job_runs in results for run in job_runs]

    async def run_job(self, job: str, now: datetime) -> list[BatchRun]:
        """Record the windows `max_catchup` skips, then run the job's due batches."""
        plan = self._plan_job(job, now)
        if plan.skipped:
            self._skip(job, plan.skipped)
        spec = self.config.jobs[job]
        if (
            self.check_fields
            and plan.batches
            and isinstance(spec, DownsampleJob)
            and job not in self._fields_checked
        ):
            self._fields_checked.add(job)  # once per job and runner: a lookup, not one per window
            async with self._capacity(job):
                await warn_missing_fields(
                    self.engine_of(job), job, spec, self.config.tiers[spec.source], now=now
                )
        return await self._execute(job, plan.batches, reason="scheduled")

    async def backfill(
        self, job: str, start: datetime, stop: datetime, now: datetime
    ) -> list[BatchRun]:
        """Re-run `job`'s windows in `[start, stop)`; results overwrite the earlier ones."""
        return await self._execute(
            job, self.backfill_batches(job, start, stop, now), reason="backfill"
        )

    async def recheck(self, job: str, now: datetime) -> list[BatchRun]:
        """Re-run the job's succeeded windows that stopped within its `recheck` period and whose
        source data changed since they ran (late data), judged by their fingerprints."""
        spec = self.config.jobs[job]
        if spec.recheck is None:
            return []
        since = now - spec.recheck
        known = {
            entry.window: entry.fingerprint
            for entry in self.store.entries(job, spec.schedule.window_at(since).start)
            if entry.status is RunStatus.SUCCEEDED
            and entry.fingerprint is not None
            and entry.window.stop > since
        }
        done = sorted(known)
        changed: list[Window] = []
        for batch in coalesce(done, spec.chunk):
            try:
                async with self._capacity(job):
                    current = await self._fingerprints(job, batch)
            except (EngineError, TemplateError) as exc:
                log_event("recheck_failed", level=logging.WARNING, job=job, error=str(exc))
                return []
            changed += [w for w in batch.windows if current[w.start] != known[w]]
        if changed:
            log_event("late_data_detected", job=job, windows=len(changed))
            self.metrics.windows_rechecked.labels(job).inc(len(changed))
        return await self._execute(job, list(coalesce(changed, spec.chunk)), reason=LATE_DATA)

    def _skip(self, job: str, windows: Sequence[Window]) -> None:
        self.store.ensure_job(job, self.origin(job))
        run_id = uuid.uuid4().hex
        for chunk in _chunks(windows, _SKIP_CHUNK):
            at = self.clock()
            # Only windows still due: one another run finished or holds since planning is not
            # skipped over its result.
            claim = self.store.claim(
                job,
                chunk,
                run_id=run_id,
                started_at=at,
                lease_expires_at=at + self.lease,
                reason="max_catchup",
                holder=this_process(),
            )
            self._note_refused(job, claim, {"job": job, "run_id": run_id, "reason": "max_catchup"})
            if claim.taken:
                outcome = Outcome(RunStatus.SKIPPED, at, 0.0, error="older than max_catchup")
                self.store.finish(job, claim.taken, run_id=run_id, outcome=outcome)
        self.metrics.window_runs.labels(job, RunStatus.SKIPPED.value).inc(len(windows))
        log_event(
            "windows_skipped",
            level=logging.WARNING,
            job=job,
            windows=len(windows),
            window_start=isoformat(windows[0].start),
            window_stop=isoformat(windows[-1].stop),
        )

    async def _execute(self, job: str, batches: Sequence[Batch], *, reason: str) -> list[BatchRun]:
        """Run batches oldest first, at most `parallel_windows` of them at a time."""
        if not batches:
            return []
        self.store.ensure_job(job, self.origin(job))
        pending = iter(batches)
        runs: list[BatchRun] = []

        async def worker() -> None:
            for batch in pending:
                if self.stopping is not None and self.stopping.is_set():
                    return  # shutting down: take no new windows
                runs.extend(await self._run_batch(job, batch, reason))
                if self.on_progress is not None:
                    self.on_progress(len(batch.windows))

        workers = min(self.config.jobs[job].parallel_windows, len(batches))
        await asyncio.gather(*(worker() for _ in range(workers)))
        return sorted(runs, key=lambda run: run.batch.range.start)

    async def _run_batch(self, job: str, batch: Batch, reason: str) -> list[BatchRun]:
        priority = self._priority(job, batch, self.clock())
        async with self._capacity(job, priority):
            return await self._run_claimed(job, batch, reason, priority)

    @asynccontextmanager
    async def _capacity(self, job: str, priority: Priority | None = None) -> AsyncIterator[None]:
        """A slot on the job's connection, then one of the global slots, each served by
        `priority` (at risk first, soonest to expire first, then first come). In that order: a
        batch waiting for a busy connection must not sit on a global slot that an idle
        connection's job could use."""
        connection = self.config.tiers[self.config.jobs[job].source].connection
        if connection not in self._connection_slots:
            limit = self.config.connections[connection].max_concurrency
            self._connection_slots[connection] = PriorityGate(limit)
        if self._slots is None:
            self._slots = PriorityGate(self.config.scheduler.max_concurrency)
        async with self._connection_slots[connection].slot(priority), self._slots.slot(priority):
            yield

    async def _run_claimed(
        self, job: str, batch: Batch, reason: str, priority: Priority | None = None
    ) -> list[BatchRun]:
        run_id = uuid.uuid4().hex
        started_at = self.clock()
        fields: dict[str, Any] = {
            "job": job,
            "window_start": isoformat(batch.range.start),
            "window_stop": isoformat(batch.range.stop),
            "run_id": run_id,
            "reason": reason,
        }
        if priority is not None and priority.expires_at is not None:
            fields["at_risk"] = True
            fields["expires_at"] = isoformat(priority.expires_at)
        claim = self.store.claim(
            job,
            batch.windows,
            run_id=run_id,
            started_at=started_at,
            lease_expires_at=started_at + self.lease,
            reason=reason,
            holder=this_process(),
            force=reason in _FORCED,
        )
        self._note_refused(job, claim, fields)
        if not claim.taken:
            return []
        # The heartbeat renews what this run still holds: parts finished are no longer its.
        outstanding = list(claim.taken)
        heartbeat = asyncio.create_task(self._heartbeat(job, outstanding, run_id))
        runs: list[BatchRun] = []
        part_fields = fields
        try:
            for part in coalesce(claim.taken, self.config.jobs[job].chunk):
                part_fields = fields | {
                    "window_start": isoformat(part.range.start),
                    "window_stop": isoformat(part.range.stop),
                    "attempt": max(
                        e.attempts
                        for e in self.store.entries(job, part.range.start, part.range.stop)
                    ),
                }
                run = await self._run_part(job, part, run_id, reason, part_fields)
                if run is not None:
                    runs.append(run)
                del outstanding[: len(part.windows)]
        except asyncio.CancelledError:
            if not outstanding:
                raise
            self._finish(
                job,
                Batch(tuple(outstanding)),
                run_id,
                Outcome(
                    RunStatus.ABANDONED,
                    self.clock(),
                    0.0,
                    error="abandoned: tierflow shut down while the window ran",
                ),
            )
            self.metrics.window_runs.labels(job, RunStatus.ABANDONED.value).inc(len(outstanding))
            log_event("window_abandoned", level=logging.WARNING, **part_fields)
            raise
        finally:
            heartbeat.cancel()
            with suppress(asyncio.CancelledError):
                await heartbeat
        return runs

    def _note_refused(self, job: str, claim: Claim, fields: dict[str, Any]) -> None:
        """Log (and keep, for run-once to report) the windows a claim could not take."""
        for entry in claim.held:
            self.held.append(entry)
            log_event(
                "window_claimed_elsewhere",
                **fields
                | {
                    "window_start": isoformat(entry.window.start),
                    "window_stop": isoformat(entry.window.stop),
                    "holder": str(entry.holder) if entry.holder else None,
                    "holder_run_id": entry.run_id,
                    "lease_expires_at": _when(entry.lease_expires_at),
                },
            )
        if claim.settled:
            log_event(
                "windows_settled_elsewhere",
                level=logging.DEBUG,
                windows=len(claim.settled),
                **fields,
            )

    async def _run_part(
        self, job: str, batch: Batch, run_id: str, reason: str, fields: dict[str, Any]
    ) -> BatchRun | None:
        """Run claimed windows as one query and record the outcome (None: the claim was lost)."""
        attempts = tuple(
            e.attempts for e in self.store.entries(job, batch.range.start, batch.range.stop)
        )
        log_event("window_started", level=logging.DEBUG, windows=len(batch.windows), **fields)
        began = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.scheduler.window_deadline.total_seconds()):
                written, prints, query, error = await self._attempt(job, batch, fields)
        except TimeoutError:
            written, prints, query = 0, {}, None
            error = f"window deadline ({self.config.scheduler.window_deadline}) exceeded"
        status = RunStatus.FAILED if error else RunStatus.SUCCEEDED
        outcome = Outcome(
            status=status,
            finished_at=self.clock(),
            duration_s=time.perf_counter() - began,
            query_hash=query.hash if query else None,
            template_version=query.template_version if query else None,
            error=error,
            fingerprints=prints,
        )
        watermark = self._finish(job, batch, run_id, outcome)
        if watermark is None:
            return None  # the claim was lost: the run that took the windows over reports them
        if error:
            self._report_parked(job, batch, fields)
        self.metrics.window_runs.labels(job, status.value).inc(len(batch.windows))
        self.metrics.window_run_duration.labels(job).observe(outcome.duration_s)
        log_event(
            f"window_{status.value}",
            level=logging.WARNING if error else logging.INFO,
            windows=len(batch.windows),
            points_written=written,
            error=error,
            watermark=isoformat(watermark),
            duration_s=round(outcome.duration_s, 6),
            **fields,
        )
        return BatchRun(job, batch, status, attempts, error, written, reason)

    async def _attempt(
        self, job: str, batch: Batch, fields: dict[str, Any]
    ) -> tuple[int, dict[datetime, str], Any, str | None]:
        """Fingerprint the source (for `recheck`), then run the query: (points written,
        fingerprints, the rendered query, the error if it failed)."""
        spec = self.config.jobs[job]
        query = None
        try:
            # Fingerprint before aggregating: data landing in between makes the next recheck
            # see a change and re-run the window (one run too many, never one too few).
            prints = await self._fingerprints(job, batch) if spec.recheck else {}
            query = render_job(self.config, job, batch)
            if isinstance(spec, ArchiveJob):
                return await self._archive(job, spec, batch), {}, query, None
            if isinstance(spec, DownsampleJob) and is_relay(self.config, job):
                return await self._relay(job, spec, batch, query.deletes), prints, query, None
            database = self.config.tiers[spec.dest].database
            written = (await self.engine_of(job).execute(query, database=database)).points_written
        except (EngineError, TemplateError) as exc:
            if isinstance(exc, CircuitOpenError):
                self._refused.add((job, batch.range.start))
            return 0, {}, query, str(exc)
        except Exception as exc:
            log_event("window_internal_error", level=logging.ERROR, exc_info=True, **fields)
            return 0, {}, query, f"internal error: {type(exc).__name__}: {exc}"
        return written, prints, query, None

    async def _relay(
        self, job: str, spec: DownsampleJob, batch: Batch, deletes: Sequence[DeleteRange]
    ) -> int:
        """Aggregate on the source server, carry the rows over, write them to the dest (1.x or
        2.x on either side). With `replace`, the dest window is deleted first, on the dest."""
        from tierflow._transfer import aggregate_batches, write_batches

        source, dest = self.config.tiers[spec.source], self.config.tiers[spec.dest]
        reader, writer = self.engine_of(job), self.engine(dest.connection)
        for target in deletes:
            await writer.delete(target)
        written = 0
        for measurement, into, query in render_relay(self.config, job, batch):
            rows = aggregate_batches(
                reader,
                tier=source,
                measurement=measurement,
                aggregates=spec.aggregates,
                query=query,
            )
            moved = await write_batches(
                writer,
                ((into, points) async for points in rows),
                database=dest.database,
                retention_policy=dest.retention_policy,
                max_concurrency=self.config.connections[dest.connection].max_concurrency,
            )
            written += moved.points
        return written

    async def _archive(self, job: str, spec: ArchiveJob, batch: Batch) -> int:
        from tierflow._archiving import archive_window

        archive = self.archives(spec.dest)
        source = self.config.tiers[spec.source]
        total = 0
        for window in batch.windows:
            total += await archive_window(self.engine_of(job), archive, spec, source, window)
        return total

    @cached_property
    def archives(self) -> Archives:
        from tierflow._archiving import Archives

        return Archives(self.config)

    async def _fingerprints(self, job: str, batch: Batch) -> dict[datetime, str]:
        spec, engine = self.config.jobs[job], self.engine_of(job)
        source = self.config.tiers[spec.source]
        types = None
        dialect = dialect_of(self.config, job)
        if dialect.fingerprint_needs_types():
            # Asked every time, not cached: late data may bring a field's first point of
            # another type, and a fingerprint blind to that type would miss it.
            types = {
                measurement: {
                    key: {str(kind) for kind in kinds}
                    for key, kinds in (
                        await dialect.field_types(engine, source, measurement, now=batch.range.stop)
                    ).items()
                }
                for measurement in spec.measurements
            }
        query = render_fingerprint(self.config, job, batch, types)
        found = await engine.query(query.text, database=source.database) if query.text else []
        return fingerprints(found, batch)

    def _finish(self, job: str, batch: Batch, run_id: str, outcome: Outcome) -> datetime | None:
        # A window the circuit refused was never sent: an outage must not park every window.
        refused = (job, batch.range.start) in self._refused
        self._refused.discard((job, batch.range.start))
        park_after = None if refused else self.config.scheduler.max_window_attempts
        try:
            return self.store.finish(
                job, batch.windows, run_id=run_id, outcome=outcome, park_after=park_after
            )
        except TierflowError as exc:
            # Our lease expired and another run took the windows over: its outcome stands.
            log_event(
                "window_claim_lost", level=logging.WARNING, job=job, run_id=run_id, error=str(exc)
            )
            return None

    def _report_parked(self, job: str, batch: Batch, fields: dict[str, Any]) -> None:
        parked = [
            entry
            for entry in self.store.entries(job, batch.range.start, batch.range.stop)
            if entry.parked
        ]
        if parked:
            log_event(
                "window_parked",
                level=logging.ERROR,
                windows=len(parked),
                max_window_attempts=self.config.scheduler.max_window_attempts,
                **fields,
            )

    def held_undone(self) -> list[LedgerEntry]:
        """The windows this runner's claims found held by other runs that are still not done
        (as the ledger has them now: who holds them, until when), oldest first per job."""
        found: dict[tuple[str, datetime], LedgerEntry] = {}
        for seen in self.held:
            key = (seen.job, seen.window.start)
            if key in found:
                continue
            now = self.store.entries(seen.job, seen.window.start, seen.window.stop)
            if now and not (now[0].status.done or now[0].parked):
                found[key] = now[0]
        return sorted(found.values(), key=lambda e: (e.job, e.window.start))

    async def run_waiting(
        self, now: datetime, jobs: Iterable[str] | None = None, *, poll: float = 1.0
    ) -> list[BatchRun]:
        """`run_due`, then, while other runs hold windows due at `now`, wait (until the holder
        finishes them, dies, or its lease expires) and run what is still due."""
        runs = await self.run_due(now, jobs)
        while held := self.held_undone():
            self.held.clear()
            leases = [e.lease_expires_at for e in held if e.lease_expires_at is not None]
            until = min(leases, default=self.clock()) - self.clock()
            log_event(
                "waiting_for_held_windows",
                windows=len(held),
                until=_when(min(leases, default=None)),
            )
            await asyncio.sleep(min(poll, max(until.total_seconds(), 0.05)))
            runs += await self.run_due(now, jobs)
        return runs

    def requeue(self, job: str, start: datetime | None = None, stop: datetime | None = None) -> int:
        """Give `job`'s parked windows in `[start, stop)` (all when None) a fresh attempt budget."""
        self._select([job])
        count = self.store.requeue(job, start, stop)
        log_event("windows_requeued", job=job, windows=count)
        return count

    async def _heartbeat(self, job: str, windows: list[Window], run_id: str) -> None:
        """Renew the lease on `windows` (which the run shrinks as it finishes parts of them)."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            if not self.store.renew(
                job, list(windows), run_id=run_id, lease_expires_at=self.clock() + self.lease
            ):
                log_event("lease_lost", level=logging.WARNING, job=job, run_id=run_id)
                return


def select_jobs(config: Config, jobs: Iterable[str] | None) -> list[str]:
    """The named jobs (all when None); UnknownJobError names the first the config lacks."""
    chosen = list(config.jobs) if jobs is None else list(jobs)
    unknown = [job for job in chosen if job not in config.jobs]
    if unknown:
        raise UnknownJobError(
            f"unknown job {unknown[0]!r}; jobs in {config.path}: {', '.join(config.jobs) or 'none'}"
        )
    return chosen


def _until(windows: Iterable[Window], before: datetime) -> Iterator[Window]:
    """The windows of an ordered stream that start before `before`."""
    for window in windows:
        if window.start >= before:
            return
        yield window


def _split_before(
    windows: Iterable[Window], horizon: datetime
) -> tuple[Iterator[Window], list[Window]]:
    """Split an ordered window stream into those starting before `horizon` (listed) and the
    rest (still lazy)."""
    stream = iter(windows)
    before: list[Window] = []
    for window in stream:
        if window.start >= horizon:
            return _prepend(window, stream), before
        before.append(window)
    return iter(()), before


def _prepend(first: Window, rest: Iterator[Window]) -> Iterator[Window]:
    yield first
    yield from rest


def _chunks(windows: Sequence[Window], size: int) -> Iterator[Sequence[Window]]:
    stream = iter(windows)
    while chunk := list(islice(stream, size)):
        yield chunk


def _when(moment: datetime | None) -> str | None:
    return isoformat(moment) if moment else None
