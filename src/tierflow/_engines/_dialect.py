"""The language side of an engine: what tierflow knows of a query language, and what it composes
over an engine's primitive requests in that language.

The split: an *Engine* (`tierflow._engines._base`) is one connection's primitive requests
(execute, query, write, delete, ping), wrapped by `ResilientEngine` with the connection's
retries and circuit breaker. A *Dialect* is the language: its templates, quoting filters and
safety checker, what it declares it can do (`Capabilities`), and the operations composed over
an engine's primitives that yield typed data: `PointBatch`es for archive exports and relay
reads, per-field counts for the archive's checks, field types, and `tierflow apply`'s admin
(`TierAdmin`). Those operations may use their own engine's primitives beyond the contract (the
export stream, the buckets API) through `Engine.unwrapped()`, inside their package only.

Each engine package (`tierflow._engines.<language>`) exposes one `Dialect` as `DIALECT`; the
registry in `tierflow._engines` maps a connection's `kind` to it. The rest of tierflow asks the
dialect, never compares dialect names or connection kinds: adding an engine is one new package
and one registry line.

This module stays light (no aiohttp session, no pyarrow): config checks and
`tierflow validate` use dialects without making an engine. Methods that need an engine or the
archive take them as arguments and import what they need when called.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tierflow._apply._model import Change, Expiring, Group, Observed, Place, ServerStep
    from tierflow._archive import FieldType, ParquetArchive, PointBatch
    from tierflow._archive._archive import StagedWindow
    from tierflow._config import ArchiveJob, Config, ConnectionConfig, TierConfig
    from tierflow._engines._base import Engine
    from tierflow._metrics import Metrics
    from tierflow._planner import Batch
    from tierflow._query_checks import Target
    from tierflow._secrets import SecretSource
    from tierflow._templates import DeleteRange, RenderedQuery
    from tierflow._validation import Problem
    from tierflow._windows import Window

__all__ = [
    "EVERY_TYPE",
    "NUMBERS",
    "AggregateRead",
    "Capabilities",
    "Dialect",
    "TierAdmin",
    "WindowExport",
]

#: Field types by the names `SHOW FIELD KEYS` gives them (`tierflow._archive.FieldType`'s
#: values; named here so that dialects load without pyarrow).
NUMBERS = frozenset({"float", "integer", "unsigned"})
EVERY_TYPE = NUMBERS | {"boolean", "string"}


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can do, declared up front so that config validation refuses a job the
    engine cannot run (instead of a method failing at run time).

    Each `False` carries, in `why_not`, the sentence config validation shows."""

    #: Write line protocol (restores, relays into this connection).
    write: bool = True
    #: Delete one measurement's window from one tier only (what `replace = true` needs).
    delete_window: bool = True
    #: Aggregates a downsample may use on this engine.
    aggregates: frozenset[str] = frozenset()
    #: The reason shown when a config asks for what is not supported: keyed by capability
    #: name (`delete_window`, `write`) or by aggregate name.
    why_not: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WindowExport:
    """One measurement's window of an archive job: what `Dialect.stage_window` exports."""

    archive: ParquetArchive
    job: ArchiveJob
    source: TierConfig
    measurement: str
    window: Window


@dataclass(frozen=True, slots=True)
class AggregateRead:
    """A relay's aggregating read of one measurement (`render_relay`): what
    `Dialect.aggregate_batches` runs, and the aggregates it computes of each field."""

    tier: TierConfig
    measurement: str
    aggregates: Mapping[str, tuple[str, ...]]
    query: RenderedQuery


