"""`tierflow apply`'s planner, pure: what the tiers declare and what the servers hold in, the
changes to make and the problems that forbid them out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from tierflow._apply._model import (
    AUTOGEN,
    MIN_RETENTION,
    Action,
    Bucket,
    BucketPlace,
    Change,
    CreateBucket,
    Directory,
    MakeDirectory,
    Observed,
    Policy,
    PolicyPlace,
    Shrink,
    Statement,
    UpdateBucket,
    show,
)
from tierflow._config import Config, InfluxDB2Connection, TierConfig
from tierflow._templates import influxql_ident

__all__ = ["Members", "groups", "plan_changes"]


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
    for (connection, database), members in groups(config, "influxdb1").items():
        policies = observed.databases[(connection, database)]
        changes |= _plan_database(connection, database, members, policies, problems)
    for (connection, name), members in groups(config, "influxdb2").items():
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


def groups(config: Config, kind: str) -> dict[tuple[str, str], Members]:
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
                    f"tier {name}: {key} {show(value)} is below the server's minimum of 1h"
                )
        for key, value in [("retention", tier.retention), ("shard_duration", tier.shard_duration)]:
            if value is not None and value % timedelta(seconds=1):
                problems.append(f"tier {name}: {key} {show(value)} is not whole seconds")
        if tier.retention and tier.shard_duration and tier.shard_duration > tier.retention:
            problems.append(
                f"tier {name}: shard_duration {show(tier.shard_duration)} is longer than "
                f"retention {show(tier.retention)}"
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
            listing = ", ".join(f"tier {t} says {show(value)}" for t, value in declared)
            problems.append(f"{label}: its tiers disagree about {key}: {listing}")
        values[key] = declared[0][1] if declared else None
    return _Want(values["retention"], values["shard_duration"])


def _create_database(connection: str, database: str, want: _Want, tier: str) -> Change:
    clauses = [f"DURATION {show(want.retention)}"] if want.retention else []
    if want.shard:
        clauses.append(f"SHARD DURATION {show(want.shard)}")
    clauses.append(f"NAME {influxql_ident(AUTOGEN)}")
    text = f"CREATE DATABASE {influxql_ident(database)} WITH {' '.join(clauses)}"
    detail = f'database "{database}", default retention policy "{AUTOGEN}": {_wanted(want)}'
    return Change(tier, Action.CREATE, detail, (Statement(connection, text, True),))


def _create_policy(connection: str, database: str, policy: str, want: _Want, tier: str) -> Change:
    text = (
        f"CREATE RETENTION POLICY {influxql_ident(policy)} ON {influxql_ident(database)} "
        f"DURATION {show(want.retention) if want.retention else 'INF'} REPLICATION 1"
    )
    if want.shard:
        text += f" SHARD DURATION {show(want.shard)}"
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
        clauses.append(f"DURATION {show(want.retention)}")
        said.append(f"duration {show(current.duration)} → {show(want.retention)}")
    shard = want.shard
    if shard is None and duration is not None and duration < current.shard:
        # 1.x refuses a duration shorter than the shard duration: take its own default for it.
        shard = _default_shard(duration)
    if want.retention is None and shard is not None and duration is not None and shard > duration:
        problems.append(
            f"{label}: shard_duration {show(shard)} is longer than its duration "
            f"{show(duration)}; declare a retention too"
        )
    if shard is not None and shard != current.shard:
        clauses.append(f"SHARD DURATION {show(shard)}")
        said.append(f"shard duration {show(current.shard)} → {show(shard)}")
    if not clauses:
        detail = f"{label}: duration {show(current.duration)}, shard duration {show(current.shard)}"
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
        _shrink(
            tiers, current.duration, want.retention, PolicyPlace(connection, database, current.name)
        ),
    )


def _default_shard(duration: timedelta) -> timedelta:
    """The shard group duration 1.x gives a policy of `duration` when none is named (its
    `shardGroupDuration`: under two days an hour, under six months a day, else a week)."""
    if duration < timedelta(days=2):
        return timedelta(hours=1)
    if duration < timedelta(days=180):
        return timedelta(days=1)
    return timedelta(days=7)


def _shrink(
    tiers: tuple[str, ...],
    old: timedelta | None,
    new: timedelta | None,
    place: PolicyPlace | BucketPlace,
) -> Shrink | None:
    if new is None or (old is not None and new >= old):
        return None
    return Shrink(tiers, old, new, place)


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
        said.append(f"retention {show(current.retention)} → {show(retention)}")
    if shard != current.shard:
        said.append(f"shard group duration {show(current.shard)} → {show(shard)}")
    if not said:
        detail = f"{label}: retention {show(current.retention)}"
        if current.shard is not None:
            detail += f", shard group duration {show(current.shard)}"
        return _shared(Change(tiers[0], Action.NONE, detail), tiers)
    if want.shard is None and shard is not None and retention is not None and shard > retention:
        shard = None  # the kept shard group duration no longer fits: the server picks one
    body = {"retentionRules": [_rule(retention, shard)]}
    change = Change(
        tiers[0],
        Action.UPDATE,
        f"{label}: {', '.join(said)}",
        (UpdateBucket(connection, current.id, body),),
        _shrink(tiers, current.retention, want.retention, BucketPlace(connection, name)),
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


def _wanted(want: _Want, noun: str = "duration") -> str:
    text = (
        f"{noun} {show(want.retention)}"
        if want.retention is not None
        else f"{noun} infinite (no retention declared)"
    )
    return text + (f", shard duration {show(want.shard)}" if want.shard is not None else "")


def _seconds(duration: timedelta | None) -> int:
    return 0 if duration is None else int(duration.total_seconds())
