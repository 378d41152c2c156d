"""`tierflow apply` on InfluxDB 3: a tier is a database, created with its `retention_period`.

What 3.x allows, and what apply therefore does:
- A missing database is created (`POST /api/v3/configure/database` `{"db",
  "retention_period"}`), its retention in whole hours (3.x reads `h`, `d`, `w`, `mo`, `y`; not
  minutes or seconds).
- A database's retention is set at creation and **cannot be changed afterwards** on 3.x Core;
  the documented API lists databases by name only, so tierflow can neither read an existing
  database's retention nor change it. For an existing database apply changes nothing and says
  so plainly: it never plans or reports an update it cannot make. To change a retention,
  create a new database and move the data (a 3.x → 3.x relay).
- 3.x has no shard durations: a tier that sets `shard_duration` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from tierflow._apply._model import Action, Change, Expiring, show
from tierflow._apply._plan import agree, shared, wanted
from tierflow._engines._base import bare
from tierflow._engines._dialect import TierAdmin
from tierflow._engines.sql._engine import InfluxDB3Engine
from tierflow._engines.sql._literals import sql_ident, sql_time

if TYPE_CHECKING:
    from tierflow._apply._model import Group, Observed, Place, ServerStep
    from tierflow._engines._base import Engine

__all__ = ["ADMIN", "CreateDatabase", "DatabasePlace", "SqlAdmin", "retention_period"]

#: Why apply changes nothing on an existing database, in the words apply shows.
IMMUTABLE = (
    "InfluxDB 3 Core sets a database's retention when it is created and cannot change it "
    "afterwards; apply leaves it as it is (to change it, create a new database and relay "
    "the data into it)"
)


@dataclass(frozen=True, slots=True)
class CreateDatabase:
    connection: str
    database: str
    retention_period: str | None

    @property
    def first(self) -> bool:
        return False

    def __str__(self) -> str:
        retention = f" retention_period {self.retention_period}" if self.retention_period else ""
        return f"create database {self.database!r}{retention}"


@dataclass(frozen=True, slots=True)
class DatabasePlace:
    """A 3.x database, where a tier's data lives."""

    connection: str
    database: str

    def __str__(self) -> str:
        return f'database "{self.database}"'


def retention_period(retention: timedelta | None) -> str | None:
    """`retention_period` as 3.x reads it: whole hours (`720h`), None for infinite.
    `ValueError` when it is not a whole number of hours."""
    if retention is None:
        return None
    if retention % timedelta(hours=1):
        raise ValueError(
            f"retention {show(retention)} is not a whole number of hours (InfluxDB 3 takes "
            "retention periods in h, d, w, mo, y; not minutes or seconds)"
        )
    return f"{retention // timedelta(hours=1)}h"


class SqlAdmin(TierAdmin):
    """A 3.x tier is a database."""

    async def observe_group(self, engine: Engine, group: Group, observed: Observed) -> None:
        """The server's databases (once per connection) and whether the group's exists."""
        sql = bare(engine, InfluxDB3Engine)
        if group.connection not in observed.scopes:
            observed.scopes[group.connection] = {
                str(d.get("iox::database")) for d in await sql.databases()
            }
        names: set[str] = observed.scopes[group.connection]
        place = DatabasePlace(group.connection, group.place)
        observed.places[(group.connection, group.place)] = place if group.place in names else None

    def plan_group(
        self, group: Group, observed: Observed, problems: list[str]
    ) -> dict[str, Change]:
        connection, name, members = group.connection, group.place, group.members
        label = f'database "{name}"'
        want = agree(label, members, problems)
        tiers = tuple(tier for tier, _ in members)
        for tier, spec in members:
            if spec.shard_duration is not None:
                problems.append(
                    f"tier {tier}: InfluxDB 3 has no shard durations: remove shard_duration"
                )
        if observed.places[(connection, name)] is None:
            try:
                period = retention_period(want.retention)
            except ValueError as exc:
                problems.append(f"{label}: {exc}")
                return {tier: Change(tier, Action.NONE, label) for tier in tiers}
            change = Change(
                tiers[0],
                Action.CREATE,
                f"{label}: {wanted(want, 'retention')}",
                (CreateDatabase(connection, name, period),),
            )
            return shared(change, tiers)
        detail = f"{label} exists"
        if want.retention is not None:
            detail += f" (its retention is not read back: the tiers declare {show(want.retention)})"
        return shared(Change(tiers[0], Action.NONE, f"{detail}; {IMMUTABLE}"), tiers)

    async def apply_step(self, engine: Engine, step: ServerStep) -> None:
        """Create one database."""
        assert isinstance(step, CreateDatabase)  # what `plan_group` made
        await bare(engine, InfluxDB3Engine).create_database(step.database, step.retention_period)

    async def expiring(self, engine: Engine, place: Place, cutoff: datetime) -> Expiring:
        """What the database holds before `cutoff`: its field values there, and the oldest
        (never asked by apply, which plans no shrink on 3.x, but answered truly)."""
        assert isinstance(place, DatabasePlace)
        sql = bare(engine, InfluxDB3Engine)
        columns = await sql.query(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'iox'",
            database=place.database,
        )
        fields: dict[str, list[str]] = {}
        for series in columns:
            for table, column, kind in series.values:
                if column != "time" and not str(kind).startswith("Dictionary"):
                    fields.setdefault(str(table), []).append(str(column))
        count, oldest, measurement = 0, None, None
        for table, names in sorted(fields.items()):
            counts = " + ".join(f"count({sql_ident(n)})" for n in names)
            found = await sql.query(
                f'SELECT {counts} AS "n", min("time") AS "time" FROM {sql_ident(table)} '
                f'WHERE "time" < {sql_time(cutoff)}',
                database=place.database,
            )
            for series in found:
                for row in series.values:
                    record = dict(zip(series.columns, row, strict=True))
                    count += int(record.get("n") or 0)
                    stamp = record.get("time")
                    if isinstance(stamp, int) and (oldest is None or stamp < oldest):
                        oldest, measurement = stamp, table
        return Expiring(place, cutoff, count, oldest, measurement)


#: The one admin of this dialect (what `Dialect.admin()` gives).
ADMIN = SqlAdmin()
