"""Planning: what each job has due, when it next may, and where it stands. Reads the state
store, writes nothing (but the status gauges and the once-per-window `window_at_risk` log)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from tierflow._config import Config
from tierflow._errors import UnknownJobError
from tierflow._gate import Priority
from tierflow._logging import log_event
from tierflow._metrics import Metrics
from tierflow._planner import (
    Batch,
    Coalescer,
    Timeline,
    coalesce,
    coalesce_runs,
    count_due,
    due_runs,
    next_wake,
    windows_between,
)
from tierflow._runner._results import ClaimView, JobPlan, JobStatus
from tierflow._state import LedgerEntry, RunStatus, StateStore
from tierflow._state._holder import holder_gone
from tierflow._state._rules import WindowState, state_of
from tierflow._windows import Window, isoformat

__all__ = ["LATE_DATA", "PAGE_WINDOWS", "Mode", "Planning", "select_jobs"]

_FAILED = frozenset({RunStatus.FAILED, RunStatus.ABANDONED})
LATE_DATA = "late_data"
#: Planning reads the ledger this many windows' span at a time: what it holds at once.
PAGE_WINDOWS = 4096
#: A chunk no run reaches: runs merged, never cut.
_NEVER_CUT = timedelta.max
#: Beyond any window: the open end of the ledger's last page.
_END = datetime.max.replace(tzinfo=UTC)


class Mode(StrEnum):
    """How a runner treats a window that failed.

    `ONCE` (`run-once`, asked for by a person or a cron job): retry it at once, in this run.
    `DAEMON`: wait a delay doubling per attempt before retrying it (at most `retry_delay` once
    the window is at risk), so an outage is not hammered.
    """

    ONCE = "once"
    DAEMON = "daemon"


@dataclass
class Planning:
    """A config's jobs read against the state store: plans, wake-ups, status and expiry."""

    config: Config
    store: StateStore
    metrics: Metrics
    #: (job, window start) already logged as `window_at_risk`: each is logged once per runner.
    _warned: set[tuple[str, datetime]] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        for job in self.config.jobs:
            self.metrics.declare_job(job)
        for connection in self.config.connections:
            self.metrics.declare_connection(connection)

    def origin(self, job: str) -> datetime:
        """Where a job's first window starts."""
        spec = self.config.jobs[job]
        return spec.schedule.first_window(spec.start).start

    def select(self, jobs: Iterable[str] | None) -> list[str]:
        return select_jobs(self.config, jobs)

    async def plan_job(self, job: str, now: datetime, mode: Mode) -> JobPlan:
        """The job's due windows at `now`, as batches, and those `max_catchup` skips (as runs
        of consecutive windows). A whole plan: the runner streams it instead (`batches`)."""
        horizon = self.horizon(job, now)
        skipped: list[Batch] = []
        if horizon is not None:
            skipped = [run async for run in self.due_runs(job, now, mode, before=horizon)]
        batches = [batch async for batch in self.batches(job, now, mode, since=horizon)]
        # Runs that met at a page's edge are one run: skipping does not cut them.
        return JobPlan(job, tuple(batches), tuple(coalesce_runs(skipped, _NEVER_CUT)))

    def horizon(self, job: str, now: datetime) -> datetime | None:
        """Windows starting before this instant are skipped, not run (None: no `max_catchup`)."""
        spec = self.config.jobs[job]
        return None if spec.max_catchup is None else now - spec.max_catchup

    async def batches(
        self, job: str, now: datetime, mode: Mode, *, since: datetime | None = None
    ) -> AsyncGenerator[Batch, None]:
        """The job's due windows at `now` starting at or after `since`, as the batches that run
        them (one query each, at most `catchup_chunk` long), oldest first, planned a page of
        the ledger at a time as they are taken."""
        coalescer = Coalescer(self.config.jobs[job].chunk)
        async for run in self.due_runs(job, now, mode, since=since):
            for batch in coalescer.add(run):
                yield batch
        for batch in coalescer.close():
            yield batch

    async def due_runs(
        self,
        job: str,
        now: datetime,
        mode: Mode,
        *,
        since: datetime | None = None,
        before: datetime | None = None,
    ) -> AsyncGenerator[Batch, None]:
        """The job's due windows at `now` that start in `[since, before)` (by default from
        where planning starts to the last window complete at `now`), as runs of consecutive
        windows, oldest first. The ledger is read a page (`PAGE_WINDOWS` windows' span) at a
        time as the runs are taken, so a catch-up of any length is planned in bounded memory.

        Windows held by other runs are planned too: the claim judges them (their holder may be
        dead) and reports who holds them, instead of leaving them silently out."""
        spec = self.config.jobs[job]
        begin = await self.begin(job)
        timeline = self.timeline(job, begin, {}, now, mode)
        low = begin if since is None else max(begin, since)
        stop = now - spec.offset if before is None else min(now - spec.offset, before)
        async for first, high, ledger in self._pages(job, low, stop, closed=True):
            for run in due_runs(replace(timeline, ledger=ledger), first, high, include_held=True):
                yield run

    async def count(self, job: str, now: datetime, mode: Mode) -> int:
        """How many windows of the job are due to run at `now` (not those max_catchup skips)."""
        since = self.horizon(job, now)
        return sum([run.count async for run in self.due_runs(job, now, mode, since=since)])

    async def begin(self, job: str) -> datetime:
        """Where planning starts: the watermark, or the job's first window."""
        origin = self.origin(job)
        return max(origin, await self.store.watermark(job) or origin)

    def retry_at(self, entry: LedgerEntry) -> datetime:
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
        if (expiry := self.retention(entry.job)) is not None:
            retention, margin = expiry
            at_risk_from = entry.window.start + retention - margin
            retry_at = min(retry_at, max(at_risk_from, entry.finished_at + scheduler.retry_delay))
        return retry_at

    def retention(self, job: str) -> tuple[timedelta, timedelta] | None:
        """The retention of the job's source tier and its expiry margin (None: data never
        expires there)."""
        tier = self.config.tiers[self.config.jobs[job].source]
        if tier.retention is None:
            return None
        return tier.retention, tier.expiry_margin or max(tier.retention / 10, timedelta(hours=1))

    def priority(self, job: str, batch: Batch, now: datetime) -> Priority:
        """A batch whose oldest window is at risk at `now` (its source data expires within the
        margin, or has expired) asks for capacity by when that data expires; others by turn."""
        expiry = self.retention(job)
        if expiry is None:
            return Priority()
        retention, margin = expiry
        oldest = batch.windows[0].start
        if oldest >= now - retention + margin:
            return Priority()
        return Priority(expires_at=oldest + retention)

    def timeline(
        self,
        job: str,
        begin: datetime,
        ledger: Mapping[datetime, LedgerEntry],
        now: datetime,
        mode: Mode = Mode.ONCE,
    ) -> Timeline:
        """The job's schedule from `begin` read at `now` against `ledger`; in daemon mode a failed
        window waits for its `retry_at`."""
        spec = self.config.jobs[job]
        retry_at = self.retry_at if mode is Mode.DAEMON else None
        return Timeline(spec.schedule, begin, spec.offset, now, ledger, retry_at)

    async def next_wake(self, job: str, now: datetime, mode: Mode) -> datetime:
        """When the job may next have work: a window closing, a lease expiring, a retry."""
        begin = await self.begin(job)
        timeline = self.timeline(job, begin, {}, now, mode)
        wake = next_wake(timeline)
        async for _, _, page in self._pages(job, begin, now):
            wake = min(wake, next_wake(replace(timeline, ledger=page)))
        return wake

    async def _pages(
        self, job: str, low: datetime, until: datetime, *, closed: bool = False
    ) -> AsyncGenerator[tuple[datetime, datetime, dict[datetime, LedgerEntry]], None]:
        """The job's ledger from `low` on, a page (`PAGE_WINDOWS` windows' span) at a time, as
        (low, high, entries of the windows starting in `[low, high)` by start). `closed`: the
        pages end at `until` (none when `low` is not before it); else the last page, the one
        reaching `until`, reaches on to the end of the ledger."""
        page = self.config.jobs[job].schedule.first_window(low).length * PAGE_WINDOWS
        while not closed or low < until:
            last = until - low <= page
            high: datetime | None = low + page
            if last:
                high = until if closed else None
            entries = await self.store.entries(job, low, high)
            yield low, high or _END, {entry.window.start: entry for entry in entries}
            if last:
                return
            low += page

    async def status(self, job: str, now: datetime) -> JobStatus:
        """Where the job stands at `now` (and the lag and pending gauges say so too)."""
        spec = self.config.jobs[job]
        begin = await self.begin(job)
        # Windows that max_catchup will skip are not pending: they will never run.
        counted_from = begin
        if spec.max_catchup is not None:
            horizon = spec.schedule.first_window(now - spec.max_catchup).start
            counted_from = max(begin, horizon)
        counted = self.timeline(job, counted_from, {}, now)
        failed = parked = pending = 0
        expiry = _Expiry(self, job, now, self.timeline(job, begin, {}, now))
        # The ledger beyond the watermark a page at a time: it may hold a long catch-up's rows.
        async for low, high, page in self._pages(job, begin, now):
            failed += sum(e.status in _FAILED for e in page.values())
            parked += sum(e.parked for e in page.values())
            pending += sum(run.count for run in due_runs(replace(counted, ledger=page), low, high))
            expiry.add(low, high, page)
        last = await self.store.history(job, limit=1)
        status = JobStatus(
            job=job,
            watermark=await self.store.watermark(job),
            lag_seconds=max(0.0, (now - begin).total_seconds()),
            last_status=last[0].status if last else None,
            failed_windows=failed,
            pending_windows=pending,
            rechecked_windows=await self.store.count_attempts(job, reason=LATE_DATA),
            parked_windows=parked,
            **expiry.result(),
            **await self._census(job, now),
        )
        self.metrics.windows_at_risk.labels(job).set(status.windows_at_risk)
        self.metrics.watermark_lag.labels(job).set(status.lag_seconds)
        self.metrics.windows_pending.labels(job).set(status.pending_windows)
        self.metrics.windows_parked.labels(job).set(status.parked_windows)
        self.metrics.job_window.labels(job).set(spec.schedule.window_at(now).length.total_seconds())
        self.metrics.job_offset.labels(job).set(spec.offset.total_seconds())
        return status

    async def _census(self, job: str, now: datetime) -> dict[str, Any]:
        """Each window from the job's first to the last complete at `now`, by state."""
        spec = self.config.jobs[job]
        origin = self.origin(job)
        until = now - spec.offset
        total = count_due(self.timeline(job, origin, {}, now))
        census = await self.store.census(job, origin, until)
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

    def backfill_batches(
        self, job: str, start: datetime, stop: datetime, now: datetime
    ) -> list[Batch]:
        """Every window of `job` that overlaps `[start, stop)`, is on or after the job's start and
        is complete at `now` (stop + offset), whatever the ledger says, as batches."""
        self.select([job])
        spec = self.config.jobs[job]
        origin = self.origin(job)
        windows = (
            w
            for w in windows_between(spec.schedule, max(start, origin), stop)
            if w.start >= origin and w.stop + spec.offset <= now
        )
        return list(coalesce(windows, spec.chunk))


