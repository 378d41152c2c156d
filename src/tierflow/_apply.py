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
bucket but disagree about it, and a retention shrinking below what a job reading the tier still
needs — its oldest pending window would expire — unless forced.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from tierflow._config import Config, InfluxDB1Connection, InfluxDB2Connection, TierConfig
from tierflow._durations import format_duration
from tierflow._engines._influxql import InfluxQLEngine
from tierflow._errors import EngineError, TierflowError
from tierflow._logging import log_event
from tierflow._runner import Runner
from tierflow._state import MemoryStateStore, RunStatus, StateStore, open_state_store
from tierflow._templates import influxql_ident
from tierflow._windows import Window, isoformat

if TYPE_CHECKING:
    from tierflow._engines._flux import FluxEngine

__all__ = [
    "MIN_RETENTION",
    "Action",
    "ApplyError",
    "ApplyRefusedError",
    "Bucket",
    "Change",
    "CreateBucket",
    "Directory",
    "MakeDirectory",
    "Observed",
    "Policy",
    "Shrink",
    "Statement",
    "UpdateBucket",
    "apply_tiers",
    "blocked_shrinks",
    "parse_go_duration",
    "plan_changes",
]

#: The shortest retention (and, on 1.x, shard duration) InfluxDB accepts: 1.x refuses a shorter
#: policy ("retention policy duration must be at least 1h0m0s", seen on 1.6.7) and raises a
#: shorter shard duration to 1h on its own; the 2.x docs give the same minimum for buckets.
MIN_RETENTION = timedelta(hours=1)
AUTOGEN = "autogen"


class ApplyRefusedError(TierflowError):
    """Apply will not run as declared; nothing was changed. The message lists every reason."""


class ApplyError(TierflowError):
    """A change failed part-way; those before it were made (apply again once it is fixed)."""


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    NONE = "none"


# -- what apply sends ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Statement:
    """An InfluxQL statement for a 1.x connection; database creations are sent first."""

    connection: str
    text: str
    creates_database: bool = False


@dataclass(frozen=True, slots=True)
class CreateBucket:
    connection: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UpdateBucket:
    connection: str
    bucket_id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MakeDirectory:
    path: Path


Step = Statement | CreateBucket | UpdateBucket | MakeDirectory


@dataclass(frozen=True, slots=True)
class Shrink:
    """A retention about to get shorter: jobs reading `tiers` must not need data older than
    `new` (`old` None: it was infinite)."""

    tiers: tuple[str, ...]
    old: timedelta | None
    new: timedelta


@dataclass(frozen=True, slots=True)
class Change:
    """What apply does (or would do) for one tier. Tiers that share a policy or bucket each get
    a change; the first of them in the config carries the steps."""

    tier: str
    action: Action
    detail: str
    steps: tuple[Step, ...] = ()
    shrink: Shrink | None = None

    def as_json(self) -> dict[str, str]:
        return {"tier": self.tier, "action": self.action.value, "detail": self.detail}


# -- what the servers hold -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    """A 1.x retention policy as `SHOW RETENTION POLICIES` reports it (`duration` None:
    infinite)."""

    name: str
    duration: timedelta | None
    shard: timedelta
    default: bool


@dataclass(frozen=True, slots=True)
class Bucket:
    """A 2.x bucket's ID and retention rule (None: infinite, or no shard group duration)."""

    id: str
    retention: timedelta | None
    shard: timedelta | None


@dataclass(frozen=True, slots=True)
class Directory:
    """A cold tier's archive location: `path` None for an object store."""

    url: str
    path: Path | None
    exists: bool = False
    problem: str | None = None


@dataclass
class Observed:
    """What the servers and the filesystem hold, as far as the declared tiers go. A database or
    bucket mapped to None is missing; an org mapped to None is unknown to its server."""

    databases: dict[tuple[str, str], dict[str, Policy] | None] = field(default_factory=dict)
    orgs: dict[str, str | None] = field(default_factory=dict)
    buckets: dict[tuple[str, str], Bucket | None] = field(default_factory=dict)
    directories: dict[str, Directory] = field(default_factory=dict)


# -- apply ---------------------------------------------------------------------------------------


