"""The state-store contract: a durable watermark and run ledger per job.

The ledger holds the latest status of each (job, window start): one row per window, except that
contiguous done windows behind the watermark may be folded into one range row (`LedgerRange`),
which `entries` and `census` read as the windows it stands for. The history keeps each attempt
at a contiguous run of windows claimed together as one row (`Attempt`), for `keep_history`.
The watermark of a job is the stop of the last window such that it and every window before it
succeeded (or was deliberately skipped). Recording an outcome and advancing the watermark happen
in one transaction, so a crash never leaves them disagreeing.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Self

from tierflow._state._holder import Holder, holder_gone
from tierflow._state._worker import Worker
from tierflow._tracing import store_call
from tierflow._windows import Window

__all__ = [
    "DEFAULT_KEEP_HISTORY",
    "Attempt",
    "Census",
    "Claim",
    "ClaimRequest",
    "JobDefinition",
    "LedgerEntry",
    "LedgerRange",
    "Outcome",
    "RunStatus",
    "StateStore",
]


#: How long attempts are kept in the history unless `[state] keep_history` says otherwise.
DEFAULT_KEEP_HISTORY = timedelta(days=90)
#: The store calls a store's own implementation of gets a span each (one per transaction).
_TRACED = (
    "ensure_job",
    "watermark",
    "entries",
    "_claim",
    "renew",
    "finish",
    "requeue",
    "census",
    "history",
    "count_attempts",
    "jobs",
    "definition",
    "record_definition",
    "reset",
    "beat",
    "workers",
)


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABANDONED = "abandoned"
    SKIPPED = "skipped"

    @property
    def done(self) -> bool:
        """Whether the window needs no further run (the watermark may pass it)."""
        return self in {RunStatus.SUCCEEDED, RunStatus.SKIPPED}


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """The current state of one window of one job."""

    job: str
    window: Window
    status: RunStatus
    attempts: int
    run_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    error: str | None
    fingerprint: str | None = None
    parked: bool = False
    #: The attempt count when the window was last re-queued: attempts since then are what count.
    attempt_base: int = 0
    #: The process that claimed the window (None for claims made before tierflow recorded it).
    holder: Holder | None = None


@dataclass(frozen=True, slots=True)
class LedgerRange:
    """Contiguous done windows of one job folded into one ledger row: the windows of length
    `length` from `start` to `stop`, alike in status, attempts, re-queue base and error. It
    stands for those windows' ledger entries (`entries`), with the earliest start and the latest
    finish among them; run ids, holders and fingerprints are not kept (a job with `recheck`
    keeps per-window rows for as long as it compares fingerprints)."""

    job: str
    start: datetime
    stop: datetime
    length: timedelta
    status: RunStatus
    attempts: int
    attempt_base: int
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def count(self) -> int:
        """How many windows the range stands for."""
        return (self.stop - self.start) // self.length

    def index(self, moment: datetime) -> int:
        """The index of the window holding `moment` (may lie outside `[0, count)`)."""
        return (moment - self.start) // self.length

    def window(self, index: int) -> Window:
        start = self.start + index * self.length
        return Window(start, start + self.length)

    def entry(self, index: int) -> LedgerEntry:
        """The ledger entry of the range's window `index`."""
        return LedgerEntry(
            self.job,
            self.window(index),
            self.status,
            self.attempts,
            None,
            self.started_at,
            self.finished_at,
            None,
            self.error,
            attempt_base=self.attempt_base,
        )

    def entries(self, since: datetime, until: datetime | None = None) -> list[LedgerEntry]:
        """The entries of its windows whose start lies in `[since, until)`."""
        first = max(0, -((self.start - since) // self.length))  # ceil((since - start) / length)
        last = (
            self.count if until is None else min(self.count, -((self.start - until) // self.length))
        )
        return [self.entry(index) for index in range(first, last)]

    def within(self, since: datetime, until: datetime) -> int:
        """How many of its windows lie inside `[since, until)` (as `census` counts)."""
        first = max(0, -((self.start - since) // self.length))
        last = min(self.count, (until - self.start) // self.length)
        return max(0, last - first)


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim took: `taken` windows are now the run's; `held` ones (their ledger entries,
    naming holder and lease) another live run holds; `settled` ones were done or parked by
    another run since they were planned. True when every window asked for was taken."""

    taken: tuple[Window, ...] = ()
    held: tuple[LedgerEntry, ...] = ()
    settled: tuple[Window, ...] = ()

    def __bool__(self) -> bool:
        return not self.held and not self.settled


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What a claim asks for: `StateStore.claim`'s arguments, its windows checked distinct."""

    job: str
    windows: tuple[Window, ...]
    run_id: str
    started_at: datetime
    lease_expires_at: datetime
    reason: str = "scheduled"
    holder: Holder | None = None
    force: bool = False
    gone: Callable[[Holder], bool] = holder_gone


@dataclass(frozen=True, slots=True)
class Census:
    """A job's ledger rows in a range, counted by (status, parked), and the running ones in full
    (holder and lease)."""

    counts: Mapping[tuple[RunStatus, bool], int]
    running: tuple[LedgerEntry, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run of some windows ended. `fingerprints` (by window start) describe the source data
    the windows were aggregated from, so a later change (late data) can be noticed."""

    status: RunStatus
    finished_at: datetime
    duration_s: float
    query_hash: str | None = None
    template_version: str | None = None
    error: str | None = None
    fingerprints: Mapping[datetime, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt at a contiguous run of `windows` windows of equal length claimed together
    (attempt `attempt` at each of them), as kept in the history: `window` spans them all."""

    job: str
    window: Window
    attempt: int
    run_id: str
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    query_hash: str | None
    template_version: str | None
    error: str | None
    reason: str = "scheduled"
    windows: int = 1

    def each(self) -> tuple[Window, ...]:
        """The windows the attempt ran, oldest first."""
        length = self.window.length / self.windows
        return tuple(
            Window(self.window.start + i * length, self.window.start + (i + 1) * length)
            for i in range(self.windows)
        )


@dataclass(frozen=True, slots=True)
class JobDefinition:
    """What decides a job's output, kept with its ledger (`tierflow._definitions` makes it):
    `body` is canonical JSON, so two definitions are equal exactly when their bodies are."""

    body: str

    @property
    def digest(self) -> str:
        """The start of the SHA-256 of `body`: a short name for the definition."""
        return hashlib.sha256(self.body.encode()).hexdigest()[:16]


class StateStore(ABC):
    """Durable watermarks, ledger and history. Implementations must be safe to share within one
    process; `SqliteStateStore` also between processes of one host (each claim and finish is one
    `BEGIN IMMEDIATE` transaction), `MemoryStateStore` is for tests.

    Every method is a coroutine, and none may block the event loop while it waits for the
    database (a lock held by another process, the network): lease heartbeats run on the same
    loop. A store is an async context manager (`async with store:` closes it). Each call is one
    transaction that commits or not as a whole, even if the awaiting task is cancelled.
    `tierflow.testing.state_contract` holds the tests every store must pass.

    `keep_history` (a store's constructor argument; None keeps every attempt) is how long
    finished attempts stay in the history, see `finish`."""

    keep_history: timedelta | None = DEFAULT_KEEP_HISTORY

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every store traces alike without a line of its own: each call it implements is
        # wrapped in a `state.<call>` span (inside a window run's trace only, see store_call).
        super().__init_subclass__(**kwargs)
        for name in _TRACED:
            call = cls.__dict__.get(name)
            if call is not None and not getattr(call, "__isabstractmethod__", False):
                setattr(cls, name, store_call(name.lstrip("_"))(call))

    @abstractmethod
    async def ensure_job(self, job: str, origin: datetime) -> datetime:
        """Register `job` with its watermark at `origin` unless known; return its watermark."""

    @abstractmethod
    async def watermark(self, job: str) -> datetime | None:
        """The job's watermark, or None for a job never registered."""

    @abstractmethod
    async def entries(
        self, job: str, since: datetime, until: datetime | None = None
    ) -> list[LedgerEntry]:
        """Ledger rows of `job` whose window starts in `[since, until)`, oldest first."""

    async def claim(
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
        """Mark those of `windows` (distinct) that may be taken as running under `run_id` and
        `holder`, counting an attempt each, in one transaction; return what was taken and what
        not. `reason` (scheduled, backfill, late_data, max_catchup, …) is kept in the history.

        Whether a window may be taken is `_rules.refusal`, judged inside the transaction: not
        one running under another run whose lease is live at `started_at` and whose holder is
        not `gone` (that run may still finish it); without `force`, only windows still due
        (not done or parked, e.g. by a concurrent run since they were planned). The attempt a
        taken-over claim was making is marked abandoned in the history.

        `run_id` is the claim's fencing token: `renew` and `finish` are accepted only from the
        run a window's row names while it runs, so once another run has taken a window over
        (or `reset` forgot it) the late run's `renew` says False and its `finish` raises,
        recording nothing and leaving the watermark alone. A caller must draw a fresh run id
        for each claim (the runner uses a uuid4): a run id used again for a later claim of the
        same window would let an earlier claim's late outcome pass as the later one's.
        """
        if len({window.start for window in windows}) != len(windows):
            raise ValueError("a claim names the same window twice")
        request = ClaimRequest(
            job, tuple(windows), run_id, started_at, lease_expires_at, reason, holder, force, gone
        )
        return await self._claim(request)

    @abstractmethod
    async def _claim(self, request: ClaimRequest) -> Claim:
        """`claim`, in one transaction (a store implements this, `claim` checks and gathers the
        arguments)."""

    @abstractmethod
    async def renew(
        self, job: str, windows: Sequence[Window], *, run_id: str, lease_expires_at: datetime
    ) -> bool:
        """Extend the lease `run_id` holds on `windows`; False if it no longer holds them all."""

    @abstractmethod
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
        """Record `outcome` for windows claimed by `run_id` and advance the watermark over every
        contiguous done window, in one transaction; return the new watermark. A window that did
        not succeed moves the watermark back to it if it was behind. With `park_after`, a failed
        window that has had that many attempts since it was last re-queued is parked: no longer
        due until `requeue`.

        With `compact_before`, the done windows behind the new watermark that stop at or before
        it (and are not running) are folded into `LedgerRange` rows in the same transaction:
        `entries` and `census` read them as before, but their run ids, holders and fingerprints
        are gone (pass the instant from which per-window rows are still needed, e.g. the start
        of a `recheck` period). Attempts that finished `keep_history` before the outcome are
        pruned from the history now and then, but for failures and those whose windows still
        have a per-window row (for a folded window the range row is its record).

        Raise StateError if the claim was lost (another run took the windows over, or they
        were forgotten), recording nothing: a late outcome never overwrites the taker's nor
        moves the watermark.
        """

    @abstractmethod
    async def requeue(
        self, job: str, start: datetime | None = None, stop: datetime | None = None
    ) -> int:
        """Un-park `job`'s parked windows starting in `[start, stop)` (all when None), giving
        each a fresh attempt budget; return how many."""

    @abstractmethod
    async def census(self, job: str, since: datetime, until: datetime) -> Census:
        """`job`'s ledger rows of windows inside `[since, until)`, counted by (status, parked),
        with the running rows in full."""

    @abstractmethod
    async def history(self, job: str, *, limit: int = 50) -> list[Attempt]:
        """The latest attempts at `job`'s windows, newest first (one per contiguous run of
        windows claimed together; an attempt partly finished or taken over is split)."""

    @abstractmethod
    async def count_attempts(self, job: str, *, reason: str) -> int:
        """How many window attempts of `job` ran for `reason` (e.g. late_data re-runs), over the
        history kept."""

    @abstractmethod
    async def jobs(self) -> list[str]:
        """Every registered job."""

    @abstractmethod
    async def definition(self, job: str) -> JobDefinition | None:
        """The definition recorded for `job`; None for a job seen for the first time, or one
        whose ledger was written by a tierflow that recorded no definitions."""

    @abstractmethod
    async def record_definition(self, job: str, definition: JobDefinition) -> None:
        """Record `definition` as the job's (replacing any), leaving ledger and watermark as
        they are."""

    @abstractmethod
    async def reset(
        self,
        job: str,
        definition: JobDefinition,
        *,
        since: datetime | None,
        origin: datetime,
    ) -> int:
        """Forget `job`'s ledger from `since` on (all of it when None) and record `definition`,
        in one transaction; return how many ledger rows were forgotten.

        Rows of windows starting at or after `since` go (windows of ranges counted one by
        one, as `entries` gives them); a registered job's watermark moves
        back to `since` if it was later (to `origin` when `since` is None). The history stays:
        a forgotten window run again continues its attempt numbers, with a fresh attempt budget
        (its earlier attempts do not count towards parking).
        """

    def slot(
        self, scope: str, limit: int, *, lease: timedelta
    ) -> AbstractAsyncContextManager[None]:
        """One of `limit` slots named `scope` (`connection:<name>`, `scheduler`) shared by every
        worker using this store, held until the `async with` block ends; waits while all are
        taken. A worker that stops (SIGSTOP, frozen, cut off) keeps its slots for at most about
        `lease` (`[scheduler] lease`), as it keeps its windows. The runner takes them after its
        own process's gates, always in the same order (connection, then scheduler), so workers
        never wait on each other in a cycle.

        Here: none beyond the process (yields at once), so the caller's process-local gates
        are the limit. Right for the in-memory store and for SQLite, whose state lives on one
        host (several processes on that host sharing a file each keep their own limits).
        `PostgresStateStore` holds them across every worker of its database."""
        if limit < 1:
            raise ValueError(f"a slot scope needs at least one slot, not {limit}")
        return nullcontext()

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections (and any thread the store runs on). The store is not used after."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- workers -------------------------------------------------------------------------------

    @abstractmethod
    async def beat(self, worker: Worker, *, forget_before: datetime | None = None) -> None:
        """Record `worker` as the store now has it (registering it on its first beat; a worker
        is named by its `holder`), in one transaction; with `forget_before`, delete the workers
        whose last beat was before it. A beat never moves a worker's `last_seen` back."""

    @abstractmethod
    async def workers(self, since: datetime) -> list[Worker]:
        """The workers whose last beat was at or after `since`, oldest started first."""
