"""What the runner reports: how windows and batches fared, a job's plan and where it stands."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from tierflow._planner import Batch
from tierflow._state import RunStatus
from tierflow._state._holder import Holder
from tierflow._state._rules import WindowState
from tierflow._windows import Window

__all__ = ["BatchRun", "ClaimView", "JobPlan", "JobStatus", "WindowRun"]


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
    """A job's due windows at some instant: the batches that will run them (one query each),
    and the windows that `max_catchup` says to skip, as runs of consecutive windows."""

    job: str
    batches: tuple[Batch, ...]
    skipped: tuple[Batch, ...] = ()

    @property
    def windows(self) -> list[Window]:
        """Every window the batches run, one by one (`window_count` counts them)."""
        return [window for batch in self.batches for window in batch.windows]

    @property
    def window_count(self) -> int:
        """How many windows the batches run."""
        return sum(batch.count for batch in self.batches)

    @property
    def skipped_count(self) -> int:
        """How many windows `max_catchup` skips."""
        return sum(run.count for run in self.skipped)


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
