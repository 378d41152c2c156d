"""`HttpClient`: what every engine's requests share.

One transport (one connection pool of `max_concurrency`), at most `max_concurrency` requests in
flight, credentials from an `AuthProvider` (fetched again once on a 401), gzip both ways, the
`tierflow_query_duration_seconds` and `tierflow_payload_bytes` metrics, a client span per
request whose W3C `traceparent` every request carries (`tierflow._tracing`), header hooks, and
one status→exception table. Errors are built from the status and the
server's own message, scrubbed of the credentials: never from a request's headers.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, Unpack
from urllib.parse import urlencode, urlsplit

from opentelemetry.trace import Span

from tierflow import _tracing
from tierflow._errors import AuthError, EngineError, SecretError, TransientEngineError
from tierflow._http._auth import AuthProvider
from tierflow._http._status import ErrorTable, retry_after_seconds, server_message
from tierflow._http._transport import (
    HttpRequest,
    HttpResponse,
    NetworkError,
    Transport,
    describe_failure,
)
from tierflow._metrics import Metrics

__all__ = ["ANY_STATUS", "Body", "HeaderHook", "HttpClient", "Reply", "json_or_none"]

#: Adds headers to every request (the `traceparent` needs none: the client adds it itself).
HeaderHook = Callable[[], Mapping[str, str]]
#: `ok=ANY_STATUS`: the caller reads every status itself (a health check). A 401 still gets
#: its one re-fetch of the credentials, and raises `AuthError` if refused again.
ANY_STATUS: Collection[int] = range(100, 600)


def json_or_none(raw: bytes) -> Any:
    """`raw` as JSON, None if it is not."""
    try:
        return json.loads(raw)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole (small) response."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    #: Bytes of the request's body as sent (after gzip).
    sent: int

    @property
    def retry_after(self) -> float | None:
        return retry_after_seconds(self.headers.get("Retry-After"))

    def json(self) -> Any:
        """The body as JSON, None if it is not."""
        return json_or_none(self.body)

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object, empty if it is not one."""
        body = self.json()
        return body if isinstance(body, dict) else {}


