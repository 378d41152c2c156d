"""A recording HTTP reverse proxy for tests, to stand in front of a real `influxd`.

It stands in for *network conditions only*: every request is forwarded unchanged (method, path,
query string, headers, body) to the real upstream server and its answer is sent back unchanged
(gzip bodies included, since nothing is decompressed). It never answers for the server, except
where a test asks it to inject a fault: a delay before forwarding, an injected status (503 with
`Retry-After`, 429, …), a connection reset without an answer, a truncated or slowly dripped
response. It is not a fake InfluxDB.

What it records, per request (`Exchange`): path, query parameters, the urlencoded form body (so
`q`, the InfluxQL text), headers, status, and monotonic `started`/`ended` times. It also counts
requests in flight, live, overall and per group (`group=` classifies requests, e.g. by the
`INTO` measurement of the query), and keeps the maximum seen; an `InFlight` gauge can be shared
by several proxies to count across them.

In flight means: from the moment the proxy has read the request until the moment it starts
sending the answer back. That span lies strictly inside the client's own view of the request
(the client sent it earlier and receives the answer later), so an overlap the proxy observes is
a real overlap of the client's requests: the proxy can under-count, never over-count.

Two ways to run it:
- `Proxy`: an async context manager on the running event loop (the test's own loop);
- `ThreadedProxy`: the same proxy on its own loop in a background thread, usable from sync tests
  and in front of a `tierflow` subprocess.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import web

__all__ = [
    "Exchange",
    "Fault",
    "FaultRule",
    "InFlight",
    "Proxy",
    "ThreadedProxy",
    "max_overlap",
    "times",
]

# Headers that describe one hop, not the message: never forwarded (RFC 9110 §7.6.1), plus the
# framing headers aiohttp sets itself for the body it sends.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


@dataclass
class Exchange:
    """One request as the proxy saw it, and how it was answered."""

    id: int
    method: str
    path: str
    params: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    started: float  # time.monotonic() once the request was read
    group: str | None = None
    ended: float | None = None  # time.monotonic() when the answer started (or the proxy gave up)
    status: int | None = None  # what the client was sent; None: the connection was cut
    fault: Fault | None = None  # the fault injected into this exchange, if any
    in_flight: int = 0  # requests in flight at this proxy when this one arrived, itself included

    @property
    def q(self) -> str | None:
        """The InfluxQL text, from the form body or the query string."""
        return self.form.get("q", self.params.get("q"))

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started


@dataclass(frozen=True)
class Fault:
    """What to do to one request instead of (or on top of) forwarding it plainly.

    `delay` waits before forwarding (or before the injected answer). `status` answers that
    status with `body` and `headers` and does not forward. `reset` cuts the connection with a
    TCP reset and no answer. `truncate` forwards, then sends only the first `truncate` bytes of
    the body (with the full Content-Length) and closes. `drip` forwards, then sends the body in
    `chunk`-byte pieces `drip` seconds apart.
    """

    delay: float = 0.0
    status: int | None = None
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    reset: bool = False
    truncate: int | None = None
    drip: float = 0.0
    chunk: int = 64

    @classmethod
    def unavailable(cls, retry_after: int | None = 1, *, delay: float = 0.0) -> Fault:
        """503 Service Unavailable, as a 1.x server or a load balancer in front of it says it."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        body = b'{"error":"service unavailable"}'
        return cls(delay=delay, status=503, body=body, headers=_json_headers(headers))

    @classmethod
    def too_many_requests(cls, retry_after: int | None = 1, *, delay: float = 0.0) -> Fault:
        """429 Too Many Requests with `Retry-After` (seconds)."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        body = b'{"error":"too many requests"}'
        return cls(delay=delay, status=429, body=body, headers=_json_headers(headers))


def _json_headers(extra: Mapping[str, str]) -> dict[str, str]:
    return {"Content-Type": "application/json", **extra}


FaultRule = Callable[[Exchange], Fault | None]
"""Decides, per request (already recorded, not yet forwarded), which fault to inject, if any."""


def times(count: int, fault: Fault, when: Callable[[Exchange], bool] = lambda _: True) -> FaultRule:
    """A rule injecting `fault` into the first `count` requests that `when` accepts."""
    remaining = itertools.count(count, -1)
    lock = threading.Lock()

    def rule(exchange: Exchange) -> Fault | None:
        if not when(exchange):
            return None
        with lock:
            return fault if next(remaining) > 0 else None

    return rule


class InFlight:
    """A live count of requests in flight, overall and per key, with the maxima seen.
    Thread-safe, so several proxies (even on different threads) may share one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.max = 0
        self._by: dict[str, int] = {}
        self._max_by: dict[str, int] = {}

    def enter(self, keys: Iterable[str] = ()) -> int:
        with self._lock:
            self.now += 1
            self.max = max(self.max, self.now)
            for key in keys:
                self._by[key] = self._by.get(key, 0) + 1
                self._max_by[key] = max(self._max_by.get(key, 0), self._by[key])
            return self.now

    def leave(self, keys: Iterable[str] = ()) -> None:
        with self._lock:
            self.now -= 1
            for key in keys:
                self._by[key] -= 1

    def max_by(self) -> dict[str, int]:
        """The most requests seen in flight at once, per key."""
        with self._lock:
            return dict(self._max_by)

    def reset(self) -> None:
        """Forget the maxima (requests still in flight stay counted)."""
        with self._lock:
            self.max = self.now
            self._max_by = dict(self._by)


