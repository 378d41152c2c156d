"""The rules every state store and the planner share, as pure functions: what a window's state
is, when it is due, whether a claim may take it, and how far the watermark reaches.

Stores hold rows; these functions decide. Keeping them here (not in SQL and Python twice) is what
keeps the SQLite store, the in-memory fake and the planner to one contract. A store reads a
window's ledger row as a `LedgerEntry` inside its transaction, asks `refusal`, `claimed`,
`finished`, `requeued`, and writes back the entry it is given; a new store (PostgreSQL) does the
same with its own row locks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from enum import StrEnum

from tierflow._state._base import (
    Claim,
    ClaimRequest,
    LedgerEntry,
    LedgerRange,
    Outcome,
    RunStatus,
)
from tierflow._windows import EPOCH, Window

__all__ = [
    "Refusal",
    "Span",
    "WindowState",
    "abandon_reason",
    "advance",
    "available_at",
    "carve",
    "claimed",
    "compact_limit",
    "finished",
    "fold",
    "forget_from",
    "holds",
    "judge_claim",
    "last_attempts",
    "parks",
    "prunable",
    "prune_due",
    "range_entry",
    "refusal",
    "requeued",
    "reset_watermark",
    "spans",
    "split_span",
    "state_of",
]

#: A run of windows in the history: (the windows' span, how many, and the attempt number).
Span = tuple[Window, int, int]
#: How often a store prunes a job's history (by the outcomes' finish times).
PRUNE_EVERY = timedelta(minutes=10)


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


def refusal(entry: LedgerEntry | None, request: ClaimRequest) -> Refusal | None:
    """Whether `request` (a claim by its run at its start) may take the window (None) or why
    not. Without `force`, only a window still due is taken; with it (backfill, late data) a done
    or parked one too. A live claim of another run is never taken; one whose lease expired, or
    whose holder is `gone` (dead), is."""
    if entry is None:
        return None
    if entry.status is RunStatus.RUNNING and entry.run_id != request.run_id:
        expired = entry.lease_expires_at is None or entry.lease_expires_at <= request.started_at
        if not expired and not (entry.holder is not None and request.gone(entry.holder)):
            return Refusal.HELD
    if not request.force and (entry.status.done or entry.parked):
        return Refusal.SETTLED
    return None


def judge_claim(
    request: ClaimRequest,
    entry_of: Callable[[Window], LedgerEntry | None],
    take: Callable[[Window, LedgerEntry | None], None],
) -> Claim:
    """A claim's verdict, window by window, inside the store's transaction: `entry_of(window)`
    reads the window's row, `take(window, row)` takes one `refusal` lets through (the store
    writes the `claimed` row and the new attempt)."""
    taken: list[Window] = []
    held: list[LedgerEntry] = []
    settled: list[Window] = []
    for window in request.windows:
        entry = entry_of(window)
        why = refusal(entry, request)
        if why is Refusal.HELD:
            assert entry is not None
            held.append(entry)
        elif why is Refusal.SETTLED:
            settled.append(window)
        else:
            taken.append(window)
            take(window, entry)
    return Claim(tuple(taken), tuple(held), tuple(settled))


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


def holds(entry: LedgerEntry | None, run_id: str) -> bool:
    """Whether `run_id` still holds the window (its claim was not taken over or finished)."""
    return entry is not None and entry.run_id == run_id and entry.status is RunStatus.RUNNING


def claimed(
    entry: LedgerEntry | None, window: Window, request: ClaimRequest, earlier: int = 0
) -> LedgerEntry:
    """The row of a window `request` took (`refusal` said it may): running under its run, one
    attempt more. A window without a row (new, or forgotten by `reset`) numbers its attempts on
    from `earlier`, the last attempt its history holds, and counts towards parking only those
    after it; a window with a row keeps its re-queue base and its fingerprint."""
    attempts, base = (entry.attempts, entry.attempt_base) if entry else (earlier, earlier)
    return LedgerEntry(
        request.job,
        window,
        RunStatus.RUNNING,
        attempts + 1,
        request.run_id,
        request.started_at,
        None,
        request.lease_expires_at,
        None,
        entry.fingerprint if entry else None,
        parked=False,
        attempt_base=base,
        holder=request.holder,
    )


def parks(status: RunStatus, attempts: int, attempt_base: int, park_after: int | None) -> bool:
    """Whether a window that ended with `status` is parked: it failed, and has had `park_after`
    attempts since it was last re-queued."""
    return (
        status is RunStatus.FAILED
        and park_after is not None
        and attempts - attempt_base >= park_after
    )


def finished(entry: LedgerEntry, outcome: Outcome, park_after: int | None) -> LedgerEntry:
    """The row of a held window once its run ended with `outcome`: the lease released, the
    fingerprint replaced when the outcome has one, parked per `parks`."""
    return replace(
        entry,
        status=outcome.status,
        finished_at=outcome.finished_at,
        lease_expires_at=None,
        error=outcome.error,
        fingerprint=outcome.fingerprints.get(entry.window.start, entry.fingerprint),
        parked=parks(outcome.status, entry.attempts, entry.attempt_base, park_after),
    )


def requeued(entry: LedgerEntry) -> LedgerEntry:
    """A parked window's row once re-queued: due again, with a fresh attempt budget (attempts so
    far no longer count towards parking) and no retry delay."""
    return replace(entry, parked=False, finished_at=None, attempt_base=entry.attempts)


def reset_watermark(mark: datetime, since: datetime | None, origin: datetime) -> datetime:
    """A job's watermark once its ledger from `since` on is forgotten: back to `since` if it was
    later; to `origin` when the whole ledger is (`since` None)."""
    return origin if since is None else min(mark, since)


# -- ranges: contiguous done windows folded into one ledger row -----------------------------------


def compact_limit(mark: datetime, compact_before: datetime | None) -> datetime | None:
    """Done windows stopping at or before this instant may be folded (None: none may): behind
    the watermark, and before the instant from which the caller needs per-window rows."""
    return None if compact_before is None else min(mark, compact_before)


def _single(entry: LedgerEntry) -> LedgerRange:
    return LedgerRange(
        entry.job,
        entry.window.start,
        entry.window.stop,
        entry.window.length,
        entry.status,
        entry.attempts,
        entry.attempt_base,
        entry.error,
        entry.started_at,
        entry.finished_at,
    )


def _key(piece: LedgerRange) -> tuple[object, ...]:
    return (piece.length, piece.status, piece.attempts, piece.attempt_base, piece.error)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def fold(ranges: Iterable[LedgerRange], entries: Iterable[LedgerEntry]) -> list[LedgerRange]:
    """`ranges` and the done, not running `entries` (windows none of the ranges holds) as
    ranges, oldest first: neighbours alike in window length, status, attempts, re-queue base
    and error merged into one."""
    pieces = sorted([*ranges, *map(_single, entries)], key=lambda piece: piece.start)
    folded: list[LedgerRange] = []
    for piece in pieces:
        if not piece.status.done:
            raise ValueError(f"window {piece.start} is {piece.status}: only done windows fold")
        last = folded[-1] if folded else None
        if last is not None and last.stop == piece.start and _key(last) == _key(piece):
            folded[-1] = replace(
                last,
                stop=piece.stop,
                started_at=_earliest(last.started_at, piece.started_at),
                finished_at=_latest(last.finished_at, piece.finished_at),
            )
        else:
            folded.append(piece)
    return folded


def carve(piece: LedgerRange, starts: Collection[datetime]) -> list[LedgerRange]:
    """What is left of `piece` once the windows starting at `starts` (those of them it holds)
    are taken out of it: the runs of windows between them, oldest first."""
    taken = sorted({i for start in starts if 0 <= (i := piece.index(start)) < piece.count})
    left: list[LedgerRange] = []
    begin = 0
    for index in [*taken, piece.count]:
        if index > begin:
            left.append(
                replace(piece, start=piece.window(begin).start, stop=piece.window(index).start)
            )
        begin = index + 1
    return left


def forget_from(piece: LedgerRange, since: datetime | None) -> tuple[LedgerRange | None, int]:
    """What `reset` keeps of `piece` (its windows starting before `since`; None: nothing) and
    how many of its windows it forgets."""
    keep = (
        0 if since is None else min(piece.count, max(0, -((piece.start - since) // piece.length)))
    )
    left = replace(piece, stop=piece.window(keep).start) if keep else None
    return left, piece.count - keep


def range_entry(ranges: Iterable[LedgerRange], start: datetime) -> LedgerEntry | None:
    """The entry of the window starting at `start` if one of `ranges` holds it."""
    for piece in ranges:
        index = piece.index(start)
        if 0 <= index < piece.count and piece.window(index).start == start:
            return piece.entry(index)
    return None


# -- the history: one row per attempt at a contiguous run of windows ------------------------------


def spans(entries: Iterable[LedgerEntry]) -> list[Span]:
    """The history rows of the windows a claim took (their `claimed` entries): one per run of
    adjacent windows of equal length at the same attempt, oldest first."""
    found: list[Span] = []
    for entry in sorted(entries, key=lambda e: e.window.start):
        window = entry.window
        if found:
            span, count, attempt = found[-1]
            if (
                span.stop == window.start
                and attempt == entry.attempts
                and span.length == count * window.length
            ):
                found[-1] = (Window(span.start, window.stop), count + 1, attempt)
                continue
        found.append((window, 1, entry.attempts))
    return found


def split_span(
    span: Window, count: int, chosen: Collection[datetime]
) -> list[tuple[Window, int, bool]]:
    """A history row's `count` windows split into runs of windows whose start is `chosen` or
    not: (span, windows, chosen), oldest first."""
    length = span.length / count
    runs: list[tuple[Window, int, bool]] = []
    for index in range(count):
        start = span.start + index * length
        stop = span.start + (index + 1) * length
        inside = start in chosen
        if runs and runs[-1][2] is inside:
            runs[-1] = (Window(runs[-1][0].start, stop), runs[-1][1] + 1, inside)
        else:
            runs.append((Window(start, stop), 1, inside))
    return runs


def last_attempts(rows: Iterable[Span], starts: Iterable[datetime]) -> dict[datetime, int]:
    """The last attempt the history rows `rows` hold at each window starting at `starts` (0
    for none): a window without a ledger row numbers its attempts on from it."""
    rows = list(rows)
    last: dict[datetime, int] = {}
    for start in starts:
        held = [
            attempt
            for span, count, attempt in rows
            if span.start <= start < span.stop
            and (start - span.start) % (span.length / count) == timedelta(0)
        ]
        last[start] = max(held, default=0)
    return last


def prune_due(last: datetime | None, now: datetime) -> bool:
    """Whether a job's history, last pruned at `last` (None: not by this store), is pruned
    again at an outcome finished at `now`."""
    return last is None or now - last >= PRUNE_EVERY


def prunable(attempt_span: Window, status: RunStatus, ranges: Sequence[LedgerRange]) -> bool:
    """Whether a history row past `keep_history` may go: it succeeded or was skipped, and a
    ledger range (the record of its windows from now on) holds all its windows."""
    return status.done and any(
        piece.start <= attempt_span.start and attempt_span.stop <= piece.stop for piece in ranges
    )
