"""InfluxQL, as InfluxDB 1.x speaks it: the static side of the 1.x engine (see
`tierflow._engines._dialect.Dialect`). Light to import: the engine, exports and checks are
imported when first used."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tierflow._engines._dialect import EVERY_TYPE, NUMBERS, Capabilities, Dialect

if TYPE_CHECKING:
    from tierflow._archive import FieldType, PointBatch
    from tierflow._archive._archive import StagedWindow
    from tierflow._config import ArchiveJob, Config, ConnectionConfig, TierConfig
    from tierflow._engines._base import Engine
    from tierflow._engines._dialect import AggregateRead, TierAdmin, WindowExport
    from tierflow._metrics import Metrics
    from tierflow._planner import Batch
    from tierflow._query_checks import Target
    from tierflow._secrets import SecretSource
    from tierflow._templates import RenderedQuery
    from tierflow._validation import Problem
    from tierflow._windows import Window

__all__ = ["DIALECT", "InfluxQL"]

_SELECTORS = frozenset({"count", "first", "last", "mode"})

#: Seen on influxd 1.6.7, every aggregate on a float, integer, boolean and string field, with
#: and without INTO (unsigned fields cannot be written to 1.6.7: taken as numbers).
_ACCEPTED: Mapping[str, frozenset[str]] = {
    **dict.fromkeys(_SELECTORS, EVERY_TYPE),
    **dict.fromkeys(("min", "max"), NUMBERS | {"boolean"}),
    **dict.fromkeys(("mean", "median", "spread", "stddev", "sum"), NUMBERS),
}


class InfluxQL(Dialect):
    """InfluxDB 1.x over HTTP (`/query`, `/write`)."""

    name = "influxql"
    kind = "influxdb1"
    template_suffix = ".influxql.j2"
    package = "tierflow._engines.influxql"
    # InfluxQL has no line comments: joined into one line, a query logs shorter.
    one_line = True
    capabilities = Capabilities(
        write=True,
        delete_window=False,
        aggregates=frozenset(_ACCEPTED),
        why_not={
            "delete_window": (
                "not supported on InfluxDB 1.x: its DELETE FROM … WHERE time … removes the "
                "range from every retention policy of the database, hot tier included, so "
                "tierflow cannot delete only the dest window"
            ),
        },
    )
    accepted_types = _ACCEPTED
    client_module = None
    credentials_hint = 'username = "…" and password = { env = "…" } (or { file = "…" })'

    def filters(self) -> Mapping[str, Callable[..., Any]]:
        from tierflow._engines.influxql._literals import INFLUXQL_FILTERS

        return INFLUXQL_FILTERS

    def query_problems(
        self, text: str, *, window: Window, dest: Target, require_write: bool
    ) -> Iterator[str]:
        from tierflow._engines.influxql._checks import influxql_problems

        return influxql_problems(text, window, dest, require_write)

    def scope(self, connection: ConnectionConfig) -> str | None:
        return None

    def secret(self, connection: ConnectionConfig) -> tuple[str, SecretSource | None]:
        return "password", self._connection(connection).password

    def describe_place(self, connection: ConnectionConfig, url: str, tier: TierConfig) -> str:
        return f"{self.kind} {url} {tier.bucket}"

    def place(self, connection: ConnectionConfig, tier: TierConfig) -> tuple[str, str | None]:
        return tier.database, tier.retention_policy

    def fingerprint_needs_types(self) -> bool:
        return True

    def render_export(self, config: Config, job: ArchiveJob, batch: Batch) -> RenderedQuery:
        from tierflow._engines.influxql._export import export_query
        from tierflow._templates import RenderedQuery

        source = config.tiers[job.source]
        text = "; ".join(
            export_query(
                database=source.database,
                retention_policy=source.retention_policy,
                measurement=measurement,
                start=batch.range.start,
                stop=batch.range.stop,
                tags=job.tags,
            )
            for measurement in job.measurements
        )
        return RenderedQuery(text, "export", "builtin", self.name)

    def render_measurements(self, tier: TierConfig, window: Window, tags: Mapping[str, str]) -> str:
        from tierflow._engines.influxql._listing import listing_text

        return listing_text(tier, window, tags)

    async def list_measurements(
        self,
        engine: Engine,
        tier: TierConfig,
        window: Window,
        tags: Mapping[str, str],
        wanted: Callable[[str], bool],
    ) -> list[str]:
        from tierflow._engines.influxql._listing import list_measurements

        return await list_measurements(engine, tier, window, tags, wanted)

    def make_engine(
        self, name: str, connection: ConnectionConfig, metrics: Metrics | None = None
    ) -> Engine:
        from tierflow._engines.influxql._engine import InfluxQLEngine

        return InfluxQLEngine(name, self._connection(connection), metrics)

    async def field_types(
        self, engine: Engine, tier: TierConfig, measurement: str, *, now: datetime
    ) -> dict[str, frozenset[FieldType]]:
        from tierflow._engines.influxql._relay import influxql_field_types

        return await influxql_field_types(engine, tier, measurement)

    def aggregate_batches(self, engine: Engine, read: AggregateRead) -> AsyncIterator[PointBatch]:
        from tierflow._engines.influxql._relay import influxql_aggregate_batches

        return influxql_aggregate_batches(engine, read)

    async def stage_window(self, engine: Engine, export: WindowExport) -> StagedWindow:
        from tierflow._engines.influxql._archiving import stage_influxql

        return await stage_influxql(engine, export)

    async def server_problems(
        self, engine: Engine, config: Config, name: str, problems: list[Problem]
    ) -> None:
        from tierflow._engines.influxql._validate import check_influxdb1

        await check_influxdb1(engine, config, name, problems)

    def admin(self) -> TierAdmin:
        from tierflow._engines.influxql._apply import ADMIN

        return ADMIN


#: The one InfluxQL dialect (what the registry finds in this package).
DIALECT = InfluxQL()
