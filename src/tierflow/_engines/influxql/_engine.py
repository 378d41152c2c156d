"""InfluxDB 1.x: InfluxQL over HTTP, through the shared HTTP layer (`tierflow._http`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgpack

from tierflow._config import InfluxDB1Connection
from tierflow._engines._base import (
    MISSING_TARGET_FIX,
    Engine,
    Execution,
    Series,
    connection_http,
)
from tierflow._engines.influxql._dialect import DIALECT
from tierflow._errors import QueryError, TransientEngineError
from tierflow._http import (
    ANY_STATUS,
    AuthProvider,
    BasicAuth,
    ErrorTable,
    KnownError,
    NoAuth,
    Transport,
    json_or_none,
)
from tierflow._metrics import Metrics
from tierflow._templates import RenderedQuery

__all__ = ["InfluxQLEngine", "classify", "explain"]

# InfluxDB 1.x's error texts, first match wins. Paths are in influxdb 1.x's source
# (github.com/influxdata/influxdb, 1.6; Debian ships it under /usr/share/gocode/src). The
# server reports statement errors inside a 200; `/write` answers 400 for client errors and
# partial writes, 404 for an unknown database, 403 for authorization, 500 for anything else.
_LIMIT_FIX = "a server limit: raise it in influxd's config, or use a smaller catchup_chunk"
_KNOWN: tuple[KnownError, ...] = (
    # errors.go ErrDatabaseNotFound; coordinator/statement_executor.go; /write: 404.
    KnownError("database not found", QueryError, MISSING_TARGET_FIX, decisive=True),
    # errors.go ErrRetentionPolicyNotFound, services/meta/errors.go; /write answers it with 500.
    KnownError("retention policy not found", QueryError, MISSING_TARGET_FIX, decisive=True),
    # services/meta/errors.go ErrDatabaseNotExists.
    KnownError("database does not exist", QueryError, MISSING_TARGET_FIX, decisive=True),
    # coordinator/statement_executor.go: a bucket without a policy, on a database without a
    # default one.
    KnownError(
        "default retention policy not set",
        QueryError,
        "name the retention policy in the tier's bucket (database/policy)",
        decisive=True,
    ),
    # coordinator/points_writer.go: a partial write (400) of points older than the policy keeps.
    KnownError(
        "points beyond retention policy",
        QueryError,
        "the points are older than the retention policy's duration",
    ),
    # tsdb/shard.go ErrFieldTypeConflict (400, a partial write).
    KnownError("field type conflict", QueryError, "a field keeps one type per shard"),
    # tsdb/index/inmem/inmem.go: partial writes (400) beyond [data] limits.
    KnownError("max-series-per-database limit exceeded", QueryError, _LIMIT_FIX),
    KnownError("max-values-per-tag limit exceeded", QueryError, _LIMIT_FIX),
    # tsdb/shard.go PartialWriteError: anything else dropped.
    KnownError("partial write", QueryError),
    # query/compile.go, tsdb/shard.go, tsdb/index.go, query/executor.go: [coordinator] limits;
    # the same query hits them again. ("exceeed" is 1.x's own spelling of the point limit.)
    KnownError(r"max-select-(point|series|buckets) limit exce+d", QueryError, _LIMIT_FIX),
    KnownError("query-timeout limit exceeded", QueryError, _LIMIT_FIX),
    # query/executor.go: another query finishing frees a slot.
    KnownError("max-concurrent-queries limit exceeded", TransientEngineError),
    # tsdb/engine/tsm1/cache.go: the cache drains as it is snapshotted.
    KnownError("cache-max-memory-size exceeded", TransientEngineError),
    KnownError("cache maximum memory size exceeded", TransientEngineError),
    # Closing or opening: tsdb/shard.go ErrEngineClosed, ErrShardDisabled; tsdb/store.go
    # ErrStoreClosed; tsdb/index.go ErrIndexClosing; tsdb/series_file.go,
    # tsdb/series_partition.go; tsdb/engine/tsm1/wal.go ErrWALClosed.
    KnownError("engine is closed", TransientEngineError),
    KnownError("shard is disabled", TransientEngineError),
    KnownError("store is closed", TransientEngineError),
    KnownError("index is closing", TransientEngineError),
    KnownError("series (file|partition) closed", TransientEngineError),
    KnownError("wal closed", TransientEngineError),
    # services/httpd/handler.go: 503 when [http] max-concurrent-write-limit's queue is full.
    KnownError("request throttled", TransientEngineError),
    # InfluxDB Enterprise's cluster writes.
    KnownError("hinted handoff queue not empty", TransientEngineError),
    # Network timeouts inside the server. Specific phrases: a bare "timeout" is the query's own
    # limit (permanent) and would also match a name such as "http_timeouts".
    KnownError("timeout waiting for", TransientEngineError),
    KnownError("i/o timeout", TransientEngineError),
    KnownError("context deadline exceeded", TransientEngineError),
)
#: The shared status table with 1.x's texts. (services/httpd/handler.go answers 500 for
#: unexpected errors, 503 when throttled; statement errors arrive inside a 200.)
ERRORS = ErrorTable(_KNOWN)
#: Which error class a 1.x failure is (`status` None: a statement error inside a 200).
classify = ERRORS.classify
#: A 1.x error message, followed by how to fix it when the table above knows.
explain = ERRORS.explain


class InfluxQLEngine(Engine):
    """Sends InfluxQL to one InfluxDB 1.x server, at most `max_concurrency` requests at a time,
    through the shared HTTP layer (`transport` replaces the network in request-contract tests)."""

    dialect = DIALECT

    def __init__(
        self,
        name: str,
        config: InfluxDB1Connection,
        metrics: Metrics | None = None,
        *,
        transport: Transport | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.metrics = metrics
        auth: AuthProvider = NoAuth()
        if config.username is not None:
            auth = BasicAuth(config.username, config.password)
        self.http = connection_http(
            name, config, auth=auth, errors=ERRORS, metrics=metrics, transport=transport
        )

    async def execute(self, query: RenderedQuery, *, database: str | None = None) -> Execution:
        form = {"q": query.text}
        if database:
            form["db"] = database
        reply = await self.http.request("POST", "query", kind="execute", form=form)
        return Execution(_points_written(reply.json(), self.name), reply.sent, len(reply.body))

    async def query(self, text: str, *, database: str | None = None) -> list[Series]:
        form = {"q": text, "epoch": "ns"}
        if database:
            form["db"] = database
        reply = await self.http.request("POST", "query", kind="query", form=form)
        return _series(reply.json(), self.name)

    async def ping(self) -> None:
        reply = await self.http.request("GET", "ping", kind="ping", ok=ANY_STATUS, probe=True)
        if reply.status != 204:
            raise classify(reply.status, "")(
                f"connection {self.name}: /ping answered HTTP {reply.status}",
                status=reply.status,
            )

    async def write(
        self, body: bytes, *, database: str, retention_policy: str | None = None
    ) -> int:
        """POST line protocol (nanosecond timestamps) to /write; return the bytes sent. Any
        refusal, partial writes included, raises: a batch is never dropped silently."""
        params = {"db": database, "precision": "ns"}
        if retention_policy:
            params["rp"] = retention_policy
        reply = await self.http.request(
            "POST",
            "write",
            kind="write",
            params=params,
            headers={"Content-Type": "text/plain; charset=utf-8"},
            body=body,
            compress=True,
            ok=(204,),
        )
        return reply.sent

    async def stream(
        self, text: str, *, database: str | None = None, chunk_size: int = 10_000
    ) -> AsyncIterator[bytes]:
        """Beyond the contract, the 1.x export primitive: run a read query as CSV with
        `chunked=true` and yield the body in pieces as they arrive, so a large export never
        sits in memory whole. (CSV: the server writes it faster than JSON, and Arrow parses it
        in C++.) Not retried: a stream half read cannot be; the window that reads it is re-run."""
        form = {"q": text, "epoch": "ns", "chunked": "true", "chunk_size": str(chunk_size)}
        if database:
            form["db"] = database
        # Uncompressed: compressing a bulk export costs influxd the CPU it needs to produce rows
        # (measured: 0.72x of curl compressed, 0.98x uncompressed).
        headers = {"Accept": "application/csv", "Accept-Encoding": "identity"}
        async with self.http.stream(
            "POST", "query", kind="stream", form=form, headers=headers
        ) as response:
            async for piece in response.chunks():
                if piece.startswith((b'{"error"', b'{"results"')):
                    # A statement error arrives as JSON even when CSV was asked for.
                    _series(json_or_none(piece), self.name)
                yield piece

    async def query_chunks(
        self, text: str, *, database: str | None = None, chunk_size: int = 10_000
    ) -> AsyncIterator[list[Series]]:
        """`chunked=true` as MessagePack: influxd writes one document per chunk; each is parsed
        (and checked for statement errors) as it arrives. MessagePack, not JSON: it keeps a
        float's type (JSON writes 2.0 as 2 and -0.0 as -0) and tells "" from a missing value."""
        form = {"q": text, "epoch": "ns", "chunked": "true", "chunk_size": str(chunk_size)}
        if database:
            form["db"] = database
        unpacker = msgpack.Unpacker(raw=False)
        headers = {"Accept": "application/x-msgpack"}
        async with self.http.stream(
            "POST", "query", kind="query", form=form, headers=headers
        ) as response:
            async for piece in response.chunks():
                unpacker.feed(piece)
                try:
                    documents = list(unpacker)
                except (ValueError, msgpack.UnpackException) as exc:
                    # Invalid UTF-8 in a stored string, or a body that is not what influxd sends.
                    raise QueryError(
                        f"connection {self.name}: a result could not be decoded: {exc}"
                    ) from None
                for document in documents:
                    yield _series(document, self.name)

    async def aclose(self) -> None:
        await self.http.aclose()


