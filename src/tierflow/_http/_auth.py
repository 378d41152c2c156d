"""Credentials for a request: resolved from their source without blocking the event loop, and
fetched again once after a 401 (a rotated token or password needs no restart)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Protocol

from tierflow._secrets import SecretSource, aresolve, refresh

__all__ = ["AuthProvider", "BasicAuth", "NoAuth", "TokenAuth"]


class AuthProvider(Protocol):
    """What `HttpClient` asks for the credentials of a request.

    `headers()` may fetch a secret (asynchronously; a `SecretError` if it cannot);
    `refresh()` forgets what was fetched and says whether asking again may help;
    `describe()` names the source for a message, and `scrub()` cuts the secret out of a text
    a server may have echoed it in. Neither ever returns the secret."""

    #: What the credential is called in messages ("token", "password").
    what: str

    async def headers(self) -> dict[str, str]: ...

    async def refresh(self) -> bool: ...

    def describe(self) -> str: ...

    def scrub(self, text: str) -> str: ...


class NoAuth:
    """No credentials (a 1.x server without auth)."""

    what = "credentials"

    async def headers(self) -> dict[str, str]:
        return {}

    async def refresh(self) -> bool:
        return False

    def describe(self) -> str:
        return "nowhere (no credentials are configured)"

    def scrub(self, text: str) -> str:
        return text


class _SecretAuth:
    """Holds one secret, fetched from its source when first needed and again after a 401
    (`refresh`) or once a cached source's `ttl` has run out, so a request does not read a file
    or ask a command each time. One fetch at a time: requests that all find it missing ask a
    command or a vault once, not once each. Without a source the secret is empty and a 401 is
    not worth a retry."""

    what = "secret"

    def __init__(self, source: SecretSource | None) -> None:
        self._source = source
        self._lock: asyncio.Lock | None = None
        self._value: str | None = None
        self._fetched = 0.0
        self._seen: set[str] = set()

    def _held(self) -> str | None:
        ttl = getattr(self._source, "ttl", None)
        if ttl is not None and time.monotonic() - self._fetched >= ttl.total_seconds():
            return None
        return self._value

    async def _secret(self) -> str:
        if self._source is None:
            return ""
        if (held := self._held()) is not None:
            return held
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if (held := self._held()) is not None:
                return held
            value = await aresolve(self._source)
            self._value, self._fetched = value, time.monotonic()
        self._seen.add(value)
        return value

    async def refresh(self) -> bool:
        if self._source is None:
            return False
        refresh(self._source)
        self._value = None
        return True

    def describe(self) -> str:
        return self._source.describe() if self._source is not None else "the config"

    def scrub(self, text: str) -> str:
        for value in self._seen:
            if len(value) >= 4:  # a shorter "secret" would cut ordinary words
                text = text.replace(value, "<redacted>")
        return text


class TokenAuth(_SecretAuth):
    """`Authorization: Token …` (InfluxDB 2.x)."""

    what = "token"

    def __init__(self, source: SecretSource, scheme: str = "Token") -> None:
        super().__init__(source)
        self._scheme = scheme

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"{self._scheme} {await self._secret()}"}


class BasicAuth(_SecretAuth):
    """HTTP basic auth, UTF-8 as InfluxDB reads it (built here: aiohttp's `BasicAuth` encodes
    Latin-1). Without a password source the password is empty and a 401 is not retried."""

    what = "password"

    def __init__(self, username: str, password: SecretSource | None) -> None:
        super().__init__(password)
        self._username = username

    async def headers(self) -> dict[str, str]:
        pair = f"{self._username}:{await self._secret()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}

    def scrub(self, text: str) -> str:
        # The header's credentials are the password in other letters: a server or a proxy that
        # quotes the header would otherwise put them in errors (the state, logs, /api/status).
        for value in self._seen:
            pair = f"{self._username}:{value}".encode()
            text = text.replace(base64.b64encode(pair).decode("ascii"), "<redacted>")
        return super().scrub(text)
