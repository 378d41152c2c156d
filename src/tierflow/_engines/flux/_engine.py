"""InfluxDB 2.x: Flux over HTTP, through the shared HTTP layer (`tierflow._http`).

What this engine relies on, and what it avoids:

- Requests go through `HttpClient`: one aiohttp session made lazily inside the running loop,
  a connection pool and at most `max_concurrency` requests in flight, gzip, the token from its
  source (fetched again once on a 401, so a rotated token needs no restart), and one
  status→exception table refined by the 2.x texts below. Tokens never appear in messages:
  errors are built from the status and the server's own message, scrubbed of the token.
- `influxdb-client` is not used: its async client exposes its aiohttp session only through
  private internals (a bulk export needs a timeout per read, not its total one), its CSV parser
  keeps microseconds where exports need nanoseconds, and the rest of what it offered here was
  building URLs for a handful of documented endpoints.
- Downsampling runs on the server (`to()`). Points that tierflow carries itself (restores,
  relays) are posted by `write`, one body per call, to `/api/v2/write`: no batching writer that
  could drop a batch after its retries or lose buffered points on close. Retries are tierflow's
  own (the resilience layer), driven by `EngineError.transient` and `retry_after`.
- Query responses are streamed and counted, never held whole (`execute`, `stream`); `query`
  holds its (small) result, for fingerprints. `execute` and `query` are bounded by the total
  `timeout`; `stream` (the export path) by `timeout` per read.
- Every bucket a script reads or writes is looked up once in the connection's org (buckets API)
  before the first query that names it runs: a bucket of another org is refused, not queried.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from tierflow._config import InfluxDB2Connection
from tierflow._engines._base import (
    MISSING_TARGET_FIX,
    Engine,
    Execution,
    Series,
    connection_http,
)
from tierflow._engines.flux._annotated_csv import FluxResultError, Row, rows
from tierflow._engines.flux._dialect import DIALECT
from tierflow._engines.flux._literals import delete_predicate
from tierflow._engines.flux._syntax import Kind, calls, tokenize
from tierflow._errors import QueryError, TransientEngineError
from tierflow._http import (
    ANY_STATUS,
    Body,
    ErrorTable,
    KnownError,
    Reply,
    TokenAuth,
    Transport,
    server_message,
)
from tierflow._metrics import Metrics
from tierflow._templates import DeleteRange, RenderedQuery
from tierflow._windows import isoformat

__all__ = ["FluxEngine", "classify", "explain"]

# InfluxDB 2.x answers `{"code", "message"}` with the status of its code
# (kit/transport/http/error_handler.go: "not found" 404, "invalid" 400, "unprocessable entity"
# and "conflict" 422, "request too large" 413, "too many requests" 429, "unavailable" 503,
# "unauthorized" 401, "forbidden" 403, "internal error" 500); Cloud adds 429/503 with
# Retry-After. Errors inside a 200 query stream are Flux error tables (status None here).
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

#: The shared status table with 2.x's texts.
ERRORS = ErrorTable(_KNOWN)
#: Which error class a 2.x failure is (`status` None: an error table inside a 200 stream).
classify = ERRORS.classify
#: A 2.x error message, followed by how to fix it when the table above knows.
explain = ERRORS.explain

_DIALECT = {
    "header": True,
    "delimiter": ",",
    "annotations": ["datatype", "group", "default"],
    "commentPrefix": "#",
    # Nanoseconds: exports must keep every digit of a point's time.
    "dateTimeFormat": "RFC3339Nano",
}


class FluxEngine(Engine):
    """Sends Flux to one InfluxDB 2.x server and org, at most `max_concurrency` at a time
    (`transport` replaces the network in request-contract tests)."""

    dialect = DIALECT

    def __init__(
        self,
        name: str,
        config: InfluxDB2Connection,
        metrics: Metrics | None = None,
        *,
        transport: Transport | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.metrics = metrics
        self._known_buckets: set[str] = set()
        self.http = connection_http(
            name,
            config,
            auth=TokenAuth(config.token),
            errors=ERRORS,
            metrics=metrics,
            transport=transport,
            verify_tls=config.verify_tls,
            ca_cert=config.ca_cert,
        )

    def scrub(self, text: str) -> str:
        """`text` with the token cut out, should a server or proxy have echoed it back."""
        return self.http.auth.scrub(text)

    # -- the contract ----------------------------------------------------------------------------

    async def execute(self, query: RenderedQuery, *, database: str | None = None) -> Execution:
        """Run a script that writes on the server (`to()`); `points_written` counts the rows
        `to()` passed on, one per field value written (2.x's unit of a point)."""
        await self._check_buckets(query.text)
        for delete in query.deletes:
            await self.delete(delete)
        written = 0
        async with self._query(query.text, "execute") as response:
            async for _ in self._rows(response):
                written += 1
        return Execution(written, response.sent, response.received)

    async def query(self, text: str, *, database: str | None = None) -> list[Series]:
        """Run a small read script: one `Series` per table, named by its result, with `time`
        (ns) first and the table's group-key string columns as its tags."""
        await self._check_buckets(text)
        tables: dict[tuple[str, str], Series] = {}
        async with self._query(text, "query") as response:
            async for row in self._rows(response):
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
        bucket = f"{database}/{retention_policy}" if retention_policy else database
        await self._check_bucket_names({bucket})
        reply = await self.http.request(
            "POST",
            "/api/v2/write",
            kind="write",
            params={"org": self.config.org, "bucket": bucket, "precision": "ns"},
            headers={"Content-Type": "text/plain; charset=utf-8"},
            body=body,
            compress=True,
            ok=(204,),
            doing=f"writing to bucket {bucket!r}",
        )
        return reply.sent

    async def stream(
        self, text: str, *, database: str | None = None, chunk_size: int = 10_000
    ) -> AsyncIterator[bytes]:
        """Beyond the contract, the 2.x export primitive: run a read script and yield its
        annotated CSV body (RFC 3339 times with nanoseconds) in pieces as they arrive; the
        export path reads it block by block (`tierflow._engines.flux._export`). An error table
        inside the body is left to that reader. Not retried: a stream half read cannot be."""
        await self._check_buckets(text)
        async with self._query(text, "stream", streaming=True) as response:
            async for piece in response.chunks():
                yield piece

    async def ping(self) -> None:
        """`/health` must say pass and `/ready` must answer 200."""
        for path in ("/health", "/ready"):
            reply = await self.http.request("GET", path, kind="ping", ok=ANY_STATUS, probe=True)
            if reply.status != 200:
                raise classify(reply.status, "")(
                    f"connection {self.name}: {path} answered HTTP {reply.status}: "
                    f"{self._message(reply)}",
                    status=reply.status,
                )
            if path == "/health" and reply.json_object().get("status") != "pass":
                raise TransientEngineError(
                    f"connection {self.name}: /health is not pass: {self._message(reply)}"
                )

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- beyond the contract: replace, validate --online ----------------------------------------

    async def delete(self, target: DeleteRange) -> None:
        """Delete `[start, stop)` of one measurement (narrowed by tags) from a bucket of this
        org. `/api/v2/delete` takes an inclusive stop, so it is moved back by one nanosecond's
        worth: the smallest step RFC 3339 can say."""
        await self.http.request(
            "POST",
            "/api/v2/delete",
            kind="delete",
            params={"org": self.config.org, "bucket": target.bucket},
            json_body={
                "start": isoformat(target.start),
                "stop": _just_before(target.stop),
                "predicate": delete_predicate(target),
            },
            ok=(204,),
            doing=f"deleting {target.measurement!r} from bucket {target.bucket!r}",
        )

    async def analyze(self, text: str) -> list[str]:
        """The server's syntax errors for a script (`POST /api/v2/query/analyze`)."""
        reply = await self.http.request(
            "POST",
            "/api/v2/query/analyze",
            kind="analyze",
            json_body={"query": text, "type": "flux"},
            doing="/api/v2/query/analyze",
        )
        errors = reply.json_object().get("errors") or []
        return [
            f"line {e.get('line', '?')}:{e.get('column', '?')}: {e.get('message', '')}"
            for e in errors
            if isinstance(e, dict)
        ]

    async def bucket_exists(self, bucket: str) -> bool:
        """Whether `bucket` is a bucket of this connection's org."""
        reply = await self.http.request(
            "GET",
            "/api/v2/buckets",
            kind="buckets",
            params={"org": self.config.org, "name": bucket},
            ok=(200, 404),  # OSS answers 404 when the org or the bucket is unknown
            doing=f"looking up bucket {bucket!r}",
        )
        found = reply.json_object().get("buckets") or [] if reply.status == 200 else []
        return any(isinstance(b, dict) and b.get("name") == bucket for b in found)

    # -- beyond the contract: buckets, for `tierflow apply` -------------------------------------

    async def org_id(self) -> str | None:
        """The ID of this connection's org (`GET /api/v2/orgs?org=`), None if there is none."""
        reply = await self.http.request(
            "GET",
            "/api/v2/orgs",
            kind="orgs",
            params={"org": self.config.org},
            ok=(200, 404),  # OSS answers 404 for an unknown org name
            doing=f"looking up org {self.config.org!r}",
        )
        found = reply.json_object().get("orgs") or [] if reply.status == 200 else []
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
        reply = await self.http.request(
            "GET",
            "/api/v2/buckets",
            kind="buckets",
            params={"orgID": org_id, "name": name},
            ok=(200, 404),
            doing=f"looking up bucket {name!r}",
        )
        found = reply.json_object().get("buckets") or [] if reply.status == 200 else []
        return next((b for b in found if isinstance(b, dict) and b.get("name") == name), None)

    async def create_bucket(self, body: dict[str, Any]) -> None:
        """`POST /api/v2/buckets` with `body` (`orgID`, `name`, `retentionRules`)."""
        await self.http.request(
            "POST",
            "/api/v2/buckets",
            kind="buckets",
            json_body=body,
            ok=(201,),
            doing=f"creating bucket {body.get('name')!r}",
        )

    async def update_bucket(self, bucket_id: str, body: dict[str, Any]) -> None:
        """`PATCH /api/v2/buckets/{bucket_id}` with `body` (e.g. `retentionRules`)."""
        await self.http.request(
            "PATCH",
            f"/api/v2/buckets/{bucket_id}",
            kind="buckets",
            json_body=body,
            doing=f"updating bucket {bucket_id}",
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

    def _query(
        self, text: str, kind: str, *, streaming: bool = False
    ) -> AbstractAsyncContextManager[Body]:
        """`POST /api/v2/query` in this org, its response open (status 200)."""
        return self.http.stream(
            "POST",
            "/api/v2/query",
            kind=kind,
            params={"org": self.config.org},
            json_body={"query": text, "type": "flux", "dialect": _DIALECT},
            streaming=streaming,
        )

    async def _rows(self, response: Body) -> AsyncIterator[Row]:
        """The data rows of a query's response as they arrive; an error table inside it, or a
        body that is not annotated CSV, raises."""
        try:
            async for row in rows(response.lines()):
                yield row
        except FluxResultError as exc:
            raise self.http.reported(exc.message) from None
        except ValueError as exc:
            raise TransientEngineError(
                f"connection {self.name}: malformed response from server: {exc}"
            ) from exc

    def _message(self, reply: Reply) -> str:
        return self.scrub(server_message(reply.body))


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
