"""A real headless Chromium (Debian's `chromium`) driven over the DevTools protocol with aiohttp's
websocket client: no browser download, no dependency beyond what tierflow already has.

`Chromium.start()` runs the browser on a fresh profile with `--remote-debugging-port=0` and reads
the port it chose from `DevToolsActivePort` in the profile; `new_page()` opens a tab and gives a
`Page` to navigate, evaluate JavaScript in and screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

#: Flags known to work on these machines (as root, without a GPU or a display).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
)


def chromium_binary() -> str:
    """Debian's chromium; missing, the test fails (scripts/bootstrap installs it)."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium not found: install Debian's chromium (scripts/bootstrap)")
    return path


class Chromium:
    """One headless Chromium process on a throwaway profile."""

    def __init__(self) -> None:
        self._profile = Path(tempfile.mkdtemp(prefix="tierflow-chromium-"))
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, within: float = 30) -> Chromium:
        self._process = subprocess.Popen(
            [chromium_binary(), *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        active = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + within
        while not active.exists() or not active.read_text().strip():
            if self._process.poll() is not None or time.monotonic() > deadline:
                error = self._process.stderr.read().decode() if self._process.stderr else ""
                self.stop()
                raise AssertionError(f"chromium did not start its DevTools server: {error}")
            time.sleep(0.05)
        self.port = int(active.read_text().splitlines()[0])
        return self

    async def new_page(self, session: aiohttp.ClientSession) -> Page:
        # Chromium takes PUT for /json/new (a GET is refused since 111).
        async with session.put(f"http://127.0.0.1:{self.port}/json/new?about:blank") as response:
            assert response.status == 200, await response.text()
            target = await response.json()
        socket = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        return Page(socket)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)


class Page:
    """A tab: DevTools commands over its websocket, one at a time."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        await self._socket.send_json({"id": number, "method": method, "params": params})
        async for message in self._socket:
            if message.type is not aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"DevTools socket: {message.type} {message.data!r}")
            body = message.json()
            if body.get("id") != number:
                continue  # an event
            if "error" in body:
                raise AssertionError(f"{method}: {body['error']}")
            result: dict[str, Any] = body["result"]
            return result
        raise AssertionError(f"DevTools socket closed during {method}")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if a promise)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def navigate(self, url: str) -> None:
        await self.send("Page.enable")
        await self.send("Page.navigate", url=url)

    async def wait_for(self, expression: str, within: float) -> Any:
        """Evaluate `expression` until it is truthy (for at most `within` seconds); its value."""
        deadline = time.monotonic() + within
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not true within {within:g} s: {expression}")
            await asyncio.sleep(0.2)

    async def screenshot(self, path: Path, width: int = 1280) -> Path:
        """A PNG of the whole page, `width` CSS pixels wide."""
        metrics = {"width": width, "deviceScaleFactor": 1, "mobile": False}
        # Laid out at `width` first, then as tall as what it holds (nothing below).
        await self.send("Emulation.setDeviceMetricsOverride", height=200, **metrics)
        height = await self.evaluate("Math.ceil(document.body.getBoundingClientRect().bottom)")
        await self.send("Emulation.setDeviceMetricsOverride", height=int(height), **metrics)
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        png = base64.b64decode(shot["data"])
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG"
        await asyncio.to_thread(_write, path, png)
        return path

    async def close(self) -> None:
        await self._socket.close()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
