"""InfluxDB 1.x: InfluxQL over HTTP with aiohttp."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from tierflow._config import InfluxDB1Connection
from tierflow._engines._base import Engine, Execution, Series
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

__all__ = ["InfluxQLEngine", "classify"]

# Statement errors that say "the server is busy", not "your query is wrong". The 1.x server
# reports them inside a 200 response. Specific phrases: a bare "timeout" would also match a
# permanent error that merely echoes a name such as "http_timeouts".
_TRANSIENT_MESSAGES = (
    "cache-max-memory-size exceeded",
    "cache maximum memory size exceeded",
    "engine is closed",
    "shard is disabled",
    "store is closed",
    "hinted handoff queue not empty",
    "timeout waiting for",
    "i/o timeout",
    "context deadline exceeded",
)
_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def classify(status: int | None, message: str) -> type[EngineError]:
    """Which error class a 1.x failure is. `status` None means a statement error inside a 200."""
    if status in _TRANSIENT_STATUSES:
        return TransientEngineError
    if status in {400, 404}:
        return QueryError
    if status is None:
        lowered = message.lower()
        if any(marker in lowered for marker in _TRANSIENT_MESSAGES):
            return TransientEngineError
        return QueryError
    return EngineError


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
                headers={"Accept-Encoding": "gzip"} if self.config.gzip else {},
            )
        return self._session

    def _auth(self) -> aiohttp.BasicAuth | None:
        if self.config.username is None:
            return None
        password = self.config.password.resolve() if self.config.password else ""
        return aiohttp.BasicAuth(self.config.username, password)

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
            async with self._client().get("ping", auth=self._auth()) as response:
                if response.status != 204:
                    raise classify(response.status, "")(
                        f"connection {self.name}: /ping answered HTTP {response.status}",
                        status=response.status,
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientEngineError(
                f"connection {self.name}: {self.config.url} unreachable: {_describe(exc)}"
            ) from exc

    async def _post(self, path: str, form: dict[str, str], *, kind: str) -> tuple[Any, int, int]:
        status, raw, retry_after = await self._send(path, form, kind)
        if status == 401 and self.config.password is not None:
            # The password may have been rotated at its source: fetch it again, try once more.
            refresh(self.config.password)
            status, raw, retry_after = await self._send(path, form, kind)
        body = _json(raw)
        if status != 200:
            message = body.get("error", "") if isinstance(body, dict) else ""
            message = message or raw[:200].decode("utf-8", "replace").strip()
            error = AuthError if status in {401, 403} else classify(status, message)
            raise error(
                f"connection {self.name}: HTTP {status}: {message}",
                status=status,
                retry_after=retry_after,
            )
        return body, _form_size(form), len(raw)

    async def _send(
        self, path: str, form: dict[str, str], kind: str
    ) -> tuple[int, bytes, float | None]:
        try:
            auth = self._auth()
        except SecretError as exc:
            raise AuthError(f"connection {self.name}: {exc}") from None
        async with self._slots:
            began = time.perf_counter()
            try:
                async with self._client().post(path, data=form, auth=auth) as response:
                    raw = await response.read()
                    status = response.status
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TransientEngineError(
                    f"connection {self.name}: {self.config.url}: {_describe(exc)}"
                ) from exc
            finally:
                if self.metrics is not None:
                    self.metrics.query_duration.labels(self.name, kind).observe(
                        time.perf_counter() - began
                    )
        if self.metrics is not None:
            self.metrics.payload_bytes.labels(self.name, "sent").inc(_form_size(form))
            self.metrics.payload_bytes.labels(self.name, "received").inc(len(raw))
        return status, raw, retry_after

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _retry_after(header: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds form; an HTTP date is ignored)."""
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None


def _form_size(form: dict[str, str]) -> int:
    return sum(len(key) + len(value.encode()) + 2 for key, value in form.items())


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
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
                f"connection {connection}: statement {result.get('statement_id', '?')}: {error}"
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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"unreachable ({exc.os_error.strerror or type(exc.os_error).__name__})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
