"""Flux, as InfluxDB 2.x speaks it: the static side of the 2.x engine (see
`tierflow._engines._dialect.Dialect`). Light to import: the engine, the exports and the checks
are imported when first used."""

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
    from tierflow._templates import DeleteRange, RenderedQuery
    from tierflow._validation import Problem
    from tierflow._windows import Window

__all__ = ["DIALECT", "Flux"]

_SELECTORS = frozenset({"count", "first", "last", "mode"})

#: From Flux's source (`stdlib/universe/max.go`, `min.go`: no boolean or string selector) and
#: documentation. (`mode` is refused by the capabilities below.)
_ACCEPTED: Mapping[str, frozenset[str]] = {
    **dict.fromkeys(_SELECTORS, EVERY_TYPE),
    **dict.fromkeys(("min", "max", "mean", "median", "spread", "stddev", "sum"), NUMBERS),
}


class Flux(Dialect):
    """InfluxDB 2.x (OSS or Cloud), one org per connection."""

    name = "flux"
    kind = "influxdb2"
    template_suffix = ".flux.j2"
    package = "tierflow._engines.flux"
    # A `//` comment would swallow everything after it if lines were joined.
    one_line = False
    capabilities = Capabilities(
        write=True,
        delete_window=True,
        aggregates=frozenset(_ACCEPTED) - {"mode"},
        why_not={
            "mode": (
                "'mode' is not supported on InfluxDB 2.x: Flux's mode() returns every "
                "tied value where InfluxQL's MODE() picks one, so results would differ"
            ),
        },
    )
    accepted_types = _ACCEPTED
    client_module = None  # the shared HTTP layer: nothing beyond the core install
    credentials_hint = 'token = { env = "…" } (or { file = "…" })'

    def filters(self) -> Mapping[str, Callable[..., Any]]:
        from tierflow._engines.flux._literals import FLUX_FILTERS

        return FLUX_FILTERS

    def query_problems(
        self, text: str, *, window: Window, dest: Target, require_write: bool
    ) -> Iterator[str]:
        from tierflow._engines.flux._checks import flux_problems

        return flux_problems(text, window, dest, require_write)

    def scope(self, connection: ConnectionConfig) -> str | None:
        return str(self._connection(connection).org)

    def secret(self, connection: ConnectionConfig) -> tuple[str, SecretSource | None]:
        return "token", self._connection(connection).token

    def describe_place(self, connection: ConnectionConfig, url: str, tier: TierConfig) -> str:
        import json

        org = json.dumps(self.scope(connection))
        return f"{self.kind} {url} org {org} bucket {json.dumps(tier.bucket)}"

    def place(self, connection: ConnectionConfig, tier: TierConfig) -> tuple[str, str | None]:
        return tier.bucket, None

    def check_delete(self, target: DeleteRange) -> None:
        from tierflow._engines.flux._literals import delete_predicate

        delete_predicate(target)  # refuses what the predicate cannot say

    def render_export(self, config: Config, job: ArchiveJob, batch: Batch) -> RenderedQuery:
        from tierflow._engines.flux._export import export_script
        from tierflow._templates import RenderedQuery

        source = config.tiers[job.source]
        scripts = [
            export_script(
                bucket=source.bucket,
                measurement=measurement,
                start=batch.range.start,
                stop=batch.range.stop,
                tags=job.tags,
            )
            for measurement in job.measurements
        ]
        return RenderedQuery("\n".join(scripts), "export", "builtin", self.name)

    def render_measurements(self, tier: TierConfig, window: Window, tags: Mapping[str, str]) -> str:
        from tierflow._engines.flux._listing import measurements_script

        return measurements_script(tier, window, tags)

    async def list_measurements(
        self,
        engine: Engine,
        tier: TierConfig,
        window: Window,
        tags: Mapping[str, str],
        wanted: Callable[[str], bool],
    ) -> list[str]:
        # One read answers every name (storage reads them as tag values): nothing to skip.
        from tierflow._engines.flux._listing import list_measurements

        return await list_measurements(engine, tier, window, tags)

    def make_engine(
        self, name: str, connection: ConnectionConfig, metrics: Metrics | None = None
    ) -> Engine:
        # Imported here: a 1.x deployment need not load the 2.x engine.
        from tierflow._engines.flux._engine import FluxEngine

        return FluxEngine(name, self._connection(connection), metrics)

    async def field_types(
        self, engine: Engine, tier: TierConfig, measurement: str, *, now: datetime
    ) -> dict[str, frozenset[FieldType]]:
        from tierflow._engines.flux._reads import flux_field_types

        return await flux_field_types(engine, tier, measurement, now=now)

    async def aggregate_batches(
        self, engine: Engine, read: AggregateRead
    ) -> AsyncIterator[PointBatch]:
        # The server's own column types say what each aggregate made.
        from tierflow._engines._base import bare
        from tierflow._engines.flux._engine import FluxEngine
        from tierflow._engines.flux._export import annotated_batches

        async for batch in annotated_batches(bare(engine, FluxEngine).stream(read.query.text)):
            yield batch

    async def stage_window(self, engine: Engine, export: WindowExport) -> StagedWindow:
        from tierflow._engines.flux._archiving import stage_flux

        return await stage_flux(engine, export)

    async def server_problems(
        self, engine: Engine, config: Config, name: str, problems: list[Problem]
    ) -> None:
        from tierflow._engines.flux._validate import check_influxdb2

        await check_influxdb2(engine, config, name, problems)

    def admin(self) -> TierAdmin:
        from tierflow._engines.flux._apply import ADMIN

        return ADMIN


#: The one Flux dialect (what the registry finds in this package).
DIALECT = Flux()