async def apply_tiers(
    config: Config,
    *,
    now: datetime,
    dry_run: bool = False,
    force: bool = False,
    store: StateStore | None = None,
) -> list[Change]:
    """Read what the servers hold, plan, check, and (unless `dry_run`) make the changes; return
    one change per tier, in config order. `store` (default: the configured one, opened only if
    a retention shrinks) holds the jobs' ledgers for the shrink check."""
    engines = _Engines(config)
    try:
        changes, problems = plan_changes(config, await observe(config, engines))
        if any(change.shrink for change in changes):
            blocked = _blocked(config, changes, now, store)
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


def _blocked(
    config: Config, changes: Sequence[Change], now: datetime, store: StateStore | None
) -> list[str]:
    ledger = store if store is not None else _open_ledger(config.state.url)
    try:
        runner = Runner(config, ledger)
        return blocked_shrinks(config, changes, lambda job: _oldest_pending(runner, job, now), now)
    finally:
        if store is None:
            ledger.close()


def _open_ledger(url: str) -> StateStore:
    """The configured state store; an empty one in memory if its SQLite file does not exist yet
    (no job has run: the same answer, and a dry run leaves no state file behind)."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return MemoryStateStore()
    return open_state_store(url)


def _oldest_pending(runner: Runner, job: str, now: datetime) -> Window | None:
    """The job's oldest window not done: due now (what `plan` would run; windows max_catchup
    will skip are not pending), or parked, or running."""
    (plan,) = runner.plan(now, [job])
    found = [plan.batches[0].windows[0]] if plan.batches else []
    origin = runner.origin(job)
    begin = max(origin, runner.store.watermark(job) or origin)
    found += [
        entry.window
        for entry in runner.store.entries(job, begin)
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
                    f"tier {spec.source}: retention {_show(shrink.old)} → {_show(shrink.new)} "
                    f"would expire data job {job} still needs: its oldest pending window "
                    f"{window} starts at or before {isoformat(cutoff)} "
                    f"(now − {_show(shrink.new)}); let the job catch up first, or pass --force"
                )
    return problems


async def _execute(changes: Sequence[Change], engines: _Engines) -> None:
    steps = [(change.tier, step) for change in changes for step in change.steps]
    # Databases first: a tier's policy may live in a database another tier's change creates.
    steps.sort(key=lambda item: not (isinstance(item[1], Statement) and item[1].creates_database))
    for done, (tier, step) in enumerate(steps):
        try:
            await _send(step, engines)
        except (EngineError, OSError) as exc:
            reason = str(exc) if isinstance(exc, EngineError) else f"{exc.strerror}: {step}"
            raise ApplyError(
                f"tier {tier}: {reason} ({done} of {len(steps)} change(s) were made before "
                "this one; apply again once it is fixed)"
            ) from exc
        log_event("tier_applied", tier=tier, step=str(step))


async def _send(step: Step, engines: _Engines) -> None:
    match step:
        case Statement(connection, text):
            await engines.influxql(connection).query(text)
        case CreateBucket(connection, body):
            await engines.flux(connection).create_bucket(body)
        case UpdateBucket(connection, bucket_id, body):
            await engines.flux(connection).update_bucket(bucket_id, body)
        case MakeDirectory(path):
            path.mkdir(parents=True, exist_ok=True)


class _Engines:
    """One bare engine per connection (no retry layer: apply is run by a person, who can run it
    again), closed together."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._influxql: dict[str, InfluxQLEngine] = {}
        self._flux: dict[str, FluxEngine] = {}

    def influxql(self, name: str) -> InfluxQLEngine:
        if name not in self._influxql:
            connection = self.config.connections[name]
            assert isinstance(connection, InfluxDB1Connection)
            self._influxql[name] = InfluxQLEngine(name, connection)
        return self._influxql[name]

    def flux(self, name: str) -> FluxEngine:
        if name not in self._flux:
            from tierflow._engines._flux import FluxEngine

            connection = self.config.connections[name]
            assert isinstance(connection, InfluxDB2Connection)
            self._flux[name] = FluxEngine(name, connection)
        return self._flux[name]

    async def aclose(self) -> None:
        for engine in [*self._influxql.values(), *self._flux.values()]:
            await engine.aclose()


# -- observing (reads only) ----------------------------------------------------------------------