def _points_written(body: Any, connection: str) -> int:
    """Sum what every `SELECT … INTO` statement wrote; raise on any statement-level error."""
    written = 0
    for series in _series(body, connection):
        if "written" in series.columns:
            index = series.columns.index("written")
            try:
                written += sum(int(row[index]) for row in series.values)
            except (TypeError, ValueError, IndexError):
                raise _malformed(connection) from None
    return written


def _malformed(connection: str) -> TransientEngineError:
    # A body that is not what InfluxDB sends: most likely a proxy in between answered.
    return TransientEngineError(f"connection {connection}: malformed response from server")


def _series(body: Any, connection: str) -> list[Series]:
    """The series of a 1.x JSON response; raise on any statement-level error."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise _malformed(connection)
    found: list[Series] = []
    for result in body["results"]:
        if not isinstance(result, dict):
            raise _malformed(connection)
        if error := result.get("error"):
            raise classify(None, str(error))(
                f"connection {connection}: statement {result.get('statement_id', '?')}: "
                f"{explain(str(error))}"
            )
        for item in result.get("series") or ():
            if not isinstance(item, dict) or not isinstance(item.get("values", []), list):
                raise _malformed(connection)
            found.append(
                Series(
                    str(item.get("name", "")),
                    dict(item.get("tags") or {}),
                    list(item.get("columns") or []),
                    list(item.get("values") or []),
                )
            )
    return found
