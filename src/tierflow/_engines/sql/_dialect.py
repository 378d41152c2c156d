"""SQL, as InfluxDB 3 speaks it (Apache DataFusion's dialect): the static side of the 3.x engine
(see `tierflow._engines._dialect.Dialect`). Light to import: the engine, sqlglot, the reads and
the admin are imported when first used."""

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

__all__ = ["DIALECT", "Sql"]

#: The aggregates a 3.x downsample computes in SQL, each as exactly InfluxQL's result (value
#: and type): see `_aggregates.SQL_AGGREGATES` for the expression of each and why it matches.
_ACCEPTED: Mapping[str, frozenset[str]] = {
    **dict.fromkeys(("count", "first", "last"), EVERY_TYPE),
    **dict.fromkeys(("min", "max", "mean", "median", "spread", "sum"), NUMBERS),
}

#: Why an aggregate is refused on 3.x: it has no SQL expression whose result is exactly
#: InfluxQL's.
WHY_NOT: Mapping[str, str] = {
    "mode": (
        "'mode' is not supported on InfluxDB 3: SQL has no mode() aggregate, and a grouped "
        "count cannot say InfluxQL's choice among tied values in one query per chunk"
    ),
    "stddev": (
        "'stddev' is not supported on InfluxDB 3: InfluxQL's STDDEV() takes a running mean "
        "in time order and then sums squared deviations, DataFusion's stddev() updates "
        "Welford's running variance; the two round differently, so values would differ in "
        "their last bits"
    ),
    "delete_window": (
        "InfluxDB 3 cannot delete a time range of a table (only a whole table or database), "
        "so `replace = true` cannot clear a dest window on a 3.x tier"
    ),
}


class Sql(Dialect):
    """InfluxDB 3 (Core, Enterprise, Cloud): databases of tables, SQL reads, line-protocol
    writes; no `SELECT … INTO`, so downsampling is read-aggregate-write by tierflow."""

    name = "sql"
    kind = "influxdb3"
    template_suffix = ".sql.j2"
    package = "tierflow._engines.sql"
    # A `--` comment would swallow everything after it if lines were joined.
    one_line = False
    capabilities = Capabilities(
        write=True,
        delete_window=False,
        aggregates=frozenset(_ACCEPTED),
        why_not=WHY_NOT,
    )
    accepted_types = _ACCEPTED
    # The safety checker parses SQL with sqlglot (the `influxdb3` extra).
    client_module = ("sqlglot", "influxdb3")
    credentials_hint = 'token = { env = "…" } (or { file = "…" })'
    # 3.x's parser reads `\\` as one backslash: names and tag values are written with each
    # backslash doubled (`tierflow._lineprotocol`).
    line_protocol = "v3"

    def fingerprint_needs_types(self) -> bool:
        # Not for casts (3.x fixes a field's type): a column the table lacks, or a table that
        # does not exist, is refused by DataFusion; with the types, the fingerprint names
        # only the fields there are (a field without a type has no column).
        return True

    def filters(self) -> Mapping[str, Callable[..., Any]]:
        from tierflow._engines.sql._literals import SQL_FILTERS

        return SQL_FILTERS

    def query_problems(
        self, text: str, *, window: Window, dest: Target, require_write: bool
    ) -> Iterator[str]:
        from tierflow._engines.sql._checks import sql_problems

        return sql_problems(text, window, dest, require_write)

    def scope(self, connection: ConnectionConfig) -> str | None:
        database = self._connection(connection).database
        return str(database) if database is not None else None

    def secret(self, connection: ConnectionConfig) -> tuple[str, SecretSource | None]:
        return "token", self._connection(connection).token

    def describe_place(self, connection: ConnectionConfig, url: str, tier: TierConfig) -> str:
        import json

        return f"{self.kind} {url} database {json.dumps(tier.bucket)}"

    def place(self, connection: ConnectionConfig, tier: TierConfig) -> tuple[str, str | None]:
        return tier.bucket, None

    def render_export(self, config: Config, job: ArchiveJob, batch: Batch) -> RenderedQuery:
        from tierflow._engines.sql._literals import export_query
        from tierflow._templates import RenderedQuery

        source = config.tiers[job.source]
        queries = [
            export_query(measurement, batch.range.start, batch.range.stop, job.tags)
            for measurement in job.measurements
        ]
        text = ";\n".join(queries)
        return RenderedQuery(f"-- database {source.bucket}\n{text}", "export", "builtin", self.name)

    def render_measurements(self, tier: TierConfig, window: Window, tags: Mapping[str, str]) -> str:
        from tierflow._engines.sql._listing import listing_text

        return listing_text(tier, window, tags)

    async def list_measurements(
        self,
        engine: Engine,
        tier: TierConfig,
        window: Window,
        tags: Mapping[str, str],
        wanted: Callable[[str], bool],
    ) -> list[str]:
        from tierflow._engines.sql._listing import list_measurements

        return await list_measurements(engine, tier, window, tags, wanted)

    def make_engine(
        self, name: str, connection: ConnectionConfig, metrics: Metrics | None = None
    ) -> Engine:
        # Imported here: a 1.x or 2.x deployment need not load the 3.x engine.
        from tierflow._engines.sql._engine import InfluxDB3Engine

        return InfluxDB3Engine(name, self._connection(connection), metrics)

    async def field_types(
        self, engine: Engine, tier: TierConfig, measurement: str, *, now: datetime
    ) -> dict[str, frozenset[FieldType]]:
        from tierflow._engines.sql._relay import sql_field_types

        return await sql_field_types(engine, tier, measurement, now=now)

    async def aggregate_batches(
        self, engine: Engine, read: AggregateRead
    ) -> AsyncIterator[PointBatch]:
        from tierflow._engines.sql._relay import sql_aggregate_batches

        async for batch in sql_aggregate_batches(engine, read):
            yield batch

    async def stage_window(self, engine: Engine, export: WindowExport) -> StagedWindow:
        from tierflow._engines.sql._archiving import stage_sql

        return await stage_sql(engine, export)

    async def server_problems(
        self, engine: Engine, config: Config, name: str, problems: list[Problem]
    ) -> None:
        from tierflow._engines.sql._validate import check_influxdb3

        await check_influxdb3(engine, config, name, problems)

    def admin(self) -> TierAdmin:
        from tierflow._engines.sql._apply import ADMIN

        return ADMIN


#: The one SQL dialect (what the registry finds in this package).
DIALECT = Sql()
