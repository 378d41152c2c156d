"""InfluxDB 1.x: InfluxQL over HTTP with aiohttp."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgpack

from tierflow._config import InfluxDB1Connection
from tierflow._engines._base import (
    MISSING_TARGET_FIX,
    Engine,
    Execution,
    KnownError,
    Series,
    describe_failure,
    recognise,
    retry_after_seconds,
    with_fix,
)
from tierflow._errors import (
    AuthError,
    EngineError,
    QueryError,
    SecretError,
    TransientEngineError,
)
from tierflow._metrics import Metrics
from tierflow._secrets import refresh
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
# Overload and server errors (services/httpd/handler.go answers 500 for unexpected errors, 503
# when throttled); proxies in between add 502/504, 408 and 429.
_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def classify(status: int | None, message: str) -> type[EngineError]:
    """Which error class a 1.x failure is. `status` None means a statement error inside a 200.
    A decisive text wins over the status; otherwise the status decides, and for statement
    errors the text."""
    known = recognise(_KNOWN, message)
    if known is not None and known.decisive:
        return known.error
    if status in _TRANSIENT_STATUSES:
        return TransientEngineError
    if status in {400, 404}:
        return QueryError
    if status is None:
        return known.error if known is not None else QueryError
    return EngineError


def explain(message: str) -> str:
    """A 1.x error message, followed by how to fix it when the table above knows."""
    return with_fix(_KNOWN, message)


class InfluxQLEngine(Engine):
    """Sends InfluxQL to one InfluxDB 1.x server, at most `max_concurrency` requests at a time."""

    dialect = "influxql"

    def __init__(
        self, name: str, config: InfluxDB1Connection, metrics: Metrics | None = None
    ) -> None:
        self.name = name
        self.config = config
        self.metrics = metrics
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(config.max_concurrency)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                base_url=self.config.url.rstrip("/") + "/",
                timeout=aiohttp.ClientTimeout(
                    total=self.config.timeout.total_seconds(),
                    sock_connect=self.config.connect_timeout.total_seconds(),
                ),
                connector=aiohttp.TCPConnector(limit=self.config.max_concurrency),
                auto_decompress=True,
                # aiohttp asks for gzip by default; gzip = false must mean no compression.
                headers={"Accept-Encoding": "gzip" if self.config.gzip else "identity"},
            )
        return self._session

    def _auth(self) -> dict[str, str]:
        """The basic-auth header, if the connection has a user (UTF-8, as InfluxDB reads it;
        built here: aiohttp's `BasicAuth` is deprecated and encodes Latin-1)."""
        if self.config.username is None:
            return {}
        password = self.config.password.resolve() if self.config.password else ""
        pair = f"{self.config.username}:{password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}

    async def execute(self, query: RenderedQuery, *, database: str | None = None) -> Execution:
        form = {"q": query.text}
        if database:
            form["db"] = database
        body, sent, received = await self._post("query", form, kind="execute")
        return Execution(_points_written(body, self.name), sent, received)

    async def query(self, text: str, *, database: str | None = None) -> list[Series]:
        form = {"q": text, "epoch": "ns"}
        if database:
            form["db"] = database
        body, _, _ = await self._post("query", form, kind="query")
        return _series(body, self.name)

    async def ping(self) -> None:
        try:
            async with self._client().get("ping", headers=self._auth()) as response:
                if response.status != 204:
                    raise classify(response.status, "")(
                        f"connection {self.name}: /ping answered HTTP {response.status}",
                        status=response.status,
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientEngineError(
                f"connection {self.name}: {self.config.url} unreachable: {describe_failure(exc)}"
            ) from exc

    async def _post(self, path: str, form: dict[str, str], *, kind: str) -> tuple[Any, int, int]:
        raw = await self._request(path, kind, data=form, size=_form_size(form))
        return _json(raw), _form_size(form), len(raw)

    async def write(
        self, body: bytes, *, database: str, retention_policy: str | None = None
    ) -> int:
        """POST line protocol (nanosecond timestamps) to /write; return the bytes sent. Any
        refusal, partial writes included, raises: a batch is never dropped silently."""
        params = {"db": database, "precision": "ns"}
        if retention_policy:
            params["rp"] = retention_policy
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        payload = body
        if self.config.gzip:
            payload = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        await self._request(
            "write",
            "write",
            data=payload,
            params=params,
            headers=headers,
            size=len(payload),
            expect=204,
        )
        return len(payload)

    async def stream(
        self, text: str, *, database: str | None = None, chunk_size: int = 10_000
    ) -> AsyncIterator[bytes]:
        """Run a read query as CSV with `chunked=true` and yield the body in pieces as they
        arrive, so a large export never sits in memory whole. (CSV: the server writes it
        faster than JSON, and Arrow parses it in C++.)"""
        form = {"q": text, "epoch": "ns", "chunked": "true", "chunk_size": str(chunk_size)}
        if database:
            form["db"] = database
        # Uncompressed: compressing a bulk export costs influxd the CPU it needs to produce rows
        # (measured: 0.72x of curl compressed, 0.98x uncompressed).
        headers = {"Accept": "application/csv", "Accept-Encoding": "identity"}
        async for piece in self._stream_body(form, headers):
            if piece.startswith((b'{"error"', b'{"results"')):
                # A statement error arrives as JSON even when CSV was asked for.
                _series(_json(piece), self.name)
            yield piece

    async def _stream_body(
        self, form: dict[str, str], headers: dict[str, str]
    ) -> AsyncIterator[bytes]:
        """POST /query and yield the body in pieces as they arrive, under one slot, with a
        timeout per read rather than a total one."""
        try:
            auth = self._auth()
        except SecretError as exc:
            raise AuthError(f"connection {self.name}: {exc}") from None
        received = 0
        async with self._slots:
            try:
                async with self._client().post(
                    "query",
                    data=form,
                    headers={**headers, **auth},
                    timeout=self._stream_timeout(),
                ) as response:
                    if response.status != 200:
                        raw = await response.read()
                        raise self._refusal(response.status, raw, None)
                    async for piece in response.content.iter_any():
                        received += len(piece)
                        yield piece
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TransientEngineError(
                    f"connection {self.name}: {self.config.url}: {describe_failure(exc)}"
                ) from exc
            finally:
                if self.metrics is not None:
                    self.metrics.payload_bytes.labels(self.name, "received").inc(received)

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
        async for piece in self._stream_body(form, {"Accept": "application/x-msgpack"}):
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

    def _stream_timeout(self) -> aiohttp.ClientTimeout:
        # A stream may run for long: the total timeout would cut it, so bound each read instead.
        return aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.config.connect_timeout.total_seconds(),
            sock_read=self.config.timeout.total_seconds(),
        )

    async def _request(
        self,
        path: str,
        kind: str,
        *,
        data: Any,
        size: int,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        expect: int = 200,
    ) -> bytes:
        status, raw, retry_after = await self._send(path, kind, data, params, headers, size)
        if status == 401 and self.config.password is not None:
            # The password may have been rotated at its source: fetch it again, try once more.
            refresh(self.config.password)
            status, raw, retry_after = await self._send(path, kind, data, params, headers, size)
        if status != expect:
            raise self._refusal(status, raw, retry_after)
        return raw

    def _refusal(self, status: int, raw: bytes, retry_after: float | None) -> EngineError:
        body = _json(raw) or _msgpack(raw)
        message = body.get("error", "") if isinstance(body, dict) else ""
        message = message or raw[:200].decode("utf-8", "replace").strip()
        error = AuthError if status in {401, 403} else classify(status, message)
        return error(
            f"connection {self.name}: HTTP {status}: {explain(message)}",
            status=status,
            retry_after=retry_after,
        )

    async def _send(
        self,
        path: str,
        kind: str,
        data: Any,
        params: dict[str, str] | None,
        headers: dict[str, str] | None,
        size: int,
    ) -> tuple[int, bytes, float | None]:
        try:
            auth = self._auth()
        except SecretError as exc:
            raise AuthError(f"connection {self.name}: {exc}") from None
        async with self._slots:
            began = time.perf_counter()
            try:
                async with self._client().post(
                    path, data=data, params=params, headers={**(headers or {}), **auth}
                ) as response:
                    raw = await response.read()
                    status = response.status
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TransientEngineError(
                    f"connection {self.name}: {self.config.url}: {describe_failure(exc)}"
                ) from exc
            finally:
                if self.metrics is not None:
                    self.metrics.query_duration.labels(self.name, kind).observe(
                        time.perf_counter() - began
                    )
        if self.metrics is not None:
            self.metrics.payload_bytes.labels(self.name, "sent").inc(size)
            self.metrics.payload_bytes.labels(self.name, "received").inc(len(raw))
        return status, raw, retry_after

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _form_size(form: dict[str, str]) -> int:
    return sum(len(key) + len(value.encode()) + 2 for key, value in form.items())


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _msgpack(raw: bytes) -> Any:
    """An error body influxd wrote as MessagePack (it answers in the format asked for)."""
    try:
        return msgpack.unpackb(raw, raw=False)
    except (ValueError, msgpack.UnpackException):
        return None


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
