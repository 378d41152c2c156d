"""What decides a job's output, recorded with its ledger, and what happens when it changes.

A job's watermark and ledger say which windows are done *under some definition*. Redefined
under the same name (another dest, `every`, aggregates…), the job would keep them and run only
the windows not yet done: the new output would stay incomplete, silently. So the definition is
recorded with the ledger; `run` and `run-once` refuse a job whose definition changed (exit 2)
until `tierflow reset JOB` forgets its ledger, or the old definition is put back.

What counts: kind, the source and dest tiers as resolved (server URL without credentials,
database/retention policy, org and bucket, or archive URL; not the tier's name), measurements
(a pattern such as `"*"` as written, not what it matches), tag filters, aggregates, `into`, the
schedule (`every` or `cron`, and `start`), and for query jobs the template path, the hash of
its text and `params`. Settings that change how or when windows run but not what they write
(offset, catchup_chunk, parallel_windows, recheck, max_catchup, retries, concurrency, replace,
allow_cross_org) do not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from tierflow._config import (
    Config,
    DownsampleJob,
    QueryJob,
)
from tierflow._durations import format_duration
from tierflow._engines import dialect_for
from tierflow._errors import JobRedefinedError, TemplateError
from tierflow._logging import log_event
from tierflow._runner import select_jobs
from tierflow._state import JobDefinition, StateStore, open_state_store
from tierflow._state._rules import reset_watermark
from tierflow._templates import template_version
from tierflow._validation import Problem
from tierflow._windows import isoformat

__all__ = [
    "Change",
    "DefinitionCheck",
    "JobRedefinedError",
    "ResetPlan",
    "accept_definitions",
    "check_definitions",
    "definition_problems",
    "job_definition",
    "reset_job",
    "summary",
]

#: Before any window a ledger could hold (the stores take microseconds since the epoch).
_BEGINNING = datetime(1, 1, 1, tzinfo=UTC)
_END = datetime(9999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Change:
    """One key of a definition, as recorded (`old`) and as configured now (`new`)."""

    key: str
    old: str
    new: str

    def __str__(self) -> str:
        return f"{self.key}: {self.old} → {self.new}"


@dataclass(frozen=True, slots=True)
class DefinitionCheck:
    """A job's configured definition against the recorded one. `state`: `same`; `changed` (and
    some window is done under the recorded one); `new` (never seen, or no window done yet:
    `changes` then lists what differs from the recorded one); `unrecorded` (a ledger written
    before definitions were recorded)."""

    job: str
    state: Literal["same", "changed", "new", "unrecorded"]
    definition: JobDefinition
    changes: tuple[Change, ...] = ()


def job_definition(config: Config, name: str) -> JobDefinition:
    """The definition of job `name`: canonical JSON of what decides its output."""
    job = config.jobs[name]
    body: dict[str, Any] = {
        "kind": job.kind,
        "source": _tier(config, job.source),
        "dest": _tier(config, job.dest),
        # A pattern as written: the measurements it finds per window are not the definition
        # (a new measurement is picked up, not a redefinition).
        "measurements": job.measurement_pattern or sorted(job.measurements),
        "tags": dict(job.tags),
        "into": job.into,
        "every": format_duration(job.every) if job.every is not None else None,
        "cron": job.cron,
        "start": isoformat(job.start),
    }
    if isinstance(job, DownsampleJob):
        body["aggregates"] = {field: sorted(fns) for field, fns in job.aggregates.items()}
    if isinstance(job, QueryJob):
        path = config.template_path(job)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(
                f"job {name}: template {job.template}: cannot read: {exc}"
            ) from None
        body["template"] = str(job.template)
        body["template_hash"] = template_version(text)
        body["params"] = job.params
    return JobDefinition(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str))


def _tier(config: Config, name: str) -> str:
    """Where a tier's data lives, whatever the tier is called."""
    tier = config.tiers[name]
    if tier.archive is not None:
        return f"archive {_public_url(_archive_url(config, tier.archive))}"
    connection = config.connections[tier.connection]
    url = _public_url(connection.url)
    return dialect_for(connection).describe_place(connection, url, tier)


def _archive_url(config: Config, url: str) -> str:
    from tierflow._archiving import _local_path

    located = _local_path(url, config)
    return located if "://" in located else Path(os.path.abspath(located)).as_uri()


def _public_url(url: str) -> str:
    """The URL without credentials (user:password@), query or fragment: never recorded."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2].lower()
    return urlunsplit((parts.scheme.lower(), host, parts.path.rstrip("/"), "", ""))


def changes(old: JobDefinition, new: JobDefinition) -> tuple[Change, ...]:
    """What differs between two definitions, key by key, in key order."""
    before, after = _fields(old), _fields(new)
    return tuple(
        Change(key, _shown(before.get(key)), _shown(after.get(key)))
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    )


def _fields(definition: JobDefinition) -> Mapping[str, Any]:
    try:
        fields = json.loads(definition.body)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        return {"definition": definition.body}
    return fields


def _shown(value: object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


async def check_definitions(
    config: Config, store: StateStore, jobs: Iterable[str] | None = None
) -> list[DefinitionCheck]:
    """Each chosen job's configured definition against the one its ledger was recorded with."""
    checks = []
    for name in select_jobs(config, jobs):
        now = job_definition(config, name)
        recorded = await store.definition(name)
        if await store.watermark(name) is None:
            # Never registered: no window ran under any definition, so none can be stale.
            checks.append(DefinitionCheck(name, "new", now))
        elif recorded is None:
            checks.append(DefinitionCheck(name, "unrecorded", now))
        elif recorded.body == now.body:
            checks.append(DefinitionCheck(name, "same", now))
        elif not await _has_output(config, store, name):
            # Every window so far failed (a wrong URL, say): no output can be stale.
            checks.append(DefinitionCheck(name, "new", now, changes(recorded, now)))
        else:
            checks.append(DefinitionCheck(name, "changed", now, changes(recorded, now)))
    return checks