class TierAdmin(ABC):
    """What `tierflow apply` asks of a dialect: observe the places its tiers live in (a 1.x
    database, a 2.x bucket), plan the changes, make them one step at a time, and say what a
    shrinking retention would delete. Observing and `expiring` only read; only `apply_step`
    changes a server. Engine errors propagate as they are (apply reports them)."""

    #: The tier values apply holds to the server's minimum (`MIN_RETENTION`).
    minimums: tuple[str, ...] = ("retention",)

    @abstractmethod
    async def observe_group(self, engine: Engine, group: Group, observed: Observed) -> None:
        """Read what the server holds for `group` into `observed` (`places`, and `scopes` for
        what is read once per connection); change nothing."""

    @abstractmethod
    def plan_group(
        self, group: Group, observed: Observed, problems: list[str]
    ) -> dict[str, Change]:
        """One change per tier of `group` (pure), the first tier on a place carrying its
        steps; append to `problems` what forbids applying them."""

    @abstractmethod
    async def apply_step(self, engine: Engine, step: ServerStep) -> None:
        """Make one of the steps `plan_group` planned."""

    @abstractmethod
    async def expiring(self, engine: Engine, place: Place, cutoff: datetime) -> Expiring:
        """What `place` holds older than `cutoff` (reads only): a count of field values and
        the oldest, which the server would delete once a shorter retention applies."""