async def observe(config: Config, engines: _Engines) -> Observed:
    """Ask each server (and the filesystem) about every declared tier; change nothing."""
    observed = Observed()
    existing: dict[str, set[str]] = {}
    for connection, database in _groups(config, "influxdb1"):
        engine = engines.influxql(connection)
        if connection not in existing:
            existing[connection] = await _databases(engine)
        observed.databases[(connection, database)] = (
            await _policies(engine, database) if database in existing[connection] else None
        )
    for connection, name in _groups(config, "influxdb2"):
        flux = engines.flux(connection)
        if connection not in observed.orgs:
            observed.orgs[connection] = await flux.org_id()
        org_id = observed.orgs[connection]
        if org_id is not None:
            found = await flux.find_bucket(name, org_id)
            observed.buckets[(connection, name)] = _bucket(found) if found else None
    for name, tier in config.tiers.items():
        if tier.archive is not None:
            observed.directories[name] = _directory(tier.archive, config)
    return observed


async def _databases(engine: InfluxQLEngine) -> set[str]:
    return {str(row[0]) for s in await engine.query("SHOW DATABASES") for row in s.values}


async def _policies(engine: InfluxQLEngine, database: str) -> dict[str, Policy]:
    policies: dict[str, Policy] = {}
    for series in await engine.query(f"SHOW RETENTION POLICIES ON {influxql_ident(database)}"):
        for values in series.values:
            row = dict(zip(series.columns, values, strict=False))
            try:
                duration = parse_go_duration(str(row["duration"]))
                shard = parse_go_duration(str(row["shardGroupDuration"])) or timedelta(0)
            except (KeyError, ValueError) as exc:
                raise EngineError(
                    f"connection {engine.name}: unexpected SHOW RETENTION POLICIES row {values}"
                ) from exc
            name = str(row["name"])
            policies[name] = Policy(name, duration, shard, bool(row.get("default")))
    return policies


def _bucket(found: Mapping[str, Any]) -> Bucket:
    rules = [r for r in found.get("retentionRules") or () if isinstance(r, dict)]
    rule = next((r for r in rules if r.get("type", "expire") == "expire"), {})
    every = int(rule.get("everySeconds") or 0)
    shard = int(rule.get("shardGroupDurationSeconds") or 0)
    return Bucket(
        str(found.get("id", "")),
        timedelta(seconds=every) if every else None,
        timedelta(seconds=shard) if shard else None,
    )