async def _has_output(config: Config, store: StateStore, job: str) -> bool:
    """Whether any window of `job` is done (succeeded or skipped) under its recorded definition."""
    spec = config.jobs[job]
    mark = await store.watermark(job)
    # A watermark only passes done windows: past the first window, one is done (the ledger is
    # read only when it is not, which is rare).
    if mark is not None and mark > spec.schedule.first_window(spec.start).start:
        return True
    return any(entry.status.done for entry in await store.entries(job, _BEGINNING))


def refusal(config: Config, check: DefinitionCheck) -> str:
    """Why `run` refuses a redefined job, and the ways forward."""
    listing = "".join(f"\n  {change}" for change in check.changes)
    return (
        f"job {check.job} was redefined since its ledger was recorded:{listing}\n"
        f"its watermark and ledger belong to the old definition, so running it would leave "
        f"the new output incomplete. Either start again: `tierflow reset {check.job}` "
        f"(or `--from TS` to keep the ledger before TS; `--dry-run` says what it would forget; "
        f"no data in InfluxDB or the archive is deleted), or put the old definition back "
        f"in {config.path}"
    )


_NOTES = {
    "new": "first run of this job: its definition is recorded",
    "replaced": "no window is done under the previous definition: nothing to start again",
    "unrecorded": "its ledger was written before definitions were recorded: it is taken to "
    "belong to this definition, so a change made before now cannot be noticed",
}


def summary(check: DefinitionCheck) -> str:
    """One line for `validate`, `plan` and `status`: what changed, and what `run` will do."""
    listing = "; ".join(map(str, check.changes))
    return (
        f"redefined since its ledger was recorded ({listing}); run and run-once refuse it "
        f"until `tierflow reset {check.job}` or the old definition is back"
    )


async def accept_definitions(config: Config, store: StateStore, jobs: Iterable[str] | None) -> None:
    """Before running: refuse (JobRedefinedError, naming every redefined job) if any chosen job's
    definition changed; otherwise record the definitions of jobs seen for the first time, and of
    jobs whose ledger predates recorded definitions (logged: what changed before cannot be told)."""
    checks = await check_definitions(config, store, jobs)
    redefined = [check for check in checks if check.state == "changed"]
    if redefined:
        raise JobRedefinedError(
            "\n".join(refusal(config, check) for check in redefined) + "\nnothing was run"
        )
    for check in checks:
        if (
            check.state in {"new", "unrecorded"}
            and await store.definition(check.job) != check.definition
        ):
            await store.record_definition(check.job, check.definition)
            replaced = "replaced" if check.changes else check.state
            log_event(
                "definition_recorded",
                level=logging.INFO if check.state == "new" else logging.WARNING,
                job=check.job,
                digest=check.definition.digest,
                previous=replaced,
                note=_NOTES[replaced],
                changes=[str(change) for change in check.changes],
            )


@dataclass(frozen=True, slots=True)
class ResetPlan:
    """What `reset` forgets (or forgot): ledger rows of windows from `since` on (every one when
    None), the watermark before and after, and what changed in the definition."""

    job: str
    since: datetime | None
    windows: int
    watermark_before: datetime | None
    watermark_after: datetime | None
    changes: tuple[Change, ...]


async def reset_job(
    config: Config, store: StateStore, job: str, since: datetime | None, *, dry_run: bool
) -> ResetPlan:
    """Forget `job`'s ledger and watermark from the start of the window holding `since` on (all
    of it when None), and record its current definition; with `dry_run`, only say so. Nothing
    in InfluxDB or the archive is touched: the next run writes the windows again."""
    (check,) = await check_definitions(config, store, [job])
    spec = config.jobs[job]
    origin = spec.schedule.first_window(spec.start).start
    if since is not None:
        since = spec.schedule.window_at(since).start
    before = await store.watermark(job)
    after = None if before is None else reset_watermark(before, since, origin)
    # Counted, not listed: a folded range stands for many windows (a year is 525,600 of them).
    census = await store.census(job, since or _BEGINNING, _END)
    count = sum(census.counts.values())
    if not dry_run:
        count = await store.reset(job, check.definition, since=since, origin=origin)
        log_event(
            "job_reset",
            level=logging.WARNING,
            job=job,
            since=isoformat(since) if since else None,
            windows_forgotten=count,
            watermark=isoformat(after) if after else None,
            digest=check.definition.digest,
            changes=[str(change) for change in check.changes],
        )
    return ResetPlan(job, since, count, before, after, check.changes)


async def definition_problems(config: Config) -> list[Problem]:
    """For `validate`: jobs whose definition differs from their ledger's, when the state store
    exists already (validate creates none: it may run where tierflow does not)."""
    store = await asyncio.to_thread(_existing_store, config.state.url)
    if store is None:
        return []
    async with store:
        checks = await check_definitions(config, store)
    return [Problem(summary(check), job=check.job) for check in checks if check.state == "changed"]


def _existing_store(url: str) -> StateStore | None:
    """The SQLite store `url` names if its file exists (None otherwise, or for another store)."""
    if not url.startswith("sqlite:///") or not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    return open_state_store(url)