class _Expiry:
    """`status`'s windows not yet done whose source data expires within the tier's margin (at
    risk), or has expired already (lost: never silently skipped, always reported), counted a
    page of the ledger at a time; each is logged as `window_at_risk` once per runner."""

    def __init__(self, planning: Planning, job: str, now: datetime, timeline: Timeline) -> None:
        self.planning, self.job, self.timeline = planning, job, timeline
        self.expiry = planning.retention(job)
        self.at_risk = self.lost = 0
        if self.expiry is not None:
            retention, margin = self.expiry
            self.risky_before, self.lost_before = now - retention + margin, now - retention

    def add(self, low: datetime, high: datetime, page: Mapping[datetime, LedgerEntry]) -> None:
        if self.expiry is None or low >= self.risky_before:
            return
        # Due windows, and parked ones: those wait for a person, not for the clock.
        runs = due_runs(replace(self.timeline, ledger=page), low, min(high, self.risky_before))
        for run in runs:
            for window in run.windows:
                self._note(window)
        for entry in page.values():
            if entry.parked and entry.window.start < self.risky_before:
                self._note(entry.window)

    def _note(self, window: Window) -> None:
        assert self.expiry is not None
        lost = window.start < self.lost_before
        self.at_risk += 1
        self.lost += lost
        if (self.job, window.start) not in self.planning._warned:
            self.planning._warned.add((self.job, window.start))
            log_event(
                "window_at_risk",
                level=logging.WARNING,
                job=self.job,
                window_start=isoformat(window.start),
                window_stop=isoformat(window.stop),
                expires_at=isoformat(window.start + self.expiry[0]),
                lost=lost,
            )

    def result(self) -> dict[str, Any]:
        if self.expiry is None:
            return {}
        return {
            "expiry_risk": bool(self.at_risk),
            "windows_at_risk": self.at_risk,
            "windows_lost": self.lost,
        }


def select_jobs(config: Config, jobs: Iterable[str] | None) -> list[str]:
    """The named jobs (all when None); UnknownJobError names the first the config lacks."""
    chosen = list(config.jobs) if jobs is None else list(jobs)
    unknown = [job for job in chosen if job not in config.jobs]
    if unknown:
        raise UnknownJobError(
            f"unknown job {unknown[0]!r}; jobs in {config.path}: {', '.join(config.jobs) or 'none'}"
        )
    return chosen
