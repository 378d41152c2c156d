"""`tierflow apply` on InfluxDB 1.x: a tier lives in a database and a retention policy.

Observed with `SHOW DATABASES` (once per connection) and `SHOW RETENTION POLICIES`; changed
with `CREATE DATABASE … WITH …`, `CREATE` / `ALTER RETENTION POLICY` (see `tierflow._apply`
for the rules); what a shrinking retention would delete is counted with `SELECT count(*)`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from tierflow._apply._model import Action, Change, Expiring, show
from tierflow._apply._plan import Want, agree, shared, shrinking, wanted
from tierflow._engines._dialect import TierAdmin
from tierflow._engines.influxql._literals import influxql_ident, influxql_time
from tierflow._errors import EngineError

if TYPE_CHECKING:
    from tierflow._apply._model import Group, Members, Observed, Place, ServerStep
    from tierflow._engines._base import Engine

__all__ = [
    "ADMIN",
    "AUTOGEN",
    "InfluxQLAdmin",
    "Policy",
    "PolicyPlace",
    "Statement",
    "parse_go_duration",
]

AUTOGEN = "autogen"


@dataclass(frozen=True, slots=True)
class Statement:
    """An InfluxQL statement for a 1.x connection; database creations are sent first."""

    connection: str
    text: str
    creates_database: bool = False

    @property
    def first(self) -> bool:
        return self.creates_database


@dataclass(frozen=True, slots=True)
class Policy:
    """A 1.x retention policy as `SHOW RETENTION POLICIES` reports it (`duration` None:
    infinite)."""

    name: str
    duration: timedelta | None
    shard: timedelta
    default: bool


@dataclass(frozen=True, slots=True)
class PolicyPlace:
    """A 1.x retention policy, where a shrinking retention's data lives."""

    connection: str
    database: str
    policy: str

    def __str__(self) -> str:
        return f'retention policy "{self.database}"."{self.policy}"'


async def _databases(engine: Engine) -> set[str]:
    return {str(row[0]) for s in await engine.query("SHOW DATABASES") for row in s.values}


async def _policies(engine: Engine, connection: str, database: str) -> dict[str, Policy]:
    policies: dict[str, Policy] = {}
    for series in await engine.query(f"SHOW RETENTION POLICIES ON {influxql_ident(database)}"):
        for values in series.values:
            row = dict(zip(series.columns, values, strict=False))
            try:
                duration = parse_go_duration(str(row["duration"]))
                shard = parse_go_duration(str(row["shardGroupDuration"])) or timedelta(0)
            except (KeyError, ValueError) as exc:
                raise EngineError(
                    f"connection {connection}: unexpected SHOW RETENTION POLICIES row {values}"
                ) from exc
            name = str(row["name"])
            policies[name] = Policy(name, duration, shard, bool(row.get("default")))
    return policies


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


def _default_policy(policies: Mapping[str, Policy]) -> str | None:
    return next((p.name for p in policies.values() if p.default), None)


def _create_database(connection: str, database: str, want: Want, tier: str) -> Change:
    clauses = [f"DURATION {show(want.retention)}"] if want.retention else []
    if want.shard:
        clauses.append(f"SHARD DURATION {show(want.shard)}")
    clauses.append(f"NAME {influxql_ident(AUTOGEN)}")
    text = f"CREATE DATABASE {influxql_ident(database)} WITH {' '.join(clauses)}"
    detail = f'database "{database}", default retention policy "{AUTOGEN}": {wanted(want)}'
    return Change(tier, Action.CREATE, detail, (Statement(connection, text, True),))


def _create_policy(connection: str, database: str, policy: str, want: Want, tier: str) -> Change:
    text = (
        f"CREATE RETENTION POLICY {influxql_ident(policy)} ON {influxql_ident(database)} "
        f"DURATION {show(want.retention) if want.retention else 'INF'} REPLICATION 1"
    )
    if want.shard:
        text += f" SHARD DURATION {show(want.shard)}"
    detail = f'retention policy "{database}"."{policy}": {wanted(want)}'
    return Change(tier, Action.CREATE, detail, (Statement(connection, text),))


