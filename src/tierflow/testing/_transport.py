"""`MockTransport`: answers tierflow's HTTP requests from a function, for request-contract
tests that need no server and no proxy process (httpx's `MockTransport` is the model)."""

from __future__ import annotations

import gzip
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from tierflow._http import HttpRequest, HttpResponse, NetworkError

__all__ = ["MockResponse", "MockTransport"]


@dataclass(frozen=True, slots=True)
class MockResponse:
    """What the handler answers. A `Content-Encoding: gzip` body is decoded on the way up, as
    the real transport does; `chunks` splits the body into pieces of that many bytes."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    chunks: int = 0
    #: Raise `NetworkError` after the body's first `cut_after` bytes (a connection lost midway).
    cut_after: int | None = None


Handler = Callable[[HttpRequest], MockResponse | Awaitable[MockResponse]]


class MockTransport:
    """A `Transport` whose answers come from `handler(request)` (sync or async). The handler
    may raise `NetworkError` (or `TimeoutError`) to stand for a server that does not answer.
    Every request sent is kept in `requests`, credentials and all, for the test to check."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[HttpRequest] = []
        self.closed = False

    async def send(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        return _Response(answer)

    async def aclose(self) -> None:
        self.closed = True


class _Response:
    def __init__(self, answer: MockResponse) -> None:
        self._answer = answer
        body = answer.body
        if answer.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self._body = body

    @property
    def status(self) -> int:
        return self._answer.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._answer.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        body, size = self._body, self._answer.chunks or max(len(self._body), 1)
        if self._answer.cut_after is not None:
            body = body[: self._answer.cut_after]
        for start in range(0, len(body), size):
            yield body[start : start + size]
        if self._answer.cut_after is not None:
            raise NetworkError("ServerDisconnectedError: Server disconnected")

    async def aclose(self) -> None:
        return None
