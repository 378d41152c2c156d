"""InfluxDB 2.x: Flux through `influxdb-client`'s async client (aiohttp underneath).

What this engine relies on, and what it avoids:

- The client is created lazily inside the running loop (`InfluxDBClientAsync` refuses to be
  made outside one) with an explicit aiohttp timeout (a *total* timeout: it covers the whole
  response body, so `timeout` must cover the longest streamed response), gzip, and a connection
  pool of `max_concurrency`.
- Downsampling runs on the server (`to()`). Points that tierflow carries itself (restores,
  relays) are posted by `write`, one body per call, to `/api/v2/write`: the client's batching
  writer, which drops a batch after its retries and loses buffered points on `client.close()`,
  is never used. Retries are tierflow's own (the resilience layer), driven by
  `EngineError.transient` and `retry_after`, decided here in `classify`.
- Query responses are streamed and counted, never held whole (`execute`, `stream`); `query`
  holds its (small) result, for fingerprints.
- On a 401 the token is fetched again from its source once and the request retried, so a
  rotated token needs no restart. Tokens never appear in messages: errors are built from the
  status and the server's own message, never from request headers.
- Every bucket a script reads or writes is looked up once in the connection's org (buckets API)
  before the first query that names it runs: a bucket of another org is refused, not queried.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from tierflow._config import InfluxDB2Connection
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
from tierflow._engines.flux._annotated_csv import FluxResultError, Row, rows
from tierflow._engines.flux._literals import delete_predicate
from tierflow._engines.flux._syntax import Kind, calls, tokenize
from tierflow._errors import AuthError, EngineError, QueryError, SecretError, TransientEngineError
from tierflow._metrics import Metrics
from tierflow._secrets import refresh
from tierflow._templates import DeleteRange, RenderedQuery
from tierflow._windows import isoformat

if TYPE_CHECKING:
    from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

__all__ = ["FluxEngine", "classify", "explain"]

T = TypeVar("T")

# InfluxDB 2.x answers `{"code", "message"}` with the status of its code
# (kit/transport/http/error_handler.go: "not found" 404, "invalid" 400, "unprocessable entity"
# and "conflict" 422, "request too large" 413, "too many requests" 429, "unavailable" 503,
# "unauthorized" 401, "forbidden" 403, "internal error" 500); Cloud adds 429/503 with
# Retry-After. Errors inside a 200 query stream are Flux error tables (status None here).
_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_PERMANENT_QUERY_STATUSES = frozenset({400, 404, 413, 422})
# 2.x's error texts, first match wins. Paths are in influxdb 2.x's source (influxdata/influxdb,
# branch 2.7).
_ORG_FIX = "check the connection's `org`"
_KNOWN: tuple[KnownError, ...] = (
    # query/stdlib/influxdata/influxdb/operators.go, provider.go: from()/to() of an unknown
    # bucket (404; task/backend/check_task_error.go calls it unrecoverable).
    KnownError("could not find bucket", QueryError, MISSING_TARGET_FIX, decisive=True),
    # tenant/error_bucket.go ErrBucketNotFound, ErrBucketNotFoundByName; http/write_handler.go
    # (404).
    KnownError(r'bucket (".*" )?not found', QueryError, MISSING_TARGET_FIX, decisive=True),
    # tenant/error_org.go ErrOrgNotFound, OrgNotFoundByName; provider.go "could not find org"
    # (404).
    KnownError(r'organization (name ".*" )?not found', QueryError, _ORG_FIX, decisive=True),
    KnownError("could not find org", QueryError, _ORG_FIX, decisive=True),
    # query/control/controller.go: the query queue is full (codes.ResourceExhausted, which 2.x
    # answers with 400: "these don't really map correctly").
    KnownError("queue length exceeded", TransientEngineError, decisive=True),
    # v1/coordinator/points_writer.go, http/write_handler.go: 422 "failure writing points to
    # database: partial write: dropped N points outside retention policy of duration …".
    KnownError(
        "(outside|beyond) retention policy",
        QueryError,
        "the points are older than the bucket's retention",
    ),
    # tsdb/shard.go ErrFieldTypeConflict (422, a partial write).
    KnownError("field type conflict", QueryError, "a field keeps one type per shard"),
    KnownError("partial write", QueryError),
    # http/points/points_parser.go ErrMaxBatchSizeExceeded (413 "request too large").
    KnownError("points batch is too large", QueryError),
    # http/write_handler.go, delete_handler.go (403); http/errors.go "unauthorized access"
    # (401): the status makes them auth errors.
    # query/control/controller.go: shutting down (500); tsdb as in 1.x: closing, the cache.
    KnownError("query controller shutdown", TransientEngineError),
    KnownError("cache-max-memory-size exceeded", TransientEngineError),
    KnownError("engine is closed", TransientEngineError),
    # Flux error tables about the network or the server being busy.
    KnownError("timeout", TransientEngineError),
    KnownError("timed out", TransientEngineError),
    KnownError("unavailable", TransientEngineError),
    KnownError("too many requests", TransientEngineError),
    KnownError("context deadline exceeded", TransientEngineError),
    KnownError("connection refused", TransientEngineError),
    KnownError("connection reset", TransientEngineError),
)
# Generated-service keywords that return the raw aiohttp response: no status raises, no parsing.
_RAW: dict[str, Any] = {
    "async_req": False,
    "_preload_content": False,
    "_return_http_data_only": True,
}
_DIALECT = {
    "header": True,
    "delimiter": ",",
    "annotations": ["datatype", "group", "default"],
    "commentPrefix": "#",
    # Nanoseconds: exports must keep every digit of a point's time.
    "dateTimeFormat": "RFC3339Nano",
}


def classify(status: int | None, message: str) -> type[EngineError]:
    """Which error class a 2.x failure is. `status` None: an error table inside a 200 stream.
    401/403 are auth errors; then a decisive text wins over the status; otherwise the status
    decides, and inside a stream the text."""
    if status in {401, 403}:
        return AuthError
    known = recognise(_KNOWN, message)
    if known is not None and known.decisive:
        return known.error
    if status in _TRANSIENT_STATUSES:
        return TransientEngineError
    if status in _PERMANENT_QUERY_STATUSES:
        return QueryError
    if status is None:
        return known.error if known is not None else QueryError
    return EngineError


def explain(message: str) -> str:
    """A 2.x error message, followed by how to fix it when the table above knows."""
    return with_fix(_KNOWN, message)


class _Unauthorized(Exception):
    """A 401: the caller fetches the token again and retries once."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FluxEngine(Engine):
    """Sends Flux to one InfluxDB 2.x server and org, at most `max_concurrency` at a time."""

    dialect = "flux"

    def __init__(
        self, name: str, config: InfluxDB2Connection, metrics: Metrics | None = None
    ) -> None:
        self.name = name
        self.config = config
        self.metrics = metrics
        self._client: InfluxDBClientAsync | None = None
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._known_buckets: set[str] = set()
        self._token = ""

    # -- the client ------------------------------------------------------------------------------

    def _make_client(self) -> InfluxDBClientAsync:
        try:
            from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
        except ImportError:
            raise EngineError(
                f"connection {self.name} is kind influxdb2, which needs the influxdb-client "
                "package: pip install 'tierflow[influxdb2]'"
            ) from None
        try:
            token = self.config.token.resolve()
        except SecretError as exc:
            raise AuthError(f"connection {self.name}: {exc}") from None
        self._token = token
        extra: dict[str, Any] = {}
        if self.config.ca_cert is not None:
            extra["ssl_ca_cert"] = str(self.config.ca_cert)
        return InfluxDBClientAsync(
            url=self.config.url,
            token=token,
            org=self.config.org,
            timeout=aiohttp.ClientTimeout(
                total=self.config.timeout.total_seconds(),
                sock_connect=self.config.connect_timeout.total_seconds(),
            ),
            enable_gzip=self.config.gzip,
            verify_ssl=self.config.verify_tls,
            connection_pool_maxsize=self.config.max_concurrency,
            **extra,
        )

    def _api(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
            if not self.config.gzip:
                # aiohttp asks for gzip on its own; `gzip = false` means uncompressed bodies.
                self._client.api_client.set_default_header("Accept-Encoding", "identity")
        return self._client.api_client

    async def _reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def scrub(self, text: str) -> str:
        """`text` with the token cut out, should a server or proxy have echoed it back."""
        return text.replace(self._token, "<redacted>") if len(self._token) >= 4 else text

    async def _authorized(self, call: Callable[[Any], Awaitable[T]]) -> T:
        """Run `call(api_client)`; on a 401 fetch the token again and try once more. Errors
        leave with the token scrubbed from their message."""
        try:
            return await self._scrubbed(call)
        except _Unauthorized:
            refresh(self.config.token)
            await self._reset()
        try:
            return await self._scrubbed(call)
        except _Unauthorized as exc:
            raise AuthError(
                f"connection {self.name}: HTTP 401: {self.scrub(exc.message)} (the token was "
                f"fetched again from {self.config.token.describe()} and still refused)",
                status=401,
            ) from None

    async def _scrubbed(self, call: Callable[[Any], Awaitable[T]]) -> T:
        try:
            return await call(self._api())
        except EngineError as exc:
            raise type(exc)(
                self.scrub(str(exc)), status=exc.status, retry_after=exc.retry_after
            ) from exc.__cause__

    # -- the contract ----------------------------------------------------------------------------

    async def execute(self, query: RenderedQuery, *, database: str | None = None) -> Execution:
        """Run a script that writes on the server (`to()`); `points_written` counts the rows
        `to()` passed on, one per field value written (2.x's unit of a point)."""
        await self._check_buckets(query.text)
        for delete in query.deletes:
            await self.delete(delete)
        written = 0
        async with self._stream(query.text, "execute") as (stream, sent):
            async for _ in stream:
                written += 1
            received = stream.received
        return Execution(written, sent, received)

    async def query(self, text: str, *, database: str | None = None) -> list[Series]:
        """Run a small read script: one `Series` per table, named by its result, with `time`
        (ns) first and the table's group-key string columns as its tags."""
        await self._check_buckets(text)
        tables: dict[tuple[str, str], Series] = {}
        async with self._stream(text, "query") as (stream, _):
            async for row in stream:
                _add_row(tables, row)
        return list(tables.values())

    async def write(
        self, body: bytes, *, database: str, retention_policy: str | None = None
    ) -> int:
        """POST line protocol (nanosecond timestamps) to `/api/v2/write` in this org; return the
        bytes sent. The bucket is the tier's `bucket` as written (`database`, or
        `database/retention_policy`: a 2.x bucket name may hold a slash). Anything but 204
        raises: 2.x refuses a whole body on a malformed line (400), one past retention (422)
        or too large (413), so a batch is never half-written silently."""
        from influxdb_client.service.write_service import WriteService

        bucket = f"{database}/{retention_policy}" if retention_policy else database
        await self._check_bucket_names({bucket})
        payload, extra = body, {}
        if self.config.gzip:
            payload = gzip.compress(body, compresslevel=1)
            extra["content_encoding"] = "gzip"
        status, raw, retry_after = await self._plain(
            "write",
            lambda api: WriteService(api).post_write_async(
                org=self.config.org,
                bucket=bucket,
                body=payload,
                precision="ns",
                **extra,
                **_RAW,
            ),
        )
        self._count("sent", len(payload))
        self._expect(204, status, raw, retry_after, f"writing to bucket {bucket!r}")
        return len(payload)

    async def stream(
        self, text: str, *, database: str | None = None, chunk_size: int = 10_000
    ) -> AsyncIterator[bytes]:
        """Run a read script and yield its annotated CSV body (RFC 3339 times with nanoseconds)
        in pieces as they arrive; the export path reads it block by block
        (`tierflow._engines.flux._export`). An error table inside the body is left to that
        reader."""
        await self._check_buckets(text)
        async with self._stream(text, "stream") as (stream, _):
            async for piece in stream.pieces():
                yield piece

    async def ping(self) -> None:
        """`/health` must say pass and `/ready` must answer 200."""
        from influxdb_client.service.health_service import HealthService
        from influxdb_client.service.ready_service import ReadyService

        checks = {
            "/health": lambda api: HealthService(api).get_health_async(**_RAW),
            "/ready": lambda api: ReadyService(api).get_ready_async(**_RAW),
        }
        for path, request in checks.items():
            status, body, _ = await self._plain("ping", request)
            if status != 200:
                raise classify(status, "")(
                    f"connection {self.name}: {path} answered HTTP {status}: {_message(body)}",
                    status=status,
                )
            if path == "/health" and _json(body).get("status") != "pass":
                raise TransientEngineError(
                    f"connection {self.name}: /health is not pass: {_message(body)}"
                )

    async def aclose(self) -> None:
        await self._reset()

    # -- beyond the contract: replace, validate --online ----------------------------------------

    async def delete(self, target: DeleteRange) -> None:
        """Delete `[start, stop)` of one measurement (narrowed by tags) from a bucket of this
        org. `/api/v2/delete` takes an inclusive stop, so it is moved back by one nanosecond's
        worth: the smallest step RFC 3339 can say."""
        from influxdb_client.domain.delete_predicate_request import DeletePredicateRequest
        from influxdb_client.service.delete_service import DeleteService

        body = DeletePredicateRequest(
            start=isoformat(target.start),
            stop=_just_before(target.stop),
            predicate=delete_predicate(target),
        )
        self._count("sent", len(str(body.to_dict())))
        status, raw, retry_after = await self._plain(
            "delete",
            lambda api: DeleteService(api).post_delete_async(
                delete_predicate_request=body, org=self.config.org, bucket=target.bucket, **_RAW
            ),
        )
        if status != 204:
            message = _message(raw)
            raise classify(status, message)(
                f"connection {self.name}: deleting {target.measurement!r} from bucket "
                f"{target.bucket!r}: HTTP {status}: {explain(message)}",
                status=status,
                retry_after=retry_after,
            )

    async def analyze(self, text: str) -> list[str]:
        """The server's syntax errors for a script (`POST /api/v2/query/analyze`)."""
        from influxdb_client.domain.query import Query
        from influxdb_client.service.query_service import QueryService

        payload = Query(query=text, type="flux")
        status, raw, retry_after = await self._plain(
            "analyze", lambda api: QueryService(api).post_query_analyze_async(query=payload, **_RAW)
        )
        if status != 200:
            raise classify(status, "")(
                f"connection {self.name}: /api/v2/query/analyze: HTTP {status}: {_message(raw)}",
                status=status,
                retry_after=retry_after,
            )
        errors = _json(raw).get("errors") or []
        return [
            f"line {e.get('line', '?')}:{e.get('column', '?')}: {e.get('message', '')}"
            for e in errors
            if isinstance(e, dict)
        ]

    async def bucket_exists(self, bucket: str) -> bool:
        """Whether `bucket` is a bucket of this connection's org."""
        from influxdb_client.service.buckets_service import BucketsService

        status, raw, retry_after = await self._plain(
            "buckets",
            lambda api: BucketsService(api).get_buckets_async(
                org=self.config.org, name=bucket, **_RAW
            ),
        )
        if status == 404:
            return False  # OSS answers 404 when the org or the bucket is unknown
        if status != 200:
            raise classify(status, "")(
                f"connection {self.name}: looking up bucket {bucket!r}: HTTP {status}: "
                f"{_message(raw)}",
                status=status,
                retry_after=retry_after,
            )
        found = _json(raw).get("buckets") or []
        return any(isinstance(b, dict) and b.get("name") == bucket for b in found)

    # -- beyond the contract: buckets, for `tierflow apply` -------------------------------------

    async def org_id(self) -> str | None:
        """The ID of this connection's org (`GET /api/v2/orgs?org=`), None if there is none."""
        from influxdb_client.service.organizations_service import OrganizationsService

        status, raw, retry_after = await self._plain(
            "orgs",
            lambda api: OrganizationsService(api).get_orgs_async(org=self.config.org, **_RAW),
        )
        if status == 404:
            return None  # OSS answers 404 for an unknown org name
        self._expect(200, status, raw, retry_after, f"looking up org {self.config.org!r}")
        found = _json(raw).get("orgs") or []
        return next(
            (
                str(org["id"])
                for org in found
                if isinstance(org, dict) and org.get("name") == self.config.org and org.get("id")
            ),
            None,
        )

    async def find_bucket(self, name: str, org_id: str) -> dict[str, Any] | None:
        """Bucket `name` of org `org_id` as the buckets API describes it, or None."""
        from influxdb_client.service.buckets_service import BucketsService

        status, raw, retry_after = await self._plain(
            "buckets",
            lambda api: BucketsService(api).get_buckets_async(org_id=org_id, name=name, **_RAW),
        )
        if status == 404:
            return None
        self._expect(200, status, raw, retry_after, f"looking up bucket {name!r}")
        found = _json(raw).get("buckets") or []
        return next((b for b in found if isinstance(b, dict) and b.get("name") == name), None)

    async def create_bucket(self, body: dict[str, Any]) -> None:
        """`POST /api/v2/buckets` with `body` (`orgID`, `name`, `retentionRules`)."""
        from influxdb_client.service.buckets_service import BucketsService

        status, raw, retry_after = await self._plain(
            "buckets",
            lambda api: BucketsService(api).post_buckets_async(post_bucket_request=body, **_RAW),
        )
        self._expect(201, status, raw, retry_after, f"creating bucket {body.get('name')!r}")

    async def update_bucket(self, bucket_id: str, body: dict[str, Any]) -> None:
        """`PATCH /api/v2/buckets/{bucket_id}` with `body` (e.g. `retentionRules`)."""
        from influxdb_client.service.buckets_service import BucketsService

        status, raw, retry_after = await self._plain(
            "buckets",
            lambda api: BucketsService(api).patch_buckets_id_async(bucket_id, body, **_RAW),
        )
        self._expect(200, status, raw, retry_after, f"updating bucket {bucket_id}")

    def _expect(
        self, expected: int, status: int, raw: bytes, retry_after: float | None, doing: str
    ) -> None:
        if status != expected:
            message = _message(raw)
            raise classify(status, message)(
                f"connection {self.name}: {doing}: HTTP {status}: {explain(message)}",
                status=status,
                retry_after=retry_after,
            )

    async def _check_buckets(self, text: str) -> None:
        await self._check_bucket_names(
            {
                token.value
                for call in calls(tokenize(text))
                if call.name in {"from", "to"}
                for token in call.args.get("bucket", ())
                if token.kind is Kind.STRING and token.value is not None
            }
        )

    async def _check_bucket_names(self, names: set[str]) -> None:
        for bucket in sorted(names - self._known_buckets):
            if not await self.bucket_exists(bucket):
                raise QueryError(
                    f"connection {self.name}: bucket {bucket!r} is not a bucket of org "
                    f"{self.config.org!r}; nothing was sent"
                )
            self._known_buckets.add(bucket)

    # -- HTTP --------------------------------------------------------------------------------------

    def _stream(self, text: str, kind: str) -> _Stream:
        return _Stream(self, text, kind)

    async def _open_query(self, text: str, kind: str) -> tuple[Any, int]:
        """POST /api/v2/query; return the open response (status 200) and the bytes sent."""
        from influxdb_client.domain.query import Query
        from influxdb_client.service.query_service import QueryService

        payload = Query(query=text, type="flux", dialect=_DIALECT)
        sent = len(json.dumps({"query": text, "type": "flux", "dialect": _DIALECT}).encode())

        async def post(api: Any) -> Any:
            if kind == "stream":
                request = self._post_unbounded(api, "/api/v2/query", payload)
            else:
                request = QueryService(api).post_query_async(
                    org=self.config.org, query=payload, **_RAW
                )
            response = await _network(self, request)
            if response.status == 401:
                raw = await response.read()
                response.release()
                raise _Unauthorized(_message(raw))
            if response.status != 200:
                raw = await response.read()
                response.release()
                message = _message(raw)
                raise classify(response.status, message)(
                    f"connection {self.name}: HTTP {response.status}: {explain(message)}",
                    status=response.status,
                    retry_after=retry_after_seconds(response.headers.get("Retry-After")),
                )
            return response

        response = await self._authorized(post)
        self._count("sent", sent)
        return response, sent

    async def _post_unbounded(self, api: Any, path: str, body: Any) -> Any:
        """POST through the client's own session (its headers, token included), with a timeout
        on each read instead of the client's total one: a bulk export may stream for longer
        than any sensible total, as long as the server keeps sending."""
        rest = api.rest_client
        extra = {"proxy": rest.proxy, "proxy_headers": rest.proxy_headers} if rest.proxy else {}
        return await rest.pool_manager.post(
            f"{self.config.url.rstrip('/')}{path}",
            params={"org": self.config.org},
            data=json.dumps(api.sanitize_for_serialization(body)),
            headers={**api.default_headers, "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.config.connect_timeout.total_seconds(),
                sock_read=self.config.timeout.total_seconds(),
            ),
            **extra,
        )

    async def _plain(
        self, kind: str, request: Callable[[Any], Awaitable[Any]]
    ) -> tuple[int, bytes, float | None]:
        """One small request, made by `request(api_client)` through one of the client's
        generated services with `_preload_content=False` (so no status raises); (status, body,
        Retry-After). A 401 is retried once with a freshly fetched token."""

        async def send(api: Any) -> tuple[int, bytes, float | None]:
            async with self._slots:
                began = time.perf_counter()
                try:
                    response = await _network(self, request(api))
                    try:
                        raw = await _network(self, response.read())
                    finally:
                        response.release()
                finally:
                    self._observe(kind, began)
            self._count("received", len(raw))
            raw = self.scrub(raw.decode("utf-8", "replace")).encode()  # errors quote the body
            if response.status == 401:
                raise _Unauthorized(_message(raw))
            return response.status, raw, retry_after_seconds(response.headers.get("Retry-After"))

        return await self._authorized(send)

    def _observe(self, kind: str, began: float) -> None:
        if self.metrics is not None:
            self.metrics.query_duration.labels(self.name, kind).observe(time.perf_counter() - began)

    def _count(self, direction: str, size: int) -> None:
        if self.metrics is not None:
            self.metrics.payload_bytes.labels(self.name, direction).inc(size)


class _Stream:
    """`async with engine._stream(text, kind) as (rows, sent)`: the data rows of a query's
    response, read as they arrive, under one concurrency slot; errors become EngineErrors."""

    def __init__(self, engine: FluxEngine, text: str, kind: str) -> None:
        self.engine = engine
        self.text = text
        self.kind = kind
        self.received = 0
        self._response: Any = None
        self._began = 0.0

    async def __aenter__(self) -> tuple[_Stream, int]:
        await self.engine._slots.acquire()
        self._began = time.perf_counter()
        try:
            self._response, sent = await self.engine._open_query(self.text, self.kind)
        except BaseException:
            self.engine._slots.release()
            self.engine._observe(self.kind, self._began)
            raise
        return self, sent

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._response is not None:
                self._response.release()
        finally:
            self.engine._slots.release()
            self.engine._observe(self.kind, self._began)
            self.engine._count("received", self.received)

    def __aiter__(self) -> AsyncIterator[Row]:
        return self._rows()

    async def _rows(self) -> AsyncIterator[Row]:
        name = self.engine.name
        try:
            async for row in rows(self._lines()):
                yield row
        except FluxResultError as exc:
            message = self.engine.scrub(exc.message)
            raise classify(None, message)(f"connection {name}: {explain(message)}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientEngineError(
                f"connection {name}: {self.engine.config.url}: response cut off: "
                f"{describe_failure(exc)}"
            ) from exc
        except ValueError as exc:
            raise TransientEngineError(
                f"connection {name}: malformed response from server: {exc}"
            ) from exc

    async def _lines(self) -> AsyncIterator[bytes]:
        async for line in self._response.content:
            self.received += len(line)
            yield line

    async def pieces(self) -> AsyncIterator[bytes]:
        """The raw body in pieces as they arrive (the bulk path: no per-line Python work)."""
        try:
            async for piece in self._response.content.iter_any():
                self.received += len(piece)
                yield piece
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientEngineError(
                f"connection {self.engine.name}: {self.engine.config.url}: response cut off: "
                f"{describe_failure(exc)}"
            ) from exc


async def _network(engine: FluxEngine, request: Awaitable[T]) -> T:
    try:
        return await request
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TransientEngineError(
            f"connection {engine.name}: {engine.config.url} unreachable: {describe_failure(exc)}"
        ) from exc


def _add_row(tables: dict[tuple[str, str], Series], row: Row) -> None:
    record = row.record()
    key = (str(record.get("result", "")), str(record.get("table", "")))
    columns = [c for c in row.block.header[1:] if c not in {"result", "table"}]
    if "_time" in columns:
        columns = ["_time", *[c for c in columns if c != "_time"]]
    series = tables.get(key)
    if series is None:
        tags = {
            name: str(record[name])
            for index, name in enumerate(row.block.header)
            if index < len(row.block.groups)
            and row.block.groups[index]
            and name not in {"result", "table", "_start", "_stop"}
            and isinstance(record.get(name), str)
        }
        shown = ["time" if c == "_time" else c for c in columns]
        series = tables[key] = Series(key[0], tags, shown, [])
    series.values.append([record.get(c) for c in columns])


def _just_before(moment: datetime) -> str:
    """RFC 3339 for one nanosecond before `moment`: the delete API's stop is inclusive, and
    (moment - 1 µs) + 999 ns is exactly moment - 1 ns."""
    earlier = moment.astimezone(UTC) - timedelta(microseconds=1)
    return f"{earlier:%Y-%m-%dT%H:%M:%S}.{earlier.microsecond:06d}999Z"


def _json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _message(raw: bytes) -> str:
    """The server's own error message (2.x: `{"code", "message"}`), else the start of the body."""
    message = _json(raw).get("message")
    if isinstance(message, str) and message:
        return message
    return raw[:200].decode("utf-8", "replace").strip()
