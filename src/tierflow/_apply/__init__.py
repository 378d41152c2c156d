"""`tierflow apply`: make the declared tiers real. Creates what is missing, updates what differs,
never deletes; what a tier does not declare is left as the server has it.

- InfluxDB 1.x: the database (`CREATE DATABASE`) and the tier's retention policy with its
  declared `retention` and `shard_duration` (`CREATE` / `ALTER RETENTION POLICY`; a policy made
  for a tier that declares no retention is infinite). A tier whose bucket names no policy
  (`bucket = "db"`) lives in the database's default policy, so that policy's duration is the
  tier's retention: apply makes sure the database exists and, if the tier declares `retention`
  or `shard_duration`, holds the default policy to them. A database apply creates for such a
  tier gets its default policy, `autogen`, made with those values.
- InfluxDB 2.x: the bucket, in the connection's org, with one `expire` retention rule
  (`everySeconds: 0` is infinite).
- Cold tiers: a local archive directory is created and must be writable; an `s3://` archive
  needs nothing made, and is not checked.

Everything is read and checked before anything changes, and any problem refuses the whole apply
(`ApplyRefusedError`, every problem listed): a retention or shard duration below the servers'
one-hour minimum, a shard duration longer than the retention, tiers that share a policy or
bucket but disagree about it, a retention shrinking below what a job reading the tier still
needs — its oldest pending window would expire — unless forced, and a retention shrinking over
data older than the new one (the server would delete it) unless `allow_shrink`: the servers are
asked what that data is (a count of field values and the oldest), and the change says so.

The parts: `_model` (the data passed around), `_plan` (the pure planner), `_admin` (the calls
to the servers, through each connection's dialect, and the filesystem); here, the checks and
the order of the changes. What is planned and sent for each kind of server is its dialect's:
`tierflow._engines.influxql._apply`, `tierflow._engines.flux._apply`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from tierflow._apply._admin import Engines, expiring, observe, send
from tierflow._apply._model import (
    Action,
    ApplyError,
    ApplyRefusedError,
    Change,
    Expiring,
    Observed,
    Shrink,
    show,
)
from tierflow._apply._plan import plan_changes
from tierflow._config import Config, StateConfig
from tierflow._errors import EngineError
from tierflow._logging import log_event
from tierflow._runner import Runner
from tierflow._state import MemoryStateStore, RunStatus, StateStore, open_state_store
from tierflow._windows import Window, isoformat

# What each kind of server holds and is sent (retention policies and statements, buckets) is
# its dialect's, in its engine package (`Dialect.plan_group` and the methods beside it).
__all__ = [
    "Action",
    "ApplyRefusedError",
    "Change",
    "Observed",
    "Shrink",
    "apply_tiers",
    "blocked_shrinks",
    "plan_changes",
]


async def apply_tiers(
    config: Config,
    *,
    now: datetime,
    dry_run: bool = False,
    force: bool = False,
    allow_shrink: bool = False,
    store: StateStore | None = None,
) -> list[Change]:
    """Read what the servers hold, plan, check, and (unless `dry_run`) make the changes; return
    one change per tier, in config order. `force` lets a retention shrink below a job's oldest
    pending window; `allow_shrink` lets it shrink over data the server then deletes (neither
    implies the other). `store` (default: the configured one, opened only if a retention
    shrinks) holds the jobs' ledgers for the pending-window check."""
    engines = Engines(config)
    try:
        changes, problems = plan_changes(config, await observe(config, engines))
        if any(change.shrink for change in changes):
            changes = await _check_expiring(changes, engines, now, allow_shrink, problems)
            blocked = await _blocked(config, changes, now, store)
            if force:
                for message in blocked:
                    log_event("retention_shrink_forced", level=logging.WARNING, problem=message)
            else:
                problems += blocked
        if problems:
            raise ApplyRefusedError(
                f"{config.path}: apply refused, nothing was changed: {len(problems)} problem(s)\n"
                + "\n".join("  " + problem for problem in problems)
            )
        if not dry_run:
            await _execute(changes, engines)
        return changes
    finally:
        await engines.aclose()