def _alter_policy(
    connection: str,
    database: str,
    current: Policy,
    want: Want,
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
    place = PolicyPlace(connection, database, current.name)
    return Change(
        tiers[0],
        Action.UPDATE,
        f"{label}: {', '.join(said)}",
        (Statement(connection, text),),
        shrinking(tiers, current.duration, want.retention, place),
    )


def _default_shard(duration: timedelta) -> timedelta:
    """The shard group duration 1.x gives a policy of `duration` when none is named (its
    `shardGroupDuration`: under two days an hour, under six months a day, else a week)."""
    if duration < timedelta(days=2):
        return timedelta(hours=1)
    if duration < timedelta(days=180):
        return timedelta(days=1)
    return timedelta(days=7)


class InfluxQLAdmin(TierAdmin):
    """A 1.x tier lives in a database and a retention policy."""

    minimums = ("retention", "shard_duration")

    async def observe_group(self, engine: Engine, group: Group, observed: Observed) -> None:
        """The retention policies of the group's database (None: no such database)."""
        if group.connection not in observed.scopes:
            observed.scopes[group.connection] = await _databases(engine)
        database = group.place
        observed.places[(group.connection, database)] = (
            await _policies(engine, group.connection, database)
            if database in observed.scopes[group.connection]
            else None
        )

    def plan_group(
        self, group: Group, observed: Observed, problems: list[str]
    ) -> dict[str, Change]:
        """The changes for the tiers of one 1.x database (its policies None: it does not exist)."""
        connection, database, members = group.connection, group.place, group.members
        policies: dict[str, Policy] | None = observed.places[(connection, database)]
        changes: dict[str, Change] = {}
        by_policy: dict[str, Members] = {}
        default = AUTOGEN if policies is None else _default_policy(policies)
        for tier, spec in members:
            policy = spec.retention_policy or default
            if policy is None:
                if spec.retention is not None or spec.shard_duration is not None:
                    problems.append(
                        f"tier {tier}: database {database!r} has no default retention policy to "
                        "hold to the declared values; name a policy in bucket (database/policy)"
                    )
                detail = f'database "{database}" exists; it has no default retention policy'
                changes[tier] = Change(tier, Action.NONE, detail)
                continue
            by_policy.setdefault(policy, []).append((tier, spec))
        for policy, same in by_policy.items():
            label = f'retention policy "{database}"."{policy}"'
            want = agree(label, same, problems)
            tiers = tuple(tier for tier, _ in same)
            if policies is None and policy == AUTOGEN:
                change = _create_database(connection, database, want, tiers[0])
            elif policies is None or policy not in policies:
                change = _create_policy(connection, database, policy, want, tiers[0])
            else:
                change = _alter_policy(
                    connection, database, policies[policy], want, tiers, problems
                )
            changes |= shared(change, tiers)
        if policies is not None or AUTOGEN in by_policy:
            return changes
        # A new database none of whose tiers lives in its default policy: the server makes that one.
        first = members[0][0]
        create = Statement(connection, f"CREATE DATABASE {influxql_ident(database)}", True)
        change = changes[first]
        changes[first] = replace(
            change, detail=f'database "{database}", {change.detail}', steps=(create, *change.steps)
        )
        return changes

    async def apply_step(self, engine: Engine, step: ServerStep) -> None:
        """Send one statement."""
        assert isinstance(step, Statement)  # what `plan_group` made
        await engine.query(step.text)

    async def expiring(self, engine: Engine, place: Place, cutoff: datetime) -> Expiring:
        """The oldest point first, one row per measurement (`first(*)` would not do: with several
        fields 1.x stamps it at the epoch, seen on 1.6.7); then, only if there is one, the count,
        which reads every value older than the cutoff."""
        assert isinstance(place, PolicyPlace)  # what `plan_group` made
        source = f"{influxql_ident(place.database)}.{influxql_ident(place.policy)}./.*/"
        where = f"WHERE time < {influxql_time(cutoff)}"
        first = await engine.query(f"SELECT * FROM {source} {where} LIMIT 1")
        oldest = min(
            (
                (int(row[series.columns.index("time")]), series.name)
                for series in first
                for row in series.values
            ),
            default=None,
        )
        if oldest is None:
            return Expiring(place, cutoff)
        counted = await engine.query(f"SELECT count(*) FROM {source} {where}")
        count = sum(
            int(value)
            for series in counted
            for row in series.values
            for column, value in zip(series.columns, row, strict=False)
            if column != "time" and value is not None
        )
        return Expiring(place, cutoff, count, oldest[0], oldest[1])


#: The one admin of this dialect (what `Dialect.admin()` gives).
ADMIN = InfluxQLAdmin()