def _directory(url: str, config: Config) -> Directory:
    if url.startswith("s3://"):
        return Directory(url, None)
    if url.startswith("file:"):
        parts = urlsplit(url)
        if parts.netloc not in {"", "localhost"} or not parts.path.startswith("/"):
            return Directory(url, None, problem=f"archive {url!r}: use file:///absolute/path")
        path = Path(unquote(parts.path))
    elif "://" in url:
        return Directory(url, None, problem=f"archive {url!r}: not a path, file:// or s3:// URL")
    else:
        # Relative to the config file, as the archive jobs read it.
        path = Path(url) if url.startswith("/") else config.path.parent / url
    if path.exists():
        if not path.is_dir():
            return Directory(url, path, problem=f"archive {path} exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            return Directory(url, path, problem=f"archive directory {path} is not writable")
        return Directory(url, path, exists=True)
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return Directory(
            url, path, problem=f"archive directory {path} cannot be made: {parent} is not writable"
        )
    return Directory(url, path)


# -- planning (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Want:
    """What the tiers on one policy or bucket declare (None: not declared, left as it is)."""

    retention: timedelta | None
    shard: timedelta | None


Members = list[tuple[str, TierConfig]]


def plan_changes(config: Config, observed: Observed) -> tuple[list[Change], list[str]]:
    """One change per tier, in config order, and the problems that forbid applying them."""
    problems = _check_values(config)
    changes: dict[str, Change] = {}
    for (connection, database), members in _groups(config, "influxdb1").items():
        policies = observed.databases[(connection, database)]
        changes |= _plan_database(connection, database, members, policies, problems)
    for (connection, name), members in _groups(config, "influxdb2").items():
        spec = config.connections[connection]
        org = spec.org if isinstance(spec, InfluxDB2Connection) else ""
        org_id = observed.orgs[connection]
        label = f'bucket "{name}" in org "{org}"'
        if org_id is None:
            problems.append(
                f"connection {connection}: the server has no org {org!r} (apply makes buckets, "
                "not orgs)"
            )
            changes |= {tier: Change(tier, Action.NONE, label) for tier, _ in members}
            continue
        current = observed.buckets[(connection, name)]
        changes |= _plan_bucket(connection, org_id, label, name, members, current, problems)
    for tier, directory in observed.directories.items():
        changes[tier] = _plan_directory(tier, directory, problems)
    return [changes[tier] for tier in config.tiers if tier in changes], problems


def _groups(config: Config, kind: str) -> dict[tuple[str, str], Members]:
    """Live tiers of connections of `kind`, by (connection, database) on 1.x and by
    (connection, bucket) on 2.x, in config order."""
    groups: dict[tuple[str, str], Members] = {}
    for name, tier in config.tiers.items():
        if tier.is_archive or config.connections[tier.connection].kind != kind:
            continue
        where = tier.database if kind == "influxdb1" else tier.bucket
        groups.setdefault((tier.connection, where), []).append((name, tier))
    return groups


def _check_values(config: Config) -> list[str]:
    problems: list[str] = []
    for name, tier in config.tiers.items():
        if tier.is_archive:
            continue
        kind = config.connections[tier.connection].kind
        values = [("retention", tier.retention)]
        if kind == "influxdb1":
            values.append(("shard_duration", tier.shard_duration))
        for key, value in values:
            if value is not None and value < MIN_RETENTION:
                problems.append(
                    f"tier {name}: {key} {_show(value)} is below the server's minimum of 1h"
                )
        for key, value in [("retention", tier.retention), ("shard_duration", tier.shard_duration)]:
            if value is not None and value % timedelta(seconds=1):
                problems.append(f"tier {name}: {key} {_show(value)} is not whole seconds")
        if tier.retention and tier.shard_duration and tier.shard_duration > tier.retention:
            problems.append(
                f"tier {name}: shard_duration {_show(tier.shard_duration)} is longer than "
                f"retention {_show(tier.retention)}"
            )
    return problems


def _plan_database(
    connection: str,
    database: str,
    members: Members,
    policies: dict[str, Policy] | None,
    problems: list[str],
) -> dict[str, Change]:
    """The changes for the tiers of one 1.x database (`policies` None: it does not exist)."""
    changes: dict[str, Change] = {}
    groups: dict[str, Members] = {}
    default = AUTOGEN if policies is None else _default_policy(policies)
    for tier, spec in members:
        policy = spec.retention_policy or default
        if policy is None:
            if spec.retention is not None or spec.shard_duration is not None:
                problems.append(
                    f"tier {tier}: database {database!r} has no default retention policy to hold "
                    "to the declared values; name a policy in bucket (database/policy)"
                )
            detail = f'database "{database}" exists; it has no default retention policy'
            changes[tier] = Change(tier, Action.NONE, detail)
            continue
        groups.setdefault(policy, []).append((tier, spec))
    for policy, group in groups.items():
        label = f'retention policy "{database}"."{policy}"'
        want = _agree(label, group, problems)
        tiers = tuple(tier for tier, _ in group)
        if policies is None and policy == AUTOGEN:
            change = _create_database(connection, database, want, tiers[0])
        elif policies is None or policy not in policies:
            change = _create_policy(connection, database, policy, want, tiers[0])
        else:
            change = _alter_policy(connection, database, policies[policy], want, tiers, problems)
        changes |= _shared(change, tiers)
    if policies is not None or AUTOGEN in groups:
        return changes
    # A new database none of whose tiers lives in its default policy: the server makes that one.
    first = members[0][0]
    create = Statement(connection, f"CREATE DATABASE {influxql_ident(database)}", True)
    change = changes[first]
    changes[first] = replace(
        change, detail=f'database "{database}", {change.detail}', steps=(create, *change.steps)
    )
    return changes


def _default_policy(policies: Mapping[str, Policy]) -> str | None:
    return next((p.name for p in policies.values() if p.default), None)


def _shared(change: Change, tiers: Sequence[str]) -> dict[str, Change]:
    """`change` for the first tier; the others on the same policy or bucket point at it."""
    changes = {tiers[0]: change}
    for tier in tiers[1:]:
        changes[tier] = Change(tier, change.action, f"{change.detail} (as for tier {tiers[0]})")
    return changes


def _agree(label: str, group: Members, problems: list[str]) -> _Want:
    values: dict[str, timedelta | None] = {}
    for key in ("retention", "shard_duration"):
        declared = [(t, getattr(s, key)) for t, s in group if getattr(s, key) is not None]
        if len({value for _, value in declared}) > 1:
            listing = ", ".join(f"tier {t} says {_show(value)}" for t, value in declared)
            problems.append(f"{label}: its tiers disagree about {key}: {listing}")
        values[key] = declared[0][1] if declared else None
    return _Want(values["retention"], values["shard_duration"])


def _create_database(connection: str, database: str, want: _Want, tier: str) -> Change:
    clauses = [f"DURATION {_show(want.retention)}"] if want.retention else []
    if want.shard:
        clauses.append(f"SHARD DURATION {_show(want.shard)}")
    clauses.append(f"NAME {influxql_ident(AUTOGEN)}")
    text = f"CREATE DATABASE {influxql_ident(database)} WITH {' '.join(clauses)}"
    detail = f'database "{database}", default retention policy "{AUTOGEN}": {_wanted(want)}'
    return Change(tier, Action.CREATE, detail, (Statement(connection, text, True),))


def _create_policy(connection: str, database: str, policy: str, want: _Want, tier: str) -> Change:
    text = (
        f"CREATE RETENTION POLICY {influxql_ident(policy)} ON {influxql_ident(database)} "
        f"DURATION {_show(want.retention) if want.retention else 'INF'} REPLICATION 1"
    )
    if want.shard:
        text += f" SHARD DURATION {_show(want.shard)}"
    detail = f'retention policy "{database}"."{policy}": {_wanted(want)}'
    return Change(tier, Action.CREATE, detail, (Statement(connection, text),))


def _alter_policy(
    connection: str,
    database: str,
    current: Policy,
    want: _Want,
    tiers: tuple[str, ...],
    problems: list[str],
) -> Change:
    label = f'retention policy "{database}"."{current.name}"'
    clauses, said = [], []
    duration = current.duration
    if want.retention is not None and want.retention != current.duration:
        duration = want.retention
        clauses.append(f"DURATION {_show(want.retention)}")
        said.append(f"duration {_show(current.duration)} → {_show(want.retention)}")
    shard = want.shard
    if shard is None and duration is not None and duration < current.shard:
        # 1.x refuses a duration shorter than the shard duration: take its own default for it.
        shard = _default_shard(duration)
    if want.retention is None and shard is not None and duration is not None and shard > duration:
        problems.append(
            f"{label}: shard_duration {_show(shard)} is longer than its duration "
            f"{_show(duration)}; declare a retention too"
        )
    if shard is not None and shard != current.shard:
        clauses.append(f"SHARD DURATION {_show(shard)}")
        said.append(f"shard duration {_show(current.shard)} → {_show(shard)}")
    if not clauses:
        detail = (
            f"{label}: duration {_show(current.duration)}, shard duration {_show(current.shard)}"
        )
        return Change(tiers[0], Action.NONE, detail)
    text = (
        f"ALTER RETENTION POLICY {influxql_ident(current.name)} ON {influxql_ident(database)} "
        + " ".join(clauses)
    )
    return Change(
        tiers[0],
        Action.UPDATE,
        f"{label}: {', '.join(said)}",
        (Statement(connection, text),),
        _shrink(tiers, current.duration, want.retention),
    )


def _default_shard(duration: timedelta) -> timedelta:
    """The shard group duration 1.x gives a policy of `duration` when none is named (its
    `shardGroupDuration`: under two days an hour, under six months a day, else a week)."""
    if duration < timedelta(days=2):
        return timedelta(hours=1)
    if duration < timedelta(days=180):
        return timedelta(days=1)
    return timedelta(days=7)


def _shrink(tiers: tuple[str, ...], old: timedelta | None, new: timedelta | None) -> Shrink | None:
    if new is None or (old is not None and new >= old):
        return None
    return Shrink(tiers, old, new)


def _plan_bucket(
    connection: str,
    org_id: str,
    label: str,
    name: str,
    members: Members,
    current: Bucket | None,
    problems: list[str],
) -> dict[str, Change]:
    want = _agree(label, members, problems)
    tiers = tuple(tier for tier, _ in members)
    if current is None:
        body = {
            "orgID": org_id,
            "name": name,
            "retentionRules": [_rule(want.retention, want.shard)],
        }
        change = Change(
            tiers[0],
            Action.CREATE,
            f"{label}: {_wanted(want, 'retention')}",
            (CreateBucket(connection, body),),
        )
        return _shared(change, tiers)
    retention = want.retention if want.retention is not None else current.retention
    shard = want.shard if want.shard is not None else current.shard
    said = []
    if retention != current.retention:
        said.append(f"retention {_show(current.retention)} → {_show(retention)}")
    if shard != current.shard:
        said.append(f"shard group duration {_show(current.shard)} → {_show(shard)}")
    if not said:
        detail = f"{label}: retention {_show(current.retention)}"
        if current.shard is not None:
            detail += f", shard group duration {_show(current.shard)}"
        return _shared(Change(tiers[0], Action.NONE, detail), tiers)
    if want.shard is None and shard is not None and retention is not None and shard > retention:
        shard = None  # the kept shard group duration no longer fits: the server picks one
    body = {"retentionRules": [_rule(retention, shard)]}
    change = Change(
        tiers[0],
        Action.UPDATE,
        f"{label}: {', '.join(said)}",
        (UpdateBucket(connection, current.id, body),),
        _shrink(tiers, current.retention, want.retention),
    )
    return _shared(change, tiers)


def _rule(retention: timedelta | None, shard: timedelta | None) -> dict[str, Any]:
    rule: dict[str, Any] = {"type": "expire", "everySeconds": _seconds(retention)}
    if shard is not None:
        rule["shardGroupDurationSeconds"] = _seconds(shard)
    return rule


def _plan_directory(tier: str, directory: Directory, problems: list[str]) -> Change:
    if directory.problem is not None:
        problems.append(f"tier {tier}: {directory.problem}")
        return Change(tier, Action.NONE, directory.problem)
    if directory.path is None:
        return Change(tier, Action.NONE, f"{directory.url}: an object store, nothing to make")
    if directory.exists:
        return Change(tier, Action.NONE, f"directory {directory.path} exists and is writable")
    return Change(
        tier, Action.CREATE, f"directory {directory.path}", (MakeDirectory(directory.path),)
    )


# -- durations ------------------------------------------------------------------------------------

_GO_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_GO_WHOLE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ns|us|µs|ms|s|m|h))+")
_GO_NANOS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_go_duration(text: str) -> timedelta | None:
    """A duration as InfluxDB 1.x prints it (Go's `time.Duration`: `720h0m0s`, `1h30m0s`,
    `500ms`); None for `0s`, which `SHOW RETENTION POLICIES` prints for an infinite policy."""
    if not _GO_WHOLE.fullmatch(text):
        raise ValueError(f"not a Go duration: {text!r}")
    nanos = sum(Decimal(number) * _GO_NANOS[unit] for number, unit in _GO_PART.findall(text))
    return timedelta(microseconds=int(nanos / 1000)) if nanos else None


_UNITS = (
    ("d", timedelta(days=1)),
    ("h", timedelta(hours=1)),
    ("m", timedelta(minutes=1)),
    ("s", timedelta(seconds=1)),
)


def _show(duration: timedelta | None) -> str:
    """`30d` rather than `4w2d`: the largest unit up to days that divides the duration, as
    people write it in configs (InfluxQL reads it the same way); `infinite` for None."""
    if duration is None:
        return "infinite"
    for unit, size in _UNITS:
        if duration >= size and not duration % size:
            return f"{duration // size}{unit}"
    return format_duration(duration)


def _wanted(want: _Want, noun: str = "duration") -> str:
    text = (
        f"{noun} {_show(want.retention)}"
        if want.retention is not None
        else f"{noun} infinite (no retention declared)"
    )
    return text + (f", shard duration {_show(want.shard)}" if want.shard is not None else "")


def _seconds(duration: timedelta | None) -> int:
    return 0 if duration is None else int(duration.total_seconds())