class Proxy:
    """A recording reverse proxy to `upstream`, on the running event loop.

    `delay` (seconds, or a function of the exchange) is added before forwarding every request;
    `fault` (a `FaultRule`, settable at any time) injects faults; `group` classifies requests
    for per-group in-flight counts; `shared` is an extra `InFlight` gauge to update, so that
    several proxies can be counted together.
    """

    def __init__(
        self,
        upstream: str,
        *,
        delay: float | Callable[[Exchange], float] = 0.0,
        fault: FaultRule | None = None,
        group: Callable[[Exchange], str | None] | None = None,
        shared: InFlight | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        self.fault = fault
        self.group = group
        self.gauge = InFlight()
        self.shared = shared
        self._host = host
        self._port: int | None = None
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- what it saw ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the proxy is not started")
        return f"http://{self._host}:{self._port}"

    @property
    def exchanges(self) -> list[Exchange]:
        """Every request so far, in arrival order (a copy of the list)."""
        with self._lock:
            return list(self._exchanges)

    @property
    def in_flight(self) -> int:
        return self.gauge.now

    @property
    def max_in_flight(self) -> int:
        return self.gauge.max

    def max_in_flight_by_path(self) -> dict[str, int]:
        return {k[5:]: v for k, v in self.gauge.max_by().items() if k.startswith("path:")}

    def max_in_flight_by_group(self) -> dict[str, int]:
        return {k[6:]: v for k, v in self.gauge.max_by().items() if k.startswith("group:")}

    def clear(self) -> None:
        """Forget the recorded exchanges and the maxima."""
        with self._lock:
            self._exchanges.clear()
        self.gauge.reset()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> Self:
        # No connection limit towards the upstream: the proxy must not serialise the client's
        # requests itself, or it would hide the concurrency it is there to observe.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, 0).start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- the handler ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        exchange = Exchange(
            id=next(self._ids),
            method=request.method,
            path=request.path,
            params=dict(request.query),
            form=_form(request.headers.get("Content-Type", ""), body),
            headers=dict(request.headers),
            started=time.monotonic(),
        )
        if self.group is not None:
            exchange.group = self.group(exchange)
        keys = [f"path:{exchange.path}"]
        if exchange.group is not None:
            keys.append(f"group:{exchange.group}")
        exchange.in_flight = self.gauge.enter(keys)
        if self.shared is not None:
            self.shared.enter(keys)
        with self._lock:
            self._exchanges.append(exchange)
        left = False

        def done(status: int | None) -> None:
            # Called just before the first byte of the answer goes out (see the module doc).
            nonlocal left
            if left:
                return
            left = True
            exchange.ended = time.monotonic()
            exchange.status = status
            self.gauge.leave(keys)
            if self.shared is not None:
                self.shared.leave(keys)

        try:
            fault = self.fault(exchange) if self.fault is not None else None
            exchange.fault = fault
            delay = self.delay(exchange) if callable(self.delay) else self.delay
            delay += fault.delay if fault is not None else 0.0
            if delay > 0:
                await asyncio.sleep(delay)
            if fault is not None and fault.reset:
                done(None)
                _reset(request)
                return web.Response()  # aiohttp fails to send it and drops it quietly
            if fault is not None and fault.status is not None:
                done(fault.status)
                return web.Response(
                    status=fault.status, body=fault.body, headers=dict(fault.headers)
                )
            try:
                status, headers, payload = await self._forward(request, body)
            except (aiohttp.ClientError, OSError) as exc:
                done(502)
                return web.Response(status=502, text=f"proxy: upstream failed: {exc}")
            done(status)
            return await self._answer(request, status, headers, payload, fault)
        finally:
            done(exchange.status)

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._session is not None
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
        ) as response:
            payload = await response.read()
            out = [(k, v) for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP]
            return response.status, out, payload

    async def _answer(
        self,
        request: web.Request,
        status: int,
        headers: list[tuple[str, str]],
        payload: bytes,
        fault: Fault | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=status)
        for key, value in headers:
            response.headers.add(key, value)
        response.content_length = len(payload)
        if fault is None or (fault.truncate is None and fault.drip <= 0):
            await response.prepare(request)
            await response.write(payload)
            await response.write_eof()
            return response
        await response.prepare(request)
        sent = payload if fault.truncate is None else payload[: fault.truncate]
        step = max(1, fault.chunk)
        for offset in range(0, len(sent), step):
            await response.write(sent[offset : offset + step])
            if fault.drip > 0:
                await asyncio.sleep(fault.drip)
        if fault.truncate is not None:
            # Fewer bytes than Content-Length promised, then an orderly close.
            assert request.transport is not None
            request.transport.close()
        else:
            await response.write_eof()
        return response


