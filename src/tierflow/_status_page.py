"""The daemon's status page (`GET /`) and its API (`GET /api/status`), and the bearer token that
guards what the daemon serves.

`/api/status` is the document `tierflow status --json` prints (`tierflow._status`), with each
connection's circuit state filled in (only the daemon knows it). `/` is one self-contained page
(`_status_page.html`: inline CSS and JS, no external assets) that fetches `/api/status` every few
seconds and draws it.

With `[server] token` set, `/api/status` and `/metrics` answer only a request carrying
`Authorization: Bearer <token>` (401 with `WWW-Authenticate` otherwise). The page itself is a
shell without data, served to anyone: a browser cannot send a header when it navigates, so the
page takes the token once (`#token=…` in the address, which never reaches the server, or a
prompt), keeps it in the tab's sessionStorage and sends it as a bearer header with each fetch.
The token is read from its source on each request (a file or variable rotated is picked up at
once; a command's value is cached for its `ttl`), so rotating it needs no restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from tierflow._errors import SecretError, TierflowError
from tierflow._logging import log_event
from tierflow._secrets import SecretSource, aresolve
from tierflow._status import status_document

if TYPE_CHECKING:
    from aiohttp import web

    from tierflow._runner import Runner

__all__ = ["Guard", "add_status_routes", "circuits"]

Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]

_PAGE = "_status_page.html"
#: The page runs only its own inline script and style, and talks only to this daemon.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_REALM = 'Bearer realm="tierflow"'


@dataclass(frozen=True)
class Guard:
    """Lets a request through when no token is configured, or when it carries the token as a
    bearer credential (compared in constant time)."""

    token: SecretSource | None

    def __call__(self, handler: Handler) -> Handler:
        """`handler`, answering 401 to a request without the token."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            refusal = await self.refusal(request)
            return refusal if refusal is not None else await handler(request)

        return guarded

    async def refusal(self, request: web.Request) -> web.Response | None:
        """None when `request` may pass; else the answer to give it."""
        if self.token is None:
            return None
        try:
            expected = await aresolve(self.token)
        except SecretError as exc:
            # Say nothing of the source to the client; the log names it (never the value).
            log_event("server_token_unavailable", level=logging.ERROR, error=str(exc))
            return _problem(503, "the server's token cannot be read; see its log")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _problem(401, "a bearer token is required", {"WWW-Authenticate": _REALM})
        # Digests of equal length: the comparison tells nothing of the token's length either.
        if not hmac.compare_digest(_digest(given.strip()), _digest(expected)):
            return _problem(
                401,
                "the bearer token is not the server's",
                {"WWW-Authenticate": _REALM + ', error="invalid_token"'},
            )
        return None


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _problem(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    from aiohttp import web

    return web.json_response({"error": message}, status=status, headers=headers)


def circuits(runner: Runner) -> dict[str, str]:
    """Each connection's circuit state in this process: its breaker's, or `closed` for a
    connection no window has used yet (its first request will be let through)."""
    from tierflow._resilience import ResilientEngine

    states = dict.fromkeys(runner.config.connections, "closed")
    for name, engine in runner.engines.items():
        if isinstance(engine, ResilientEngine):
            states[name] = engine.breaker.state.value
    return states


def add_status_routes(app: web.Application, runner: Runner, guard: Guard) -> None:
    """Serve the page at `/` (open: it holds no data) and the status at `/api/status`
    (behind `guard`)."""
    from aiohttp import web

    page = resources.files("tierflow").joinpath(_PAGE).read_bytes()

    async def index(_: web.Request) -> web.Response:
        return web.Response(
            body=page, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS
        )

    async def api_status(_: web.Request) -> web.Response:
        try:
            document = await status_document(
                runner, None, runner.clock(), circuits=circuits(runner)
            )
        except TierflowError as exc:
            # The state store down, most likely: the page says so and keeps asking.
            log_event("status_unavailable", level=logging.WARNING, error=str(exc))
            return _problem(503, f"cannot read the status: {exc}")
        return web.Response(
            text=json.dumps(document, indent=2, default=str),
            content_type="application/json",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    app.router.add_get("/", index)
    app.router.add_get("/api/status", guard(api_status))
