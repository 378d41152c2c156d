"""The daemon's status page and `/api/status`: the same document `status --json` prints, what it
adds (recent windows, last errors, connections and their circuits), and `[server] token`/`public`:
who may read what, and which listen addresses need either."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from typer.testing import CliRunner

from tests.fakes import FakeEngine
from tests.unit.test_runner import NOW, START, make_runner
from tierflow._cli import app
from tierflow._config import ServerConfig, load_config, parse_config
from tierflow._config._models import CircuitConfig, RetryConfig
from tierflow._daemon import MetricsServer
from tierflow._errors import (
    ConfigError,
    InvalidInputError,
    QueryError,
    StateUnavailableError,
    TransientEngineError,
)
from tierflow._resilience import ResilientEngine
from tierflow._runner import Runner
from tierflow._secrets import EnvSecret
from tierflow._state import SqliteStateStore
from tierflow._status import status_document

TOKEN = "s3cr3t-t0ken-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def served(runner: Runner, **server: Any) -> tuple[MetricsServer, str]:
    port = free_port()
    config = ServerConfig(listen=f"127.0.0.1:{port}", **server)
    metrics_server = MetricsServer(runner, config)
    await metrics_server.start()
    return metrics_server, f"http://127.0.0.1:{port}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


# -- the document --------------------------------------------------------------------------------


async def test_recent_windows_last_errors_and_connections(session: aiohttp.ClientSession) -> None:
    # Hourly windows from START, the clock at START + 5h: five complete windows, the fourth
    # (call 3) refused by the server.
    runner, _, _ = make_runner(engine=FakeEngine(failures={3: QueryError("no such database")}))
    await runner.run_due(NOW)
    server, url = await served(runner)
    try:
        async with session.get(f"{url}/api/status") as response:
            assert response.status == 200
            document = await response.json()
    finally:
        await server.stop()
    (job,) = document["jobs"]
    assert document["now"] == "2026-01-01T05:00:00Z"
    assert [(w["start"], w["state"], w["attempts"]) for w in job["recent_windows"]] == [
        ("2026-01-01T00:00:00Z", "succeeded", 1),
        ("2026-01-01T01:00:00Z", "succeeded", 1),
        ("2026-01-01T02:00:00Z", "succeeded", 1),
        ("2026-01-01T03:00:00Z", "failed", 1),
        ("2026-01-01T04:00:00Z", "succeeded", 1),
    ]
    assert job["recent_windows"][3]["error"] == "no such database"
    assert not any(w["at_risk"] for w in job["recent_windows"])  # the tier keeps data forever
    assert [(e["start"], e["status"], e["error"]) for e in job["last_errors"]] == [
        ("2026-01-01T03:00:00Z", "failed", "no such database")
    ]
    assert document["connections"] == [
        {
            "name": "plant",
            "kind": "influxdb1",
            "url": "http://influx.example:8086",
            "circuit": "closed",
        }
    ]
    # And the API is the one function's document, circuits as this process knows them.
    assert document == json.loads(
        json.dumps(await status_document(runner, None, NOW, circuits={"plant": "closed"}))
    )


async def test_only_the_last_24_windows_are_shown_and_at_risk_ones_flagged() -> None:
    # Two days of hourly windows from START on a tier keeping 12 hours (margin: a tenth, 72
    # minutes); nothing has run. At START + 48h the windows shown are the 24 last complete ones
    # (24..47); a window waiting whose data expires before now - 12h + 72min (START + 37.2h)
    # is at risk: windows 24..37.
    raw = {
        "connections": {"plant": {"kind": "influxdb1", "url": "http://influx.example:8086"}},
        "tiers": {
            "raw": {"connection": "plant", "bucket": "raw/autogen", "retention": "12h"},
            "rollup": {"connection": "plant", "bucket": "rollup"},
        },
        "jobs": {
            "cpu": {
                "kind": "downsample",
                "source": "raw",
                "dest": "rollup",
                "measurements": ["cpu"],
                "every": "1h",
                "start": START,
                "aggregates": {"usage": ["mean"]},
            }
        },
    }
    now = START + timedelta(hours=48)
    runner, _, _ = make_runner(parse_config(raw, Path("t.toml")), now=now)
    windows = (await status_document(runner, None, now))["jobs"][0]["recent_windows"]
    assert [w["start"] for w in windows] == [f"2026-01-02T{h:02d}:00:00Z" for h in range(24)]
    assert windows[-1]["stop"] == "2026-01-03T00:00:00Z"
    assert {w["state"] for w in windows} == {"pending"}
    flagged = [w["start"] for w in windows if w["at_risk"]]
    assert flagged == [f"2026-01-02T{h:02d}:00:00Z" for h in range(14)]


async def test_a_breaker_opened_in_the_daemon_shows_in_the_api(
    session: aiohttp.ClientSession,
) -> None:
    fake = FakeEngine()
    engine = ResilientEngine(fake, "plant", RetryConfig(), CircuitConfig(failures=1))
    runner, _, _ = make_runner()
    runner.engines["plant"] = engine
    engine.breaker.record_failure(TransientEngineError("connection refused"))
    server, url = await served(runner)
    try:
        async with session.get(f"{url}/api/status") as response:
            document = await response.json()
    finally:
        await server.stop()
    assert [c["circuit"] for c in document["connections"]] == ["open"]
    # Outside the daemon nobody knows: the CLI's document says null.
    assert [c["circuit"] for c in (await status_document(runner, None, NOW))["connections"]] == [
        None
    ]


CONFIG = """
[state]
url = "sqlite:///{state}"

