"""The rules every state store and the planner share, as pure functions: what a window's state
is, when it is due, whether a claim may take it, and how far the watermark reaches.

Stores hold rows; these functions decide. Keeping them here (not in SQL and Python twice) is what
keeps the SQLite store, the in-memory fake and the planner to one contract.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from tierflow._state._base import LedgerEntry, RunStatus
from tierflow._state._holder import Holder
from tierflow._windows import EPOCH

__all__ = [
    "Gone",
    "Refusal",
    "WindowState",
    "abandon_reason",
    "advance",
    "available_at",
    "refusal",
    "state_of",
]

Gone = Callable[[Holder], bool]
"""Whether a claim's holder is certainly dead (see `holder_gone`)."""


class WindowState(StrEnum):
    """The one state `status` shows for each window between a job's start and now."""

    SUCCEEDED = "succeeded"
    PENDING = "pending"
    RUNNING = "running"
    FAILED = "failed"
    PARKED = "parked"
    SKIPPED = "skipped"


class Refusal(StrEnum):
    """Why a claim did not take a window."""

    #: Running under another run whose lease is live and whose holder is not known dead.
    HELD = "held"
    #: Done (succeeded, skipped) or parked since it was planned: no longer due.
    SETTLED = "settled"


def state_of(status: RunStatus, parked: bool) -> WindowState:
    """The state of a window with a ledger row (a window without one is pending)."""
    if parked:
        return WindowState.PARKED
    if status in {RunStatus.FAILED, RunStatus.ABANDONED}:
        return WindowState.FAILED
    return WindowState(status.value)


def available_at(
    entry: LedgerEntry | None,
    retry_at: Callable[[LedgerEntry], datetime] | None = None,
    *,
    include_held: bool = False,
) -> datetime | None:
    """The instant from which a window may run (None: it needs no run). A running window becomes
    available when its lease expires, or at once with `include_held` (to ask the claim, which
    knows whether its holder is alive, and to report who holds it)."""
    if entry is None:
        return EPOCH
    if entry.status.done or entry.parked:
        return None
    if entry.status is RunStatus.RUNNING:
        return EPOCH if include_held else (entry.lease_expires_at or EPOCH)
    if retry_at is not None and entry.finished_at is not None:
        return retry_at(entry)
    return EPOCH


def refusal(
    entry: LedgerEntry | None, *, run_id: str, at: datetime, force: bool, gone: Gone
) -> Refusal | None:
    """Whether a claim by `run_id` at `at` may take the window (None) or why not. Without
    `force`, only a window still due is taken; with it (backfill, late data) a done or parked
    one too. A live claim of another run is never taken; one whose lease expired, or whose
    holder is dead, is."""
    if entry is None:
        return None
    if entry.status is RunStatus.RUNNING and entry.run_id != run_id:
        expired = entry.lease_expires_at is None or entry.lease_expires_at <= at
        if not expired and not (entry.holder is not None and gone(entry.holder)):
            return Refusal.HELD
    if not force and (entry.status.done or entry.parked):
        return Refusal.SETTLED
    return None


def abandon_reason(entry: LedgerEntry, at: datetime) -> str:
    """What the history says of the attempt a claim at `at` took over from `entry`."""
    if entry.holder is None or entry.lease_expires_at is None or entry.lease_expires_at <= at:
        return "lease expired before the run finished"
    return f"holder {entry.holder} died before the run finished"


def advance(
    mark: datetime, undone: datetime | None, done_stop: Callable[[datetime], datetime | None]
) -> datetime:
    """The new watermark: back to `undone` (a window that did not succeed) if it lies behind,
    then forward over every contiguous done window. `done_stop(start)` is the stop of the done
    window starting at `start`, or None."""
    if undone is not None:
        mark = min(mark, undone)  # a window behind the watermark failed (e.g. a backfill)
    while (stop := done_stop(mark)) is not None:
        mark = stop
    return mark