class Dialect(ABC):
    """A query language and the server kind that speaks it: templates, literal quoting, the
    safety checker, field-type rules, and the reads that turn its answers into typed batches.

    Implementations are stateless singletons; every method is safe to call without a server
    unless it takes an engine.
    """

    #: The language's name: the folder of its built-in templates (`influxql/downsample…`) and
    #: the label in messages (`influxql mean takes …`).
    name: str
    #: The config's connection `kind` it serves.
    kind: str
    #: What a user's template file for this dialect ends in (`.influxql.j2`).
    template_suffix: str
    #: The package whose `templates/` folder holds the built-in templates.
    package: str
    #: Whether rendered text is joined into one line (no line comments in the language).
    one_line: bool
    #: What the engine can do.
    capabilities: Capabilities
    #: aggregate → the field types it accepts (`FieldType` values).
    accepted_types: Mapping[str, frozenset[str]]
    #: (module, extra) an engine of this kind imports, for `validate`'s install check; None
    #: when the core install suffices.
    client_module: tuple[str, str] | None = None
    #: How a connection of this kind takes credentials (for the URL-credentials hint).
    credentials_hint: str
    #: How the server reads backslashes in line protocol (`tierflow._lineprotocol.V1`: 1.x and
    #: 2.x; `V3`: 3.x): what restores and relays into it encode with.
    line_protocol: str = "v1"

    # -- static ----------------------------------------------------------------------------

    @abstractmethod
    def filters(self) -> Mapping[str, Callable[..., Any]]:
        """The Jinja filters that quote values into this language (`influxql_ident`, …)."""

    @abstractmethod
    def query_problems(
        self, text: str, *, window: Window, dest: Target, require_write: bool
    ) -> Iterator[str]:
        """Why a rendered query must not run for `window` (one sentence each), read through
        the language's own tokenizer: its time range, its writes, unbounded results."""

    @abstractmethod
    def scope(self, connection: ConnectionConfig) -> str | None:
        """The tenant a connection is scoped to (a 2.x org), or None when the server has none."""

    @abstractmethod
    def secret(self, connection: ConnectionConfig) -> tuple[str, SecretSource | None]:
        """The config key of the connection's secret and its source."""

    @abstractmethod
    def describe_place(self, connection: ConnectionConfig, url: str, tier: TierConfig) -> str:
        """Where a live tier's data lives, in words that do not depend on the tier's name (the
        job definition's record of its source and dest)."""

    @abstractmethod
    def place(self, connection: ConnectionConfig, tier: TierConfig) -> tuple[str, str | None]:
        """The (container, sub-container) a tier writes into on its server: (database,
        retention policy) on 1.x, (bucket, None) on 2.x; used to find overlapping outputs."""

    def check_delete(self, target: DeleteRange) -> None:
        """Raise `TemplateError` if this engine's delete cannot say `target` (checked when a
        `replace` query is rendered, before anything runs). By default any range can be."""
        return

    def fingerprint_needs_types(self) -> bool:
        """Whether source fingerprints cast fields by their server-reported types (the server
        cannot summarise a field without knowing its type), read by `field_types`."""
        return False

    @abstractmethod
    def render_export(self, config: Config, job: ArchiveJob, batch: Batch) -> RenderedQuery:
        """What an archive job reads for `batch`, as text (what `plan` shows and the ledger
        hashes): every point of each measurement in the window."""

    @abstractmethod
    def render_measurements(self, tier: TierConfig, window: Window, tags: Mapping[str, str]) -> str:
        """What `list_measurements` sends for `window`, as `plan` shows it (where a read
        depends on the server's answer to an earlier one, a placeholder stands for it)."""

    # -- with an engine --------------------------------------------------------------------

    @abstractmethod
    async def list_measurements(
        self,
        engine: Engine,
        tier: TierConfig,
        window: Window,
        tags: Mapping[str, str],
        wanted: Callable[[str], bool],
    ) -> list[str]:
        """The measurements of `tier` that hold at least one point (with the tag values
        `tags`) in `window`, sorted, and no other: bounded to the window and to the tier's own
        bucket or retention policy, not the whole database (empty: none has data there). What
        a measurement pattern is resolved against. `wanted` is the pattern: a dialect may skip
        the names it refuses before reading them (the caller matches the pattern again, so
        every dialect selects the same names)."""

    @abstractmethod
    def make_engine(
        self, name: str, connection: ConnectionConfig, metrics: Metrics | None = None
    ) -> Engine:
        """A bare engine for the connection (no retry layer)."""

    @abstractmethod
    async def field_types(
        self, engine: Engine, tier: TierConfig, measurement: str, *, now: datetime
    ) -> dict[str, frozenset[FieldType]]:
        """Every type each field of `measurement` has in the tier (empty: no such
        measurement)."""

    @abstractmethod
    def aggregate_batches(self, engine: Engine, read: AggregateRead) -> AsyncIterator[PointBatch]:
        """The rows of a relay's aggregating read as typed batches of points, streamed: exactly
        what `SELECT … INTO` / `to()` would write once null cells are left out (as the writer
        does)."""

    @abstractmethod
    async def stage_window(self, engine: Engine, export: WindowExport) -> StagedWindow:
        """Export one measurement's window into the archive's staging area and check it: per
        field, the values staged equal the server's own count over the same range (raise
        `ArchiveMismatchError` otherwise)."""

    async def check_server(
        self, config: Config, name: str, connection: ConnectionConfig
    ) -> Sequence[Problem]:
        """`validate --online`: what only the server knows (it answers its health check, and
        then `server_problems`), with a bare engine closed afterwards. An engine error ends the
        check as one more problem (marked unreachable when transient)."""
        from tierflow._errors import EngineError
        from tierflow._validation import Problem

        engine = self.make_engine(name, connection)
        problems: list[Problem] = []
        try:
            await engine.ping()
            await self.server_problems(engine, config, name, problems)
        except EngineError as exc:
            problems.append(Problem(str(exc), connection=name, unreachable=exc.transient))
        finally:
            await engine.aclose()
        return problems

    @abstractmethod
    async def server_problems(
        self, engine: Engine, config: Config, name: str, problems: list[Problem]
    ) -> None:
        """Append what the server of connection `name` says is wrong (its databases or buckets
        exist, the queries parse, the source fields have the aggregates' types); an
        `EngineError` may end it (what was appended stays)."""

    @abstractmethod
    def admin(self) -> TierAdmin:
        """What `tierflow apply` asks of this dialect."""

    @staticmethod
    def _connection(connection: ConnectionConfig) -> Any:
        # The registry hands a dialect only connections of its own kind: the concrete type
        # (`InfluxDB1Connection`, …) is its package's to know.
        return connection
