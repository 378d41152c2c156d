"""The one loop: claim windows, render, execute, record outcome and watermark together.

`Runner` is what the CLI, the daemon and `apply` hold. It plans with `Planning` (which reads
the store), runs each claimed batch with the executor of its job's kind (`attempt`), and here
claims windows, keeps their lease alive while they run, waits for capacity, and records each
outcome with the watermark.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

from tierflow._clock import Clock, utc_now
from tierflow._config import Config, DownsampleJob
from tierflow._engines import Engine, engine_for
from tierflow._errors import EngineError, StateUnavailableError, TemplateError, TierflowError
from tierflow._gate import Priority
from tierflow._logging import log_event
from tierflow._metrics import Metrics
from tierflow._planner import Batch, coalesce
from tierflow._runner._capacity import Capacity
from tierflow._runner._executors import Attempt, attempt, source_fingerprints
from tierflow._runner._planning import LATE_DATA, Mode, Planning, select_jobs
from tierflow._runner._results import BatchRun, JobPlan, JobStatus
from tierflow._state import Claim, LedgerEntry, Outcome, RunStatus, StateStore
from tierflow._state._holder import this_process
from tierflow._tracing import current_span, finish_window_run, window_run
from tierflow._windows import Window, isoformat

if TYPE_CHECKING:
    from tierflow._archiving import Archives

__all__ = ["Progress", "Runner"]

#: Claims that take windows whatever the ledger says (but never from a live holder).
_FORCED = frozenset({"backfill", LATE_DATA})
_SKIP_CHUNK = 500
#: Waits between tries to record an outcome while the state store cannot be reached.
_FINISH_RETRY_FIRST = 0.5
_FINISH_RETRY_MAX = 5.0
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

    `mode` says how a failed window is retried: `Mode.DAEMON` waits a growing delay (at most
    `retry_delay` once the window is at risk); `Mode.ONCE` (`run-once`, asked for by a person
    or a cron job) retries failed windows at once.
    Once `stopping` is set, or the runner is `retired` (a reloaded config replaced it), no new
    batch starts; those in flight finish.
    """

    config: Config
    store: StateStore
    engines: dict[str, Engine] = field(default_factory=dict)
    clock: Clock = utc_now
    on_progress: Progress | None = None
    metrics: Metrics = field(default_factory=Metrics)
    mode: Mode = Mode.ONCE
    stopping: asyncio.Event | None = None
    #: Look each downsample job's source fields up before its first batch and log
    #: `fields_missing` for fields the source lacks (what `run-once` does).
    check_fields: bool = False
    #: Set when a reloaded config replaces this runner (`tierflow run` on SIGHUP): batches in
    #: flight finish under this runner's config, no new one starts.
    retired: bool = False
    #: Windows this runner's claims found held by another live run (holder, lease): run-once
    #: reports those still undone.
    held: list[LedgerEntry] = field(default_factory=list, init=False, repr=False)
    _planning: Planning = field(init=False, repr=False)
    _fields_checked: set[str] = field(default_factory=set, init=False, repr=False)
    _capacity: Capacity = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._planning = Planning(self.config, self.store, self.metrics)
        self._capacity = Capacity(self.config, self.store)

    def follow(self, previous: Runner) -> None:
        """Take over the capacity gates of `previous` (the runner of the config this one's
        replaces), set to this config's limits: its batches still in flight and this runner's
        new ones share the same slots, so a reload never lets more run than the limits say
        (a lowered limit starts nothing new until those in flight are under it)."""
        self._capacity.inherit(previous._capacity)

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

    @cached_property
    def archives(self) -> Archives:
        from tierflow._archiving import Archives

        return Archives(self.config)

    async def aclose(self) -> None:
        """Close the engines this runner opened (the state store is the caller's)."""
        await asyncio.gather(*(engine.aclose() for engine in self.engines.values()))

    async def __aenter__(self) -> Runner:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def origin(self, job: str) -> datetime:
        """Where a job's first window starts."""
        return self._planning.origin(job)

    # -- planning (reads the store, writes nothing): see `Planning` ------------------------------

    async def plan(self, now: datetime, jobs: Iterable[str] | None = None) -> list[JobPlan]:
        """The due windows of each job at `now`, as batches."""
        return [await self._planning.plan_job(job, now, self.mode) for job in self._select(jobs)]

    async def due_count(self, now: datetime, jobs: Iterable[str] | None = None) -> int:
        """How many windows the chosen jobs have due to run at `now` (not those max_catchup
        skips), counted without planning their batches."""
        return sum([await self._planning.count(job, now, self.mode) for job in self._select(jobs)])

    async def next_wake(self, job: str, now: datetime, mode: Mode | None = None) -> datetime:
        """When the job may next have work: a window closing, a lease expiring, a retry (as
        `mode` retries failed windows; by default the runner's own mode)."""
        return await self._planning.next_wake(job, now, mode or self.mode)

    async def status(self, now: datetime, jobs: Iterable[str] | None = None) -> list[JobStatus]:
        """Where each job stands at `now` (and the lag and pending gauges say so too)."""
        return [await self._planning.status(job, now) for job in self._select(jobs)]

    def backfill_batches(
        self, job: str, start: datetime, stop: datetime, now: datetime
    ) -> list[Batch]:
        """Every window of `job` that overlaps `[start, stop)`, is on or after the job's start and
        is complete at `now` (stop + offset), whatever the ledger says, as batches."""
        return self._planning.backfill_batches(job, start, stop, now)

    def _select(self, jobs: Iterable[str] | None) -> list[str]:
        return select_jobs(self.config, jobs)

    # -- running ----------------------------------------------------------------------------------

    async def run_due(self, now: datetime, jobs: Iterable[str] | None = None) -> list[BatchRun]:
        """Run every window due at `now` for the chosen jobs (all by default)."""
        results = await asyncio.gather(*(self.run_job(job, now) for job in self._select(jobs)))
        return [run for job_runs in results for run in job_runs]

    async def run_job(self, job: str, now: datetime) -> list[BatchRun]:
        """Record the windows `max_catchup` skips, then run the job's due batches. Both are
        planned a page of the ledger at a time as they are taken: memory does not grow with
        the length of the catch-up."""
        horizon = self._planning.horizon(job, now)
        if horizon is not None:
            await self._skip(job, self._planning.due_runs(job, now, self.mode, before=horizon))
        batches = self._planning.batches(job, now, self.mode, since=horizon)
        return await self._execute(
            job, batches, reason="scheduled", before_first=lambda: self._check_fields(job, now)
        )

    async def _check_fields(self, job: str, now: datetime) -> None:
        """Before a job's first batch in this runner (with `check_fields`): log the downsample
        fields its source lacks, once (a lookup, not one per window)."""
        spec = self.config.jobs[job]
        if not self.check_fields or not isinstance(spec, DownsampleJob):
            return
        if job in self._fields_checked:
            return
        self._fields_checked.add(job)
        from tierflow._field_check import warn_missing_fields  # pyarrow: only here

        async with self._capacity.slot(job):
            await warn_missing_fields(
                self.engine_of(job), job, spec, self.config.tiers[spec.source], now=now
            )

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
            for entry in await self.store.entries(job, spec.schedule.window_at(since).start)
            if entry.status is RunStatus.SUCCEEDED
            and entry.fingerprint is not None
            and entry.window.stop > since
        }
        done = sorted(known)
        changed: list[Window] = []
        for batch in coalesce(done, spec.chunk):
            try:
                async with self._capacity.slot(job):
                    current = await source_fingerprints(self, job, batch)
            except (EngineError, TemplateError) as exc:
                log_event("recheck_failed", level=logging.WARNING, job=job, error=str(exc))
                return []
            changed += [w for w in batch.windows if current[w.start] != known[w]]
        if changed:
            log_event("late_data_detected", job=job, windows=len(changed))
            self.metrics.windows_rechecked.labels(job).inc(len(changed))
        return await self._execute(job, list(coalesce(changed, spec.chunk)), reason=LATE_DATA)

    async def _skip(self, job: str, runs: AsyncIterable[Batch]) -> None:
        """Record the windows of `runs` as skipped (those still due), `_SKIP_CHUNK` at a time."""
        run_id = uuid.uuid4().hex
        count, first, last = 0, None, None
        async for chunk in _chunks(runs, _SKIP_CHUNK):
            if first is None:
                await self.store.ensure_job(job, self.origin(job))
                first = chunk[0]
            count, last = count + len(chunk), chunk[-1]
            at = self.clock()
            # Only windows still due: one another run finished or holds since planning is not
            # skipped over its result.
            claim = await self.store.claim(
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
                await self.store.finish(job, claim.taken, run_id=run_id, outcome=outcome)
        if first is None or last is None:
            return
        self.metrics.window_runs.labels(job, RunStatus.SKIPPED.value).inc(count)
        log_event(
            "windows_skipped",
            level=logging.WARNING,
            job=job,
            windows=count,
            window_start=isoformat(first.start),
            window_stop=isoformat(last.stop),
        )

    async def _execute(
        self,
        job: str,
        batches: AsyncIterator[Batch] | Sequence[Batch],
        *,
        reason: str,
        before_first: Callable[[], Awaitable[None]] | None = None,
    ) -> list[BatchRun]:
        """Run batches oldest first, at most `parallel_windows` of them at a time, taking each
        from `batches` only when a worker is free for it (a stream is planned as it goes)."""
        stream = batches if isinstance(batches, AsyncIterator) else _stream(batches)
        try:
            first = await anext(stream, None)
            if first is None:
                return []
            await self.store.ensure_job(job, self.origin(job))
            if before_first is not None:
                await before_first()
            return await self._work(job, first, stream, reason)
        finally:
            if isinstance(stream, AsyncGenerator):
                await stream.aclose()

    async def _work(
        self, job: str, first: Batch, rest: AsyncIterator[Batch], reason: str
    ) -> list[BatchRun]:
        taking = asyncio.Lock()
        waiting: list[Batch] = [first]
        runs: list[BatchRun] = []

        async def take() -> Batch | None:
            async with taking:  # one planner step at a time: the stream is not reentrant
                return waiting.pop() if waiting else await anext(rest, None)

        async def worker() -> None:
            while not (self.retired or (self.stopping is not None and self.stopping.is_set())):
                batch = await take()
                if batch is None:
                    return
                runs.extend(await self._run_batch(job, batch, reason))
                if self.on_progress is not None:
                    self.on_progress(batch.count)

        await asyncio.gather(*(worker() for _ in range(self.config.jobs[job].parallel_windows)))
        return sorted(runs, key=lambda run: run.batch.first.start)

    async def _run_batch(self, job: str, batch: Batch, reason: str) -> list[BatchRun]:
        priority = self._planning.priority(job, batch, self.clock())
        async with self._capacity.slot(job, priority):
            with window_run(
                job=job,
                kind=self.config.jobs[job].kind,
                start=batch.range.start,
                stop=batch.range.stop,
                windows=batch.count,
                reason=reason,
            ) as span:
                try:
                    runs = await self._run_claimed(job, batch, reason, priority)
                except asyncio.CancelledError:
                    finish_window_run(span, status=RunStatus.ABANDONED.value, attempt=None)
                    raise
                failed = [run for run in runs if run.status is not RunStatus.SUCCEEDED]
                finish_window_run(
                    span,
                    # No run: another run holds the windows, or took them over from this one.
                    status=(failed or runs)[0].status.value if runs else "not_run",
                    attempt=max((max(run.attempts) for run in runs), default=None),
                    error=failed[0].error if failed else None,
                )
                return runs

    async def _run_claimed(
        self, job: str, batch: Batch, reason: str, priority: Priority | None = None
    ) -> list[BatchRun]:
        run_id = uuid.uuid4().hex
        current_span().set_attribute("tierflow.run_id", run_id)
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
        claim = await self.store.claim(
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
        lease = _Lease(started_at + self.lease)
        heartbeat = asyncio.create_task(self._heartbeat(job, outstanding, run_id, lease))
        runs: list[BatchRun] = []
        part_fields = fields
        try:
            # Each taken window's attempt number, read once for the claim (not per part).
            attempts = await self._attempts(job, claim.taken)
            # All taken (the usual case): the batch is the one part, else the taken runs are.
            parts = (
                [(batch, claim.taken)]
                if len(claim.taken) == batch.count
                else _parts(claim.taken, self.config.jobs[job].chunk)
            )
            for part, windows in parts:
                tried = _uniform(tuple(attempts[w.start] for w in windows))
                part_fields = fields | {
                    "window_start": isoformat(part.first.start),
                    "window_stop": isoformat(part.stop),
                    "attempt": max(tried),
                }
                run = await self._run_part(
                    job, part, windows, run_id, reason, part_fields, tried, lease
                )
                if run is not None:
                    runs.append(run)
                del outstanding[: part.count]
        except asyncio.CancelledError:
            if not outstanding:
                raise
            await self._finish(
                job,
                outstanding,
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

    async def _attempts(self, job: str, windows: Sequence[Window]) -> dict[datetime, int]:
        """The attempt number of each of `windows` (claimed by this run), by window start."""
        entries = await self.store.entries(job, windows[0].start, windows[-1].stop)
        return {entry.window.start: entry.attempts for entry in entries}

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
        self,
        job: str,
        batch: Batch,
        windows: Sequence[Window],
        run_id: str,
        reason: str,
        fields: dict[str, Any],
        attempts: tuple[int, ...],
        lease: _Lease | None = None,
    ) -> BatchRun | None:
        """Run claimed windows (`batch`, listed in `windows`) as one query and record the
        outcome (None: the claim was lost)."""
        log_event("window_started", level=logging.DEBUG, windows=batch.count, **fields)
        began = time.perf_counter()
        deadline = self.config.scheduler.window_deadline
        try:
            async with asyncio.timeout(deadline.total_seconds()):
                tried = await attempt(self, job, batch, fields)
        except TimeoutError:
            tried = Attempt(error=f"window deadline ({deadline}) exceeded")
        error, query = tried.error, tried.query
        status = RunStatus.FAILED if error else RunStatus.SUCCEEDED
        outcome = Outcome(
            status=status,
            finished_at=self.clock(),
            duration_s=time.perf_counter() - began,
            query_hash=query.hash if query else None,
            template_version=query.template_version if query else None,
            error=error,
            fingerprints=tried.fingerprints,
        )
        # A window the circuit refused was never sent: an outage must not park every window.
        watermark = await self._finish(
            job, windows, run_id, outcome, counts=not tried.refused, lease=lease
        )
        if watermark is None:
            return None  # the claim was lost: the run that took the windows over reports them
        if error:
            await self._report_parked(job, batch, fields)
        self.metrics.window_runs.labels(job, status.value).inc(batch.count)
        self.metrics.window_run_duration.labels(job).observe(outcome.duration_s)
        if status is RunStatus.SUCCEEDED:
            self.metrics.window_last_success.labels(job).set(outcome.finished_at.timestamp())
        log_event(
            f"window_{status.value}",
            level=logging.WARNING if error else logging.INFO,
            windows=batch.count,
            points_written=tried.points_written,
            error=error,
            watermark=isoformat(watermark),
            duration_s=round(outcome.duration_s, 6),
            **fields,
        )
        return BatchRun(job, batch, status, attempts, error, tried.points_written, reason)

    async def _finish(
        self,
        job: str,
        windows: Sequence[Window],
        run_id: str,
        outcome: Outcome,
        *,
        counts: bool = True,
        lease: _Lease | None = None,
    ) -> datetime | None:
        """Record the windows' outcome and move the watermark (None: the claim was lost, or the
        outcome could not be recorded). An attempt that `counts` toward parking parks windows
        out of `max_window_attempts`. While the state store cannot be reached, try again until
        `lease` expires: fencing refuses the outcome if another run took the windows over."""
        park_after = self.config.scheduler.max_window_attempts if counts else None
        # Done windows behind the watermark fold into ledger ranges, but for those `recheck`
        # may still compare fingerprints of: a recheck at `now` reads windows stopping after
        # now - recheck, and these windows were complete (stopped) by now.
        recheck = self.config.jobs[job].recheck
        stop = windows[-1].stop
        keep_from = stop - recheck if recheck else stop
        pause = _FINISH_RETRY_FIRST
        while True:
            try:
                return await self.store.finish(
                    job,
                    windows,
                    run_id=run_id,
                    outcome=outcome,
                    park_after=park_after,
                    compact_before=keep_from,
                )
            except StateUnavailableError as exc:
                left = (lease.expires_at - self.clock()).total_seconds() if lease else 0.0
                if left <= 0:
                    # The windows stay running under this run until their lease expires, then
                    # a run takes them over and runs them again (the run is idempotent).
                    log_event(
                        "window_outcome_unrecorded",
                        level=logging.ERROR,
                        job=job,
                        run_id=run_id,
                        windows=len(windows),
                        error=str(exc),
                    )
                    return None
                log_event(
                    "window_finish_retry",
                    level=logging.WARNING,
                    job=job,
                    run_id=run_id,
                    retry_in_s=round(min(pause, left), 3),
                    error=str(exc),
                )
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, _FINISH_RETRY_MAX)
            except TierflowError as exc:
                # Our lease expired and another run took the windows over: its outcome stands.
                log_event(
                    "window_claim_lost",
                    level=logging.WARNING,
                    job=job,
                    run_id=run_id,
                    error=str(exc),
                )
                return None

    async def _report_parked(self, job: str, batch: Batch, fields: dict[str, Any]) -> None:
        parked = [
            entry
            for entry in await self.store.entries(job, batch.range.start, batch.range.stop)
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

    async def held_undone(self) -> list[LedgerEntry]:
        """The windows this runner's claims found held by other runs that are still not done
        (as the ledger has them now: who holds them, until when), oldest first per job."""
        found: dict[tuple[str, datetime], LedgerEntry] = {}
        for seen in self.held:
            key = (seen.job, seen.window.start)
            if key in found:
                continue
            now = await self.store.entries(seen.job, seen.window.start, seen.window.stop)
            if now and not (now[0].status.done or now[0].parked):
                found[key] = now[0]
        return sorted(found.values(), key=lambda e: (e.job, e.window.start))

    async def run_waiting(
        self, now: datetime, jobs: Iterable[str] | None = None, *, poll: float = 1.0
    ) -> list[BatchRun]:
        """`run_due`, then, while other runs hold windows due at `now`, wait (until the holder
        finishes them, dies, or its lease expires) and run what is still due."""
        runs = await self.run_due(now, jobs)
        while held := await self.held_undone():
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

    async def requeue(
        self, job: str, start: datetime | None = None, stop: datetime | None = None
    ) -> int:
        """Give `job`'s parked windows in `[start, stop)` (all when None) a fresh attempt budget."""
        self._select([job])
        count = await self.store.requeue(job, start, stop)
        log_event("windows_requeued", job=job, windows=count)
        return count

    async def _heartbeat(self, job: str, windows: list[Window], run_id: str, lease: _Lease) -> None:
        """Renew the lease on `windows` (which the run shrinks as it finishes parts of them);
        a renewal the state store could not take is tried again at the next beat."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            until = self.clock() + self.lease
            try:
                held = await self.store.renew(
                    job, list(windows), run_id=run_id, lease_expires_at=until
                )
            except TierflowError as exc:
                log_event(
                    "lease_renew_failed",
                    level=logging.WARNING,
                    job=job,
                    run_id=run_id,
                    lease_expires_at=isoformat(lease.expires_at),
                    error=str(exc),
                )
                continue
            if not held:
                log_event("lease_lost", level=logging.WARNING, job=job, run_id=run_id)
                return
            lease.expires_at = until


@dataclass
class _Lease:
    """When a run's lease on its windows expires, as its last renewal left it."""

    expires_at: datetime


async def _chunks(runs: AsyncIterable[Batch], size: int) -> AsyncIterator[list[Window]]:
    """The windows of `runs`, in lists of `size` (the last maybe shorter)."""
    chunk: list[Window] = []
    async for run in runs:
        rest: Batch | None = run
        while rest is not None:
            part, rest = rest.head(size - len(chunk))
            chunk += part.windows
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _parts(windows: Sequence[Window], chunk: timedelta) -> Iterator[tuple[Batch, Sequence[Window]]]:
    """`windows` (a claim's, in order) coalesced into batches, each with its windows listed."""
    index = 0
    for part in coalesce(windows, chunk):
        yield part, windows[index : index + part.count]
        index += part.count


async def _stream(batches: Iterable[Batch]) -> AsyncGenerator[Batch, None]:
    for batch in batches:
        yield batch


@cache
def _same(attempt: int, count: int) -> tuple[int, ...]:
    return (attempt,) * count


def _uniform(attempts: tuple[int, ...]) -> tuple[int, ...]:
    """`attempts`, shared with every equal tuple when all are one number (the usual case): the
    runs a long catch-up keeps cost a few bytes each."""
    first = attempts[0]
    return _same(first, len(attempts)) if attempts.count(first) == len(attempts) else attempts


def _when(moment: datetime | None) -> str | None:
    return isoformat(moment) if moment else None
