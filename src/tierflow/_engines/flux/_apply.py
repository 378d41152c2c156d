"""`tierflow apply` on InfluxDB 2.x: a tier is a bucket in the connection's org, with one
`expire` retention rule (`everySeconds: 0` is infinite).

Observed through the orgs and buckets APIs; changed with `POST /api/v2/buckets` and
`PATCH /api/v2/buckets/{id}`; what a shrinking retention would delete is counted by a Flux
script (`expiring_flux_script`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tierflow._apply._model import Action, Change, Expiring, show
from tierflow._apply._plan import agree, shared, shrinking, wanted
from tierflow._config import InfluxDB2Connection
from tierflow._engines._base import bare
from tierflow._engines._dialect import TierAdmin
from tierflow._engines.flux._engine import FluxEngine
from tierflow._engines.flux._literals import flux_string, flux_time

if TYPE_CHECKING:
    from tierflow._apply._model import Group, Observed, Place, ServerStep
    from tierflow._engines._base import Engine

__all__ = [
    "ADMIN",
    "Bucket",
    "BucketPlace",
    "CreateBucket",
    "FluxAdmin",
    "UpdateBucket",
    "expiring_flux_script",
]


@dataclass(frozen=True, slots=True)
class CreateBucket:
    connection: str
    body: dict[str, Any]

    @property
    def first(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class UpdateBucket:
    connection: str
    bucket_id: str
    body: dict[str, Any]

    @property
    def first(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class Bucket:
    """A 2.x bucket's ID and retention rule (None: infinite, or no shard group duration)."""

    id: str
    retention: timedelta | None
    shard: timedelta | None


@dataclass(frozen=True, slots=True)
class BucketPlace:
    """A 2.x bucket (in its connection's org), where a shrinking retention's data lives."""

    connection: str
    bucket: str

    def __str__(self) -> str:
        return f'bucket "{self.bucket}"'


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


def _rule(retention: timedelta | None, shard: timedelta | None) -> dict[str, Any]:
    rule: dict[str, Any] = {"type": "expire", "everySeconds": _seconds(retention)}
    if shard is not None:
        rule["shardGroupDurationSeconds"] = _seconds(shard)
    return rule


def _seconds(duration: timedelta | None) -> int:
    return 0 if duration is None else int(duration.total_seconds())


def expiring_flux_script(bucket: str, cutoff: datetime) -> str:
    """Flux counting the field values of `bucket` before `cutoff` (per table, then summed: the
    values' types differ between tables, the counts' do not) and finding the oldest one."""
    return (
        f"data = from(bucket: {flux_string(bucket)})\n"
        f"    |> range(start: 0, stop: {flux_time(cutoff)})\n"
        'data\n    |> count()\n    |> group()\n    |> sum()\n    |> yield(name: "count")\n'
        "data\n    |> first()\n"
        '    |> keep(columns: ["_time", "_measurement"])\n'
        "    |> group()\n"
        '    |> min(column: "_time")\n'
        '    |> yield(name: "oldest")\n'
    )


class FluxAdmin(TierAdmin):
    """A 2.x tier is a bucket of the connection's org."""

    async def observe_group(self, engine: Engine, group: Group, observed: Observed) -> None:
        """The org's ID (once per connection; None: the server has no such org) and the group's
        bucket (None: missing)."""
        flux = bare(engine, FluxEngine)
        if group.connection not in observed.scopes:
            observed.scopes[group.connection] = await flux.org_id()
        org_id = observed.scopes[group.connection]
        if org_id is not None:
            found = await flux.find_bucket(group.place, org_id)
            observed.places[(group.connection, group.place)] = _bucket(found) if found else None

    def plan_group(
        self, group: Group, observed: Observed, problems: list[str]
    ) -> dict[str, Change]:
        """The changes for the tiers of one bucket; none if the org is unknown (a problem)."""
        connection, name, members = group.connection, group.place, group.members
        assert isinstance(group.spec, InfluxDB2Connection)  # the registry sends only its own kind
        org = group.spec.org
        label = f'bucket "{name}" in org "{org}"'
        org_id: str | None = observed.scopes[connection]
        if org_id is None:
            problems.append(
                f"connection {connection}: the server has no org {org!r} (apply makes buckets, "
                "not orgs)"
            )
            return {tier: Change(tier, Action.NONE, label) for tier, _ in members}
        current: Bucket | None = observed.places[(connection, name)]
        want = agree(label, members, problems)
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
                f"{label}: {wanted(want, 'retention')}",
                (CreateBucket(connection, body),),
            )
            return shared(change, tiers)
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
            return shared(Change(tiers[0], Action.NONE, detail), tiers)
        if want.shard is None and shard is not None and retention is not None and shard > retention:
            shard = None  # the kept shard group duration no longer fits: the server picks one
        body = {"retentionRules": [_rule(retention, shard)]}
        change = Change(
            tiers[0],
            Action.UPDATE,
            f"{label}: {', '.join(said)}",
            (UpdateBucket(connection, current.id, body),),
            shrinking(tiers, current.retention, want.retention, BucketPlace(connection, name)),
        )
        return shared(change, tiers)

    async def apply_step(self, engine: Engine, step: ServerStep) -> None:
        """Create or update one bucket."""
        flux = bare(engine, FluxEngine)
        if isinstance(step, CreateBucket):
            await flux.create_bucket(step.body)
        else:
            assert isinstance(step, UpdateBucket)  # what `plan_group` made
            await flux.update_bucket(step.bucket_id, step.body)

    async def expiring(self, engine: Engine, place: Place, cutoff: datetime) -> Expiring:
        """What the bucket holds before `cutoff`: a count of field values and the oldest."""
        assert isinstance(place, BucketPlace)  # what `plan_group` made
        count, oldest, measurement = 0, None, None
        for series in await engine.query(expiring_flux_script(place.bucket, cutoff)):
            for row in series.values:
                found = dict(zip(series.columns, row, strict=False))
                if series.name == "count" and found.get("_value") is not None:
                    count += int(found["_value"])
                elif series.name == "oldest" and found.get("time") is not None:
                    oldest = int(found["time"])
                    measurement = found.get("_measurement")
        return Expiring(
            place, cutoff, count, oldest, None if measurement is None else str(measurement)
        )


#: The one admin of this dialect (what `Dialect.admin()` gives).
ADMIN = FluxAdmin()
