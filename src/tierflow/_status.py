"""The status document: what `tierflow status --json` prints and the daemon's `GET /api/status`
serves, built by one function so both say the same for the same state.

Beyond each job's counts it carries what a person looks at first: the job's most recent
windows each in its one state (and whether its source data is about to expire), the latest
errors, and the connections. A connection's circuit breaker lives in the process that talks to
the server, so only the daemon knows it: the daemon passes `circuits`, the CLI (a process of
its own, with no breaker that has seen a request) says `null`.

Nothing secret goes in: URLs are redacted (config refuses credentials in them anyway), secret
sources are not named, tokens never appear.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tierflow._state._rules import WindowState, state_of
from tierflow._url_checks import redact_url
from tierflow._windows import Window, isoformat

if TYPE_CHECKING:
    from tierflow._api import Status
    from tierflow._definitions import DefinitionCheck
    from tierflow._runner import Runner

__all__ = [
    "LAST_ERRORS",
    "RECENT_WINDOWS",
    "definition_json",
    "status_document",
    "workers_json",
]

#: How many of a job's latest complete windows the status shows one by one.
RECENT_WINDOWS = 24
#: How many of a job's latest failed attempts the status shows with their errors.
LAST_ERRORS = 5
#: How many attempts back `status` looks for those failures.
_HISTORY_LOOKED_AT = 50


def when(moment: datetime | None) -> str | None:
    """RFC 3339 text for an instant, None for None."""
    return isoformat(moment) if moment else None


async def status_document(
    runner: Runner,
    jobs: Iterable[str] | None,
    now: datetime,
    *,
    circuits: Mapping[str, str] | None = None,
    definitions: Iterable[DefinitionCheck] | None = None,
) -> dict[str, Any]:
    """The status of `jobs` (all by default) at `now` as JSON-ready data: jobs, workers,
    connections and the state store's (redacted) URL. `circuits`: each connection's circuit
    state as the daemon knows it (None: not known here, each connection says `null`).
    `definitions`: the jobs' definition checks when the caller has them already (read from the
    store otherwise)."""
    from tierflow._api import Status
    from tierflow._definitions import check_definitions
    from tierflow._runner._planning import Mode, select_jobs
    from tierflow._state._worker import SHOWN_FOR

    config, store = runner.config, runner.store
    chosen = select_jobs(config, jobs)
    found = await runner.status(now, chosen)
    status = Status(now, tuple(found), tuple(await store.workers(now - SHOWN_FOR)))
    if definitions is None:
        definitions = await check_definitions(config, store, chosen)
    checks = {c.job: c for c in definitions}
    body = []
    for s in status:
        # When the job next has work: now if windows are pending, else the next wake as a
        # `run-once` would see it (the daemon's retry back-off is its own business).
        wake = now if s.pending_windows else await runner.next_wake(s.job, now, Mode.ONCE)
        body.append(
            {
                "job": s.job,
                "kind": config.jobs[s.job].kind,
                "watermark": when(s.watermark),
                "lag_seconds": s.lag_seconds,
                "last_status": s.last_status.value if s.last_status else None,
                "failed_windows": s.failed_windows,
                "pending_windows": s.pending_windows,
                "rechecked_windows": s.rechecked_windows,
                "parked_windows": s.parked_windows,
                "expiry_risk": s.expiry_risk,
                "windows_at_risk": s.windows_at_risk,
                "windows_lost": s.windows_lost,
                "next_due": when(wake),
                # Every window from the job's start to now, each in one state; who runs which.
                "windows": {str(state): count for state, count in s.window_states.items()},
                "running_windows": len(s.claims),
                "claims": [
                    {
                        "start": when(c.window.start),
                        "stop": when(c.window.stop),
                        "run_id": c.run_id,
                        "holder": (
                            {"host": c.holder.host, "pid": c.holder.pid} if c.holder else None
                        ),
                        "lease_expires_at": when(c.lease_expires_at),
                        "stale": c.stale,
                    }
                    for c in s.claims
                ],
                "recent_windows": await _recent_windows(runner, s.job, now),
                "last_errors": await _last_errors(runner, s.job),
                "definition": definition_json(checks[s.job]),
            }
        )
    connections = [
        {
            "name": name,
            "kind": connection.kind,
            "url": redact_url(connection.url),
            "circuit": None if circuits is None else circuits.get(name, "closed"),
        }
        for name, connection in config.connections.items()
    ]
    return {
        "now": when(now),
        "state": redact_url(config.state.url),
        "jobs": body,
        "workers": workers_json(status),
        "connections": connections,
    }


async def _recent_windows(runner: Runner, job: str, now: datetime) -> list[dict[str, Any]]:
    """The job's latest `RECENT_WINDOWS` windows complete at `now`, oldest first, each in the
    one state `status` counts it in, `at_risk` when it is not done and its source data expires
    within the tier's margin (or has expired)."""
    spec = runner.config.jobs[job]
    origin = spec.schedule.first_window(spec.start).start
    windows = _latest_windows(runner, job, now - spec.offset, origin)
    if not windows:
        return []
    entries = {
        e.window.start: e
        for e in await runner.store.entries(job, windows[0].start, windows[-1].stop)
    }
    tier = runner.config.tiers[spec.source]
    risky_before: datetime | None = None
    if tier.retention is not None:
        margin = tier.expiry_margin or max(tier.retention / 10, timedelta(hours=1))
        risky_before = now - tier.retention + margin
    shown = []
    for window in windows:
        entry = entries.get(window.start)
        state = state_of(entry.status, entry.parked) if entry else WindowState.PENDING
        done = state in {WindowState.SUCCEEDED, WindowState.SKIPPED}
        shown.append(
            {
                "start": when(window.start),
                "stop": when(window.stop),
                "state": state.value,
                "at_risk": bool(
                    not done and risky_before is not None and window.start < risky_before
                ),
                "attempts": entry.attempts if entry else 0,
                "error": entry.error if entry and not done else None,
            }
        )
    return shown