async def _check_expiring(
    changes: Sequence[Change],
    engines: Engines,
    now: datetime,
    allow_shrink: bool,
    problems: list[str],
) -> list[Change]:
    """Each shrinking change, told what the server would delete: none, an update saying so;
    some, a shrink (and a problem unless `allow_shrink`). Tiers sharing the place follow."""
    told: dict[str, Change] = {}
    for change in changes:
        if change.shrink is None:
            continue
        found = await expiring(change.shrink, engines, now)
        if not found.count:
            told[change.tier] = replace(change, detail=f"{change.detail} ({found})")
            continue
        told[change.tier] = replace(
            change, action=Action.SHRINK, detail=f"{change.detail}; deletes {found}"
        )
        for tier in change.shrink.tiers[1:]:
            told[tier] = Change(
                tier, Action.SHRINK, f"{found.place}: deletes {found} (as for tier {change.tier})"
            )
        problem = _deletes(change, found)
        if allow_shrink:
            log_event("retention_shrink_allowed", level=logging.WARNING, problem=problem)
        else:
            problems.append(problem)
    return [told.get(change.tier, change) for change in changes]


def _deletes(change: Change, found: Expiring) -> str:
    assert change.shrink is not None
    shrink = change.shrink
    return (
        f"tier {change.tier}: {found.place}: retention {show(shrink.old)} → {show(shrink.new)} "
        f"would delete {found}: InfluxDB drops what is older than now − {show(shrink.new)} "
        "at its next retention checks; declare a retention that keeps it, or pass "
        "--allow-shrink to delete it"
    )


async def _blocked(
    config: Config, changes: Sequence[Change], now: datetime, store: StateStore | None
) -> list[str]:
    ledger = store if store is not None else await asyncio.to_thread(_open_ledger, config.state)
    try:
        runner = Runner(config, ledger)
        shrinking = {tier for change in changes if change.shrink for tier in change.shrink.tiers}
        pending = {
            job: await _oldest_pending(runner, job, now)
            for job, spec in config.jobs.items()
            if spec.source in shrinking
        }
        return blocked_shrinks(config, changes, pending.__getitem__, now)
    finally:
        if store is None:
            await ledger.aclose()


def _open_ledger(state: StateConfig) -> StateStore:
    """The configured state store; an empty one in memory if its SQLite file does not exist yet
    (no job has run: the same answer, and a dry run leaves no state file behind)."""
    url = state.url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return MemoryStateStore()
    return open_state_store(url, password=state.password)


async def _oldest_pending(runner: Runner, job: str, now: datetime) -> Window | None:
    """The job's oldest window not done: due now (what `plan` would run; windows max_catchup
    will skip are not pending), or parked, or running."""
    (plan,) = await runner.plan(now, [job])
    found = [plan.batches[0].windows[0]] if plan.batches else []
    origin = runner.origin(job)
    begin = max(origin, await runner.store.watermark(job) or origin)
    found += [
        entry.window
        for entry in await runner.store.entries(job, begin)
        if entry.parked or entry.status is RunStatus.RUNNING
    ]
    return min(found, default=None)


def blocked_shrinks(
    config: Config,
    changes: Sequence[Change],
    oldest_pending: Callable[[str], Window | None],
    now: datetime,
) -> list[str]:
    """Why each shrinking retention would expire data a job still needs: for every job whose
    source is a shrinking tier, its oldest pending window must start after now − new retention."""
    problems: list[str] = []
    for change in changes:
        if change.shrink is None:
            continue
        shrink, cutoff = change.shrink, now - change.shrink.new
        for job, spec in config.jobs.items():
            if spec.source not in shrink.tiers:
                continue
            window = oldest_pending(job)
            if window is not None and window.start <= cutoff:
                problems.append(
                    f"tier {spec.source}: retention {show(shrink.old)} → {show(shrink.new)} "
                    f"would expire data job {job} still needs: its oldest pending window "
                    f"{window} starts at or before {isoformat(cutoff)} "
                    f"(now − {show(shrink.new)}); let the job catch up first, or pass --force"
                )
    return problems


async def _execute(changes: Sequence[Change], engines: Engines) -> None:
    steps = [(change.tier, step) for change in changes for step in change.steps]
    # Steps marked first (1.x databases) go first: a tier's policy may live in a database
    # another tier's change creates.
    steps.sort(key=lambda item: not item[1].first)
    for done, (tier, step) in enumerate(steps):
        try:
            await send(step, engines)
        except (EngineError, OSError) as exc:
            reason = str(exc) if isinstance(exc, EngineError) else f"{exc.strerror}: {step}"
            raise ApplyError(
                f"tier {tier}: {reason} ({done} of {len(steps)} change(s) were made before "
                "this one; apply again once it is fixed)"
            ) from exc
        log_event("tier_applied", tier=tier, step=str(step))