[connections.plant]
kind = "influxdb1"
url = "http://127.0.0.1:9"

[tiers.raw]
connection = "plant"
bucket = "raw/autogen"

[tiers.rollup]
connection = "plant"
bucket = "rollup"

[jobs.cpu]
kind = "downsample"
source = "raw"
dest = "rollup"
measurements = ["cpu"]
every = "1h"
start = 2026-01-01T00:00:00Z
aggregates = {{ usage = ["mean"] }}
"""


async def test_the_cli_prints_what_the_api_serves(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    path = tmp_path / "tierflow.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state.db"), encoding="utf-8")
    config = load_config(path)
    store = SqliteStateStore(tmp_path / "state.db")
    try:
        runner = Runner(
            config,
            store,
            engines={"plant": FakeEngine(failures={1: QueryError("database not found: rollup")})},
            clock=lambda: NOW,
        )
        await runner.run_due(NOW)
        server, url = await served(runner)
        try:
            async with session.get(f"{url}/api/status") as response:
                served_document = await response.json()
        finally:
            await server.stop()
    finally:
        await store.aclose()
    # The CLI runs its own event loop: on a thread of its own, not inside this test's.
    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["status", "-c", str(path), "--now", "2026-01-01T05:00:00Z", "--json"],
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    # The one difference: the circuits, which only the daemon knows.
    assert [c["circuit"] for c in served_document["connections"]] == ["closed"]
    assert [c["circuit"] for c in printed["connections"]] == [None]
    for connection in served_document["connections"]:
        connection["circuit"] = None
    assert printed == served_document
    assert printed["jobs"][0]["failed_windows"] == 1
    assert printed["jobs"][0]["recent_windows"][1]["state"] == "failed"


# -- the page ------------------------------------------------------------------------------------


async def test_the_page_is_one_self_contained_document(session: aiohttp.ClientSession) -> None:
    runner, _, _ = make_runner()
    server, url = await served(runner)
    try:
        async with session.get(f"{url}/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            policy = response.headers["Content-Security-Policy"]
            page = await response.text()
    finally:
        await server.stop()
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    # No external assets: nothing is loaded from anywhere but this daemon.
    for reference in ("http://", "https://", "src=", "<link", "@import"):
        assert reference not in page, reference
    assert "api/status" in page


# -- who may read ---------------------------------------------------------------------------------


async def test_a_token_guards_the_api_and_metrics_but_not_the_probes_or_the_shell(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERFLOW_TEST_SERVER_TOKEN", TOKEN)
    runner, _, _ = make_runner()
    server, url = await served(runner, token=EnvSecret(env="TIERFLOW_TEST_SERVER_TOKEN"))
    good = {"Authorization": f"Bearer {TOKEN}"}
    try:
        for path in ("/api/status", "/metrics"):
            async with session.get(url + path) as response:
                assert response.status == 401, path
                assert response.headers["WWW-Authenticate"] == 'Bearer realm="tierflow"'
                assert TOKEN not in await response.text()
            for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", "Bearer"):
                async with session.get(url + path, headers={"Authorization": wrong}) as response:
                    assert response.status == 401, (path, wrong)
            async with session.get(url + path, headers=good) as response:
                assert response.status == 200, path
                body = await response.text()
                assert TOKEN not in body
        for path in ("/healthz", "/readyz", "/"):
            async with session.get(url + path) as response:
                assert response.status == 200, path
                assert TOKEN not in await response.text()
        # Rotated: the new value works at once, the old one no longer does.
        monkeypatch.setenv("TIERFLOW_TEST_SERVER_TOKEN", "rotated-value")
        async with session.get(f"{url}/api/status", headers=good) as response:
            assert response.status == 401
            assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        rotated = {"Authorization": "Bearer rotated-value"}
        async with session.get(f"{url}/api/status", headers=rotated) as response:
            assert response.status == 200
        # The source gone: refused, and the client is not told why beyond "see the log".
        monkeypatch.delenv("TIERFLOW_TEST_SERVER_TOKEN")
        async with session.get(f"{url}/api/status", headers=rotated) as response:
            assert response.status == 503
            assert "TIERFLOW_TEST_SERVER_TOKEN" not in await response.text()
    finally:
        await server.stop()


async def test_without_a_token_a_loopback_server_is_open(session: aiohttp.ClientSession) -> None:
    runner, _, _ = make_runner()
    server, url = await served(runner)
    try:
        for path in ("/", "/api/status", "/metrics", "/healthz", "/readyz"):
            async with session.get(url + path) as response:
                assert response.status == 200, path
    finally:
        await server.stop()


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:9100", "127.3.4.5:9100", "[::1]:9100", "localhost:9100", "LOCALHOST:1"]
)
def test_loopback_needs_neither_token_nor_public(listen: str) -> None:
    assert ServerConfig(listen=listen).loopback


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:9100", "[::]:9100", "10.0.0.5:9100", "metrics.internal:9100"]
)
def test_any_other_address_needs_a_token_or_public(listen: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_with({"listen": listen})
    message = str(caught.value)
    assert "[server]" in message
    assert "reachable from other hosts" in message
    assert "token" in message
    assert "public = true" in message
    assert config_with({"listen": listen, "public": True}).server is not None
    server = config_with({"listen": listen, "token": {"env": "X"}}).server
    assert server is not None
    assert isinstance(server.token, EnvSecret)


def test_token_and_public_together_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"\[server\].*either 'token' or 'public = true'"):
        config_with({"listen": "0.0.0.0:1", "public": True, "token": {"env": "X"}})


def test_a_literal_token_is_warned_about() -> None:
    with pytest.warns(UserWarning, match=r"\[server\] token is written into the config"):
        config_with({"listen": "0.0.0.0:1", "token": "abc"})


def test_validate_exits_2_naming_server(tmp_path: Path) -> None:
    path = tmp_path / "tierflow.toml"
    path.write_text('[server]\nlisten = "0.0.0.0:9100"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", "-c", str(path)])
    assert result.exit_code == 2
    assert "[server]" in result.output
    assert "reachable from other hosts" in result.output
    assert "Traceback" not in result.output


def config_with(server: dict[str, Any]) -> Any:
    return parse_config({"server": server}, Path("t.toml"))


async def test_a_port_taken_is_named_without_the_token_source() -> None:
    from tierflow._daemon import _start

    runner, _, _ = make_runner()
    first, url = await served(runner)
    port = url.rpartition(":")[2]
    second = MetricsServer(
        runner, ServerConfig(listen=f"127.0.0.1:{port}", token={"kind": "env", "env": "SOME_VAR"})
    )
    try:
        with pytest.raises(InvalidInputError) as caught:
            await _start(second)
    finally:
        await first.stop()
    assert str(caught.value).startswith(f"cannot serve on 127.0.0.1:{port}: ")
    assert "SOME_VAR" not in str(caught.value)


async def test_a_state_store_that_does_not_answer_is_a_503_the_page_can_show(
    session: aiohttp.ClientSession,
) -> None:
    runner, store, _ = make_runner()

    async def down(*_: object, **__: object) -> None:
        raise StateUnavailableError("state store unreachable: connection refused")

    store.workers = down  # type: ignore[method-assign,assignment]
    server, url = await served(runner)
    try:
        async with session.get(f"{url}/api/status") as response:
            assert response.status == 503
            assert await response.json() == {
                "error": "cannot read the status: state store unreachable: connection refused"
            }
    finally:
        await server.stop()


async def test_no_credential_reaches_the_api_even_when_the_server_echoes_it(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server (or a proxy in front of it) that quotes what it was sent in its error: the
    # password, and the Authorization header it arrived in. The window fails with that error,
    # which the API shows; the credentials must not be in it, nor anywhere in the document.
    import base64

    from tierflow._config import InfluxDB1Connection
    from tierflow._engines.influxql._engine import InfluxQLEngine
    from tierflow.testing import MockResponse, MockTransport

    password = "pw-Zq8vN3xR5"
    monkeypatch.setenv("TIERFLOW_TEST_PASSWORD", password)
    config = parse_config(
        {
            "connections": {
                "plant": {
                    "kind": "influxdb1",
                    "url": "http://influx.example:8086",
                    "username": "tierflow",
                    "password": {"env": "TIERFLOW_TEST_PASSWORD"},
                }
            },
            "tiers": {
                "raw": {"connection": "plant", "bucket": "raw/autogen"},
                "rollup": {"connection": "plant", "bucket": "rollup"},
            },
            "jobs": {
                "cpu": {
                    "kind": "downsample",
                    "source": "raw",
                    "dest": "rollup",
                    "measurements": ["cpu"],
                    "every": "1h",
                    "start": START,
                    "aggregates": {"usage": ["mean"]},
                }
            },
        },
        Path("t.toml"),
    )

    def echo(request: Any) -> MockResponse:
        sent = request.headers.get("Authorization", "")
        body = json.dumps({"error": f"refused {sent} (password {password}) for this query"})
        return MockResponse(400, body.encode(), {"Content-Type": "application/json"})

    connection = config.connections["plant"]
    assert isinstance(connection, InfluxDB1Connection)
    engine = InfluxQLEngine("plant", connection, transport=MockTransport(echo))
    runner, _, _ = make_runner(config)
    runner.engines["plant"] = engine
    await runner.run_due(NOW)
    server, url = await served(runner)
    try:
        async with session.get(f"{url}/api/status") as response:
            text = await response.text()
    finally:
        await server.stop()
        await engine.aclose()
    document = json.loads(text)
    assert document["jobs"][0]["last_errors"], text  # the server's error is shown
    assert "refused" in document["jobs"][0]["last_errors"][0]["error"]
    encoded = base64.b64encode(f"tierflow:{password}".encode()).decode()
    assert password not in text
    assert encoded not in text