class Body:
    """An open response body read as it arrives; `received` counts the (decoded) bytes."""

    def __init__(self, client: HttpClient, response: HttpResponse, sent: int) -> None:
        self._client = client
        self._response = response
        self.status = response.status
        self.headers = response.headers
        self.sent = sent
        self.received = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body in pieces as they arrive; a connection lost midway is transient."""
        try:
            async for piece in self._response.chunks():
                self.received += len(piece)
                yield piece
        except (NetworkError, TimeoutError) as exc:
            raise self._client.network_error(exc, cut_off=True) from exc

    async def lines(self) -> AsyncIterator[bytes]:
        """The body split after each `\\n` (the last line may lack one)."""
        rest = b""
        async for piece in self.chunks():
            rest += piece
            *whole, rest = rest.split(b"\n")
            for line in whole:
                yield line + b"\n"
        if rest:
            yield rest

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.chunks()])

    async def aclose(self) -> None:
        await self._response.aclose()


class RequestOptions(TypedDict):
    """What `HttpClient.request` passes on to `HttpClient.stream` (see it for the defaults)."""

    kind: str
    params: NotRequired[Mapping[str, str] | None]
    headers: NotRequired[Mapping[str, str] | None]
    body: NotRequired[bytes]
    json_body: NotRequired[Any]
    form: NotRequired[Mapping[str, str] | None]
    compress: NotRequired[bool]
    ok: NotRequired[Collection[int]]
    doing: NotRequired[str]
    probe: NotRequired[bool]


class HttpClient:
    """Requests to one server on behalf of connection `name` (see the module's docstring).

    `transport` is the seam to the network: `AiohttpTransport` in use, `MockTransport` in
    request-contract tests."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        transport: Transport,
        auth: AuthProvider,
        errors: ErrorTable,
        max_concurrency: int,
        gzip: bool = True,
        metrics: Metrics | None = None,
        header_hooks: Collection[HeaderHook] = (),
    ) -> None:
        self.name = name
        #: As configured: messages name the server the way the config does.
        self.url = base_url
        self.base_url = base_url.rstrip("/")
        self.transport = transport
        self.auth = auth
        self.errors = errors
        self.gzip = gzip
        self.metrics = metrics
        self.header_hooks = list(header_hooks)
        self._slots = asyncio.Semaphore(max_concurrency)
        where = urlsplit(self.base_url)
        self._host = where.hostname
        try:
            self._port = where.port
        except ValueError:
            self._port = None

    # -- requests --------------------------------------------------------------------------------

    async def request(self, method: str, path: str, **options: Unpack[RequestOptions]) -> Reply:
        """Send one request and read its whole response: `stream`'s options, a total timeout."""
        async with self.stream(method, path, **options, streaming=False) as response:
            return Reply(response.status, response.headers, await response.read(), response.sent)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        kind: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        compress: bool = False,
        ok: Collection[int] = (200,),
        doing: str = "",
        probe: bool = False,
        streaming: bool = True,
    ) -> AsyncIterator[Body]:
        """`async with client.stream(…) as body`: the open response, under one concurrency slot
        until the block ends, with a timeout per read (`streaming`) rather than a total one. A
        status in `ok` is returned; any other raises the table's error (`doing` says what was
        asked, e.g. "writing to bucket 'x'"). `probe` words a network failure as a health
        check's ("… unreachable: …")."""
        payload, fixed = _payload(body, json_body, form)
        fixed.update(headers or {})
        if compress and self.gzip and payload:
            payload = gzip.compress(payload, compresslevel=1)
            fixed["Content-Encoding"] = "gzip"
        fixed.setdefault("Accept-Encoding", "gzip" if self.gzip else "identity")
        request = HttpRequest(
            method, f"{self.base_url}/{path.lstrip('/')}", dict(params or {}), fixed, payload
        )
        async with self._slots:
            began = time.perf_counter()
            response: Body | None = None
            span = _tracing.request_span(
                method,
                "/" + path.lstrip("/").split("?", 1)[0],
                connection=self.name,
                kind=kind,
                host=self._host,
                port=self._port,
            )
            failure: Exception | None = None
            try:
                response = await self._open(request, streaming, probe, doing, span)
                if response.status not in ok:
                    raise self.refusal(
                        response.status, await response.read(), response.headers, doing
                    )
                yield response
            except Exception as exc:
                failure = exc
                raise
            finally:
                if response is not None:
                    await response.aclose()
                received = response.received if response else 0
                self._observe(kind, began, received)
                _tracing.end_request(
                    span,
                    status=response.status if response else None,
                    sent=len(payload),
                    received=received,
                    error=failure,
                )

    async def _open(
        self, request: HttpRequest, streaming: bool, probe: bool, doing: str, span: Span
    ) -> Body:
        """Send with credentials; on a 401 fetch them again and send once more."""
        response = await self._send(request, streaming, probe, span)
        if response.status != 401 or not await self.auth.refresh():
            return response
        await response.aclose()
        response = await self._send(request, streaming, probe, span)
        if response.status == 401:
            message = self.auth.scrub(server_message(await response.read()))
            await response.aclose()
            raise AuthError(
                f"connection {self.name}: {_doing(doing)}HTTP 401: {message} (the "
                f"{self.auth.what} was fetched again from {self.auth.describe()} and still "
                "refused)",
                status=401,
            )
        return response

    async def _send(self, request: HttpRequest, streaming: bool, probe: bool, span: Span) -> Body:
        try:
            credentials = await self.auth.headers()
        except SecretError as exc:
            raise AuthError(f"connection {self.name}: {exc}") from None
        extra = _tracing.trace_headers(span)
        for hook in self.header_hooks:
            extra.update(hook())
        sent = HttpRequest(
            request.method,
            request.url,
            request.params,
            {**request.headers, **extra, **credentials},
            request.body,
            streaming,
        )
        try:
            response = await self.transport.send(sent)
        except (NetworkError, TimeoutError) as exc:
            raise self.network_error(exc, probe=probe) from exc
        self._count("sent", len(request.body))
        return Body(self, response, len(request.body))

    # -- errors ----------------------------------------------------------------------------------

    def refusal(
        self, status: int, raw: bytes, headers: Mapping[str, str], doing: str = ""
    ) -> EngineError:
        """The error for an unexpected status, worded from the server's own message."""
        message = self.auth.scrub(server_message(raw))
        return self.errors.classify(status, message)(
            f"connection {self.name}: {_doing(doing)}HTTP {status}: {self.errors.explain(message)}",
            status=status,
            retry_after=retry_after_seconds(headers.get("Retry-After")),
        )

    def reported(self, message: str, where: str = "") -> EngineError:
        """The error for a failure reported inside a 200 (a statement error, an error table)."""
        message = self.auth.scrub(message)
        return self.errors.classify(None, message)(
            f"connection {self.name}: {where}{self.errors.explain(message)}"
        )

    def network_error(
        self, exc: BaseException, *, probe: bool = False, cut_off: bool = False
    ) -> TransientEngineError:
        """No response, or one cut off: worth trying again."""
        what = str(exc) if isinstance(exc, NetworkError) else describe_failure(exc)
        if cut_off:
            what = f"response cut off: {what}"
        where = f"{self.url} unreachable" if probe else self.url
        return TransientEngineError(f"connection {self.name}: {where}: {what}")

    # -- metrics ---------------------------------------------------------------------------------

    def _observe(self, kind: str, began: float, received: int) -> None:
        if self.metrics is not None:
            self.metrics.query_duration.labels(self.name, kind).observe(time.perf_counter() - began)
        self._count("received", received)

    def _count(self, direction: str, size: int) -> None:
        if self.metrics is not None and size:
            self.metrics.payload_bytes.labels(self.name, direction).inc(size)

    async def aclose(self) -> None:
        await self.transport.aclose()


def _doing(doing: str) -> str:
    return f"{doing}: " if doing else ""


def _payload(
    body: bytes, json_body: Any, form: Mapping[str, str] | None
) -> tuple[bytes, dict[str, str]]:
    if json_body is not None:
        return json.dumps(json_body).encode(), {"Content-Type": "application/json"}
    if form is not None:
        return urlencode(form).encode(), {"Content-Type": "application/x-www-form-urlencoded"}
    return body, {}
