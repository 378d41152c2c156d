"""The engine contract: one connection's primitive requests, the same for every dialect.

See `Engine`; what is composed over these primitives in a language (typed exports, counts,
admin) is the `Dialect`'s (`tierflow._engines._dialect`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from tierflow._http import (
    AiohttpTransport,
    AuthProvider,
    ErrorTable,
    HttpClient,
    KnownError,
    Timeouts,
    Transport,
    describe_failure,
    recognise,
    retry_after_seconds,
    with_fix,
)
from tierflow._templates import DeleteRange, RenderedQuery

if TYPE_CHECKING:
    from tierflow._config import ConnectionConfig
    from tierflow._engines._dialect import Dialect
    from tierflow._metrics import Metrics

__all__ = [
    "MISSING_TARGET_FIX",
    "Engine",
    "Execution",
    "KnownError",
    "Series",
    "bare",
    "connection_http",
    "describe_failure",
    "recognise",
    "retry_after_seconds",
    "with_fix",
]

#: What to do about a database, retention policy or bucket that does not exist.
MISSING_TARGET_FIX = "create it with `tierflow apply`"


@dataclass(frozen=True, slots=True)
class Execution:
    """What a query did on the server."""

    points_written: int
    bytes_sent: int
    bytes_received: int


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a read query's result: its tags and its rows."""

    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]


class Engine(ABC):
    """One connection's primitive requests: the contract the runner, the transfers and the
    dialect's own operations rely on, whatever the server.

    An engine sends text it is given (templates, windows and quoting stay outside, in the
    dialect) and reports what happened. `ResilientEngine` wraps every engine the runner uses
    with the connection's retries and circuit breaker; an engine itself never retries.

    Errors: every failure is an `EngineError`, never a driver's or the network's exception,
    and the engine alone decides whether it is transient (`EngineError.transient`: worth
    retrying, e.g. a 503, a timeout, a server closing) or permanent (a refused query, a missing
    database, bad credentials), and passes on the server's `Retry-After`. A read that fails
    part way raises; nothing is returned half read.

    What an engine can do beyond `execute`, `query` and `ping` is declared up front in its
    dialect's `Capabilities`; callers consult them before asking (config validation refuses a
    job that needs what the engine does not declare), so an engine is never asked for what it
    cannot do.
    """

    #: The language this engine speaks (its package's `Dialect`), for the operations composed
    #: over its primitives: typed reads, exports, admin calls.
    dialect: Dialect

    @abstractmethod
    async def execute(self, query: RenderedQuery, *, database: str | None = None) -> Execution:
        """Run a query that writes on the server (`SELECT … INTO`, `to()`), with the ranges in
        `query.deletes` deleted first as part of the same call; return what it wrote
        (`Execution.points_written` in the server's own unit) and the bytes each way. Raises
        `EngineError` if any statement fails."""

    @abstractmethod
    async def query(self, text: str, *, database: str | None = None) -> list[Series]:
        """Run a small read query and return its series, values typed as the server sent them
        (times as integer nanoseconds). Results are held in memory: for checks, counts and
        fingerprints, never for exports."""

    async def query_chunks(
        self, text: str, *, database: str | None = None, chunk_size: int = 10_000
    ) -> AsyncIterator[list[Series]]:
        """Run a read query and yield its series a chunk at a time (at most about `chunk_size`
        rows each; a series may span chunks), so a large result is never held whole. By
        default one chunk: the whole `query` result."""
        yield await self.query(text, database=database)

    async def write(
        self, body: bytes, *, database: str, retention_policy: str | None = None
    ) -> int:
        """Write line protocol (nanosecond timestamps) into `database` (and `retention_policy`,
        as the tier names them); return the bytes sent. A refusal of any part raises (a
        permanent `EngineError`, `status` set): a batch is never dropped silently.

        Gated by `capabilities.write`: callers ask only an engine whose dialect declares it;
        an engine that does not declare it keeps this default, which only a caller's bug
        reaches."""
        raise NotImplementedError(f"{type(self).__name__}: capabilities.write is not declared")

    async def delete(self, target: DeleteRange) -> None:
        """Delete `[start, stop)` of one measurement (narrowed by exact tag values) from one
        bucket, and nothing else: what `replace = true` does before a window is written again.

        Gated by `capabilities.delete_window` (config validation refuses `replace` on a dest
        without it); an engine that does not declare it keeps this default, which only a
        caller's bug reaches."""
        raise NotImplementedError(
            f"{type(self).__name__}: capabilities.delete_window is not declared"
        )

    @abstractmethod
    async def ping(self) -> None:
        """Raise an `EngineError` unless the server answers its health check (transient when
        it answers but is not ready). The circuit breaker's probe."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close connections. The engine may not be used afterwards."""

    def unwrapped(self) -> Engine:
        """The engine that sends the requests: itself, or the one a wrapper (the retry layer)
        wraps. A dialect's operations use it for their own engine's primitives that are not part
        of this contract (the export stream, admin calls)."""
        return self


def connection_http(
    name: str,
    config: ConnectionConfig,
    *,
    auth: AuthProvider,
    errors: ErrorTable,
    metrics: Metrics | None,
    transport: Transport | None = None,
    **tls: Any,
) -> HttpClient:
    """The shared HTTP layer for one connection, as its config says: the total and connect
    timeouts (the total also bounds each read of a stream), at most `max_concurrency`
    connections and requests, gzip; `transport` replaces the network (request-contract tests);
    `tls` (`verify_tls`, `ca_cert`) goes to the transport."""
    timeout = config.timeout.total_seconds()
    return HttpClient(
        name,
        config.url,
        transport=transport
        or AiohttpTransport(
            Timeouts(total=timeout, connect=config.connect_timeout.total_seconds(), read=timeout),
            max_connections=config.max_concurrency,
            **tls,
        ),
        auth=auth,
        errors=errors,
        max_concurrency=config.max_concurrency,
        gzip=config.gzip,
        metrics=metrics,
    )


E = TypeVar("E", bound=Engine)


def bare(engine: Engine, kind: type[E]) -> E:
    """The `kind` engine under `engine` (itself, or the one the retry layer wraps): what a
    dialect's operations use for their own engine's primitives beyond the contract."""
    found = engine.unwrapped()
    if not isinstance(found, kind):
        raise TypeError(f"{type(found).__name__} is not a {kind.__name__}")
    return found
