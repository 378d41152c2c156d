"""The seam to the network: a `Transport` sends one request and hands back the open response.

Everything above it (auth, limits, retries of a 401, metrics, the status table) lives in
`HttpClient`; a transport only moves bytes. `AiohttpTransport` is the real one;
`tierflow.testing.MockTransport` answers from a function, so request-contract tests need no
server and no proxy process (httpx's `MockTransport` is the model).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp

from tierflow._errors import NetworkError

__all__ = [
    "AiohttpTransport",
    "HttpRequest",
    "HttpResponse",
    "NetworkError",
    "Timeouts",
    "Transport",
    "describe_failure",
]


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request as it goes on the wire: an absolute URL, its query, headers and body.

    `streaming` asks for a timeout on each read instead of a total one: a bulk export may
    stream for longer than any sensible total, as long as the server keeps sending."""

    method: str
    url: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    streaming: bool = False


class HttpResponse(Protocol):
    """An open response: status and headers now, the body as it arrives."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body, decoded (gzip undone), in pieces as they arrive. Raises `NetworkError`
        when the connection fails midway."""
        ...

    async def aclose(self) -> None:
        """Give the connection back (or drop it, if the body was not read to its end)."""
        ...


class Transport(Protocol):
    """Sends requests. Raises `NetworkError` (never a driver's exception) when no response came."""

    async def send(self, request: HttpRequest) -> HttpResponse: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Timeouts:
    """`total` bounds a whole exchange; a streaming one is bounded per read by `read` instead."""

    total: float
    connect: float
    read: float


def describe_failure(exc: BaseException) -> str:
    """A network failure in a few words, for an error message (never a request's headers)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"unreachable ({exc.os_error.strerror or type(exc.os_error).__name__})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._response.content.iter_any():
                yield piece
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NetworkError(describe_failure(exc)) from exc

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport:
    """One aiohttp session (made lazily inside the running loop), at most `max_connections`
    connections, gzip responses decoded as they arrive. Only aiohttp's public API is used."""

    def __init__(
        self,
        timeouts: Timeouts,
        *,
        max_connections: int,
        verify_tls: bool = True,
        ca_cert: Path | None = None,
    ) -> None:
        self._timeouts = timeouts
        self._max_connections = max_connections
        self._verify_tls = verify_tls
        self._ca_cert = ca_cert
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=self._timeouts.total, sock_connect=self._timeouts.connect
                ),
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl()),
                auto_decompress=True,
                # aiohttp would ask for gzip on its own: the caller's Accept-Encoding decides.
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._session

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self._verify_tls:
            return False
        if self._ca_cert is not None:
            return ssl.create_default_context(cafile=str(self._ca_cert))
        return True

    async def send(self, request: HttpRequest) -> HttpResponse:
        session = self._client()
        timeout = session.timeout
        if request.streaming:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=self._timeouts.connect, sock_read=self._timeouts.read
            )
        try:
            response = await session.request(
                request.method,
                request.url,
                params=dict(request.params) or None,
                headers=dict(request.headers),
                data=request.body or None,
                timeout=timeout,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NetworkError(describe_failure(exc)) from exc
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