def _latest_windows(runner: Runner, job: str, until: datetime, origin: datetime) -> list[Window]:
    """Up to `RECENT_WINDOWS` windows of the job stopping at or before `until` and starting at
    or after `origin`, oldest first (a cron schedule's windows differ in length: step back one
    window at a time)."""
    schedule = runner.config.jobs[job].schedule
    window = schedule.window_at(until)
    if window.stop > until:
        window = schedule.window_at(window.start - timedelta(microseconds=1))
    latest: list[Window] = []
    while len(latest) < RECENT_WINDOWS and window.start >= origin:
        latest.append(window)
        window = schedule.window_at(window.start - timedelta(microseconds=1))
    return latest[::-1]


async def _last_errors(runner: Runner, job: str) -> list[dict[str, Any]]:
    """The job's latest `LAST_ERRORS` failed attempts, newest first, with their errors."""
    attempts = await runner.store.history(job, limit=_HISTORY_LOOKED_AT)
    return [
        {
            "start": when(a.window.start),
            "stop": when(a.window.stop),
            "windows": a.windows,
            "attempt": a.attempt,
            "status": a.status.value,
            "finished_at": when(a.finished_at),
            "error": a.error,
        }
        for a in attempts
        if a.error
    ][:LAST_ERRORS]


def workers_json(status: Status) -> list[dict[str, Any]]:
    """The workers `status` found, for `--json` and the table: each one's process, version,
    state at `now`, beats, jobs, and how many running windows of the shown jobs it holds."""
    held = Counter(c.holder for job in status.jobs for c in job.claims if c.holder)
    return [
        {
            "id": w.id,
            "host": w.holder.host,
            "pid": w.holder.pid,
            "version": w.version,
            "state": w.state(status.now).value,
            "started_at": when(w.started_at),
            "last_seen": when(w.last_seen),
            "stopped_at": when(w.stopped_at),
            "jobs": list(w.jobs),
            "running_windows": held[w.holder],
        }
        for w in status.workers
    ]


def definition_json(check: DefinitionCheck) -> dict[str, Any]:
    """The `definition` field of `plan --json` and `status --json`."""
    return {
        "state": check.state,
        "digest": check.definition.digest,
        "changes": [{"key": c.key, "old": c.old, "new": c.new} for c in check.changes],
    }