def _form(content_type: str, body: bytes) -> dict[str, str]:
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return {}
    pairs = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return dict(pairs)


def _reset(request: web.Request) -> None:
    """Cut the connection with a TCP RST: SO_LINGER 0, then abort."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def max_overlap(exchanges: Iterable[Exchange]) -> int:
    """The most of `exchanges` whose [started, ended) spans overlap at one instant (for groups
    decided after the fact; spans that merely touch do not overlap)."""
    events: list[tuple[float, int]] = []
    for exchange in exchanges:
        assert exchange.ended is not None, f"exchange {exchange.id} has not ended"
        events += [(exchange.started, 1), (exchange.ended, -1)]
    # At equal times the end sorts first (-1 < 1).
    current = peak = 0
    for _, step in sorted(events):
        current += step
        peak = max(peak, current)
    return peak


class ThreadedProxy:
    """A `Proxy` on its own event loop in a background thread: for sync tests and subprocesses.

    Takes the same arguments as `Proxy`; `proxy` is the proxy itself (its records and gauges are
    thread-safe to read; `fault` and `delay` may be set from the test's thread)."""

    def __init__(self, upstream: str, **options: Any) -> None:
        self._upstream = upstream
        self._options = options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._proxy: Proxy | None = None

    @property
    def proxy(self) -> Proxy:
        if self._proxy is None:
            raise RuntimeError("the proxy is not started")
        return self._proxy

    @property
    def url(self) -> str:
        return self.proxy.url

    def start(self) -> Self:
        loop = asyncio.new_event_loop()
        ready: Future[None] = Future()
        self._loop = loop

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set_result, None)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name="test-proxy", daemon=True)
        self._thread.start()
        ready.result(timeout=10)
        self._proxy = Proxy(self._upstream, **self._options)
        asyncio.run_coroutine_threadsafe(self._proxy.start(), loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._proxy is not None:
            asyncio.run_coroutine_threadsafe(self._proxy.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
