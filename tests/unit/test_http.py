"""The shared HTTP layer's request contract, driven through `MockTransport`: credentials and
the 401 re-fetch, the status table, Retry-After, gzip, the header hooks, limits, metrics, and
secrets kept out of every message and log."""

from __future__ import annotations

import asyncio
import gzip
import logging
import threading
from pathlib import Path

import pytest

from tierflow import _secrets
from tierflow._errors import AuthError, EngineError, QueryError, TransientEngineError
from tierflow._http import (
    BasicAuth,
    ErrorTable,
    HttpClient,
    KnownError,
    NoAuth,
    TokenAuth,
    server_message,
)
from tierflow._metrics import Metrics
from tierflow._secrets import CommandSecret, FileSecret, LiteralSecret, aresolve
from tierflow.testing import HttpRequest, MockResponse, MockTransport, NetworkError

TOKEN = "s3cr3t-token-value"
ROTATED = "rotated-token-value"
KNOWN = (
    KnownError("bucket not found", QueryError, "create it", decisive=True),
    KnownError("engine is closed", TransientEngineError),
)


def client(
    transport: MockTransport,
    auth: object = None,
    *,
    gzip_on: bool = True,
    metrics: Metrics | None = None,
    max_concurrency: int = 4,
    hooks: tuple[object, ...] = (),
) -> HttpClient:
    return HttpClient(
        "plant",
        "http://influx.example:8086/",
        transport=transport,
        auth=auth or TokenAuth(LiteralSecret(value=TOKEN)),  # type: ignore[arg-type]
        errors=ErrorTable(KNOWN),
        max_concurrency=max_concurrency,
        gzip=gzip_on,
        metrics=metrics,
        header_hooks=hooks,  # type: ignore[arg-type]
    )


def answer(status: int = 200, body: bytes = b"{}", **headers: str) -> MockTransport:
    return MockTransport(lambda request: MockResponse(status, body, headers))


def error(status: int, message: str, **headers: str) -> MockTransport:
    return answer(status, b'{"code":"x","message":"' + message.encode() + b'"}', **headers)


# -- requests ------------------------------------------------------------------------------------


async def test_a_request_carries_url_params_body_and_credentials() -> None:
    transport = answer(200, b'{"ok": true}')
    reply = await client(transport).request(
        "POST", "/api/v2/query", kind="query", params={"org": "acme"}, json_body={"q": 1}
    )
    (sent,) = transport.requests
    assert (sent.method, sent.url) == ("POST", "http://influx.example:8086/api/v2/query")
    assert sent.params == {"org": "acme"}
    assert sent.headers["Authorization"] == f"Token {TOKEN}"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.body == b'{"q": 1}'
    assert not sent.streaming
    assert reply.json_object() == {"ok": True}


async def test_a_form_is_url_encoded() -> None:
    transport = answer()
    form = {"q": "SELECT 1", "db": "d"}
    await client(transport).request("POST", "query", kind="query", form=form)
    assert transport.requests[0].body == b"q=SELECT+1&db=d"
    assert transport.requests[0].url == "http://influx.example:8086/query"


async def test_a_stream_asks_for_a_timeout_per_read_and_yields_pieces() -> None:
    transport = MockTransport(lambda r: MockResponse(200, b"a\nbb\nccc", chunks=2))
    async with client(transport).stream("POST", "query", kind="stream") as body:
        lines = [line async for line in body.lines()]
    assert transport.requests[0].streaming
    assert lines == [b"a\n", b"bb\n", b"ccc"]
    assert body.received == 8


# -- credentials ---------------------------------------------------------------------------------


async def test_a_401_fetches_the_token_again_and_retries_once(tmp_path: Path) -> None:
    source = tmp_path / "token"
    source.write_text(TOKEN + "\n", encoding="utf-8")
    source_command = CommandSecret(command=("cat", str(source)))

    def handler(request: HttpRequest) -> MockResponse:
        if request.headers["Authorization"] == f"Token {TOKEN}":
            source.write_text(ROTATED, encoding="utf-8")  # rotated at its source
            return MockResponse(401, b'{"message":"unauthorized access"}')
        return MockResponse(200, b"{}")

    transport = MockTransport(handler)
    http = client(transport, TokenAuth(source_command))
    _secrets.refresh(source_command)
    reply = await http.request("GET", "/ping", kind="ping")
    assert reply.status == 200
    assert [r.headers["Authorization"] for r in transport.requests] == [
        f"Token {TOKEN}",
        f"Token {ROTATED}",
    ]


async def test_a_token_refused_twice_names_its_source_not_the_token(tmp_path: Path) -> None:
    source = tmp_path / "token"
    source.write_text(TOKEN, encoding="utf-8")
    transport = MockTransport(
        lambda r: MockResponse(401, f'{{"message":"token {TOKEN} refused"}}'.encode())
    )
    with pytest.raises(AuthError) as caught:
        await client(transport, TokenAuth(FileSecret(file=source))).request(
            "GET", "x", kind="query"
        )
    message = str(caught.value)
    assert len(transport.requests) == 2  # one try, one retry
    assert caught.value.status == 401
    assert f"file {source}" in message
    assert "fetched again" in message
    assert TOKEN not in message
    assert "<redacted>" in message


async def test_without_a_password_a_401_is_not_retried() -> None:
    transport = error(401, "authorization failed")
    with pytest.raises(AuthError, match="HTTP 401: authorization failed"):
        await client(transport, BasicAuth("tierflow", None)).request("POST", "q", kind="query")
    assert len(transport.requests) == 1


async def test_a_403_is_an_auth_error_at_once() -> None:
    transport = error(403, "insufficient permissions")
    with pytest.raises(AuthError, match="HTTP 403: insufficient permissions"):
        await client(transport).request("POST", "q", kind="query")
    assert len(transport.requests) == 1


async def test_basic_auth_is_utf8() -> None:
    transport = answer()
    auth = BasicAuth("tierflow", LiteralSecret(value="pässword"))
    await client(transport, auth).request("GET", "ping", kind="ping")
    assert transport.requests[0].headers["Authorization"] == "Basic dGllcmZsb3c6cMOkc3N3b3Jk"


async def test_no_auth_sends_no_authorization() -> None:
    transport = answer()
    await client(transport, NoAuth()).request("GET", "ping", kind="ping")
    assert "Authorization" not in transport.requests[0].headers


async def test_a_secret_that_cannot_be_read_is_an_auth_error_and_nothing_is_sent(
    tmp_path: Path,
) -> None:
    transport = answer()
    auth = TokenAuth(FileSecret(file=tmp_path / "missing"))
    with pytest.raises(AuthError, match="connection plant: cannot read secret file"):
        await client(transport, auth).request("GET", "ping", kind="ping")
    assert transport.requests == []


async def test_secrets_never_reach_messages_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echoed = f"bad header: Authorization: Token {TOKEN}"
    for status in (400, 401, 500):
        with pytest.raises(EngineError) as caught:
            await client(error(status, echoed)).request("GET", "q", kind="query")
        assert TOKEN not in str(caught.value)
        assert TOKEN not in repr(caught.value.args)
    assert TOKEN not in caplog.text


# -- the status table ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "kind", "retry_after"),
    [
        (503, "unavailable", TransientEngineError, 7.0),
        (429, "too many requests", TransientEngineError, 2.5),
        (500, "boom", TransientEngineError, None),
        (408, "slow", TransientEngineError, None),
        (502, "bad gateway", TransientEngineError, None),
        (504, "gateway timeout", TransientEngineError, None),
        (400, "syntax", QueryError, None),
        (404, "nope", QueryError, None),
        (413, "too large", QueryError, None),
        (422, "unprocessable", QueryError, None),
        (501, "not implemented", EngineError, None),
        (500, 'bucket not found "x"', QueryError, None),  # a decisive text beats the status
        (400, "engine is closed", QueryError, None),  # a plain text does not
    ],
)
async def test_each_status_maps_to_one_error_with_retry_after(
    status: int, message: str, kind: type[EngineError], retry_after: float | None
) -> None:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    with pytest.raises(EngineError) as caught:
        await client(error(status, message, **headers)).request(
            "POST", "q", kind="query", doing="writing to bucket 'b'"
        )
    assert type(caught.value) is kind
    assert caught.value.status == status
    assert caught.value.retry_after == retry_after
    assert str(caught.value).startswith(f"connection plant: writing to bucket 'b': HTTP {status}")
    assert message in str(caught.value)


async def test_a_known_fix_follows_the_message() -> None:
    with pytest.raises(QueryError, match=r"bucket not found \(create it\)$"):
        await client(error(404, "bucket not found")).request("GET", "q", kind="query")


async def test_statuses_in_ok_are_returned() -> None:
    reply = await client(error(404, "no")).request("GET", "q", kind="query", ok=(200, 404))
    assert reply.status == 404


def test_the_server_message_is_read_from_json_msgpack_or_text() -> None:
    assert server_message(b'{"code":"invalid","message":"m2"}') == "m2"
    assert server_message(b'{"error":"m1"}') == "m1"
    assert server_message(b"\x81\xa5error\xa2m3") == "m3"
    assert server_message(b"404 page not found\n") == "404 page not found"


def test_errors_inside_a_200_are_decided_by_the_text() -> None:
    table = ErrorTable(KNOWN)
    assert table.classify(None, "[shard 1] engine is closed") is TransientEngineError
    assert table.classify(None, "anything else") is QueryError


# -- the network ---------------------------------------------------------------------------------


def refuse(request: HttpRequest) -> MockResponse:
    raise NetworkError("unreachable (Connection refused)")


async def test_an_unreachable_server_is_transient() -> None:
    http = client(MockTransport(refuse))
    with pytest.raises(TransientEngineError) as caught:
        await http.request("GET", "q", kind="query")
    assert str(caught.value) == (
        "connection plant: http://influx.example:8086/: unreachable (Connection refused)"
    )
    with pytest.raises(TransientEngineError, match="8086/ unreachable: unreachable"):
        await http.request("GET", "ping", kind="ping", probe=True)


async def test_a_timeout_is_transient() -> None:
    def slow(request: HttpRequest) -> MockResponse:
        raise TimeoutError

    with pytest.raises(TransientEngineError, match="timed out"):
        await client(MockTransport(slow)).request("GET", "q", kind="query")


async def test_a_response_cut_off_midway_is_transient() -> None:
    transport = MockTransport(lambda r: MockResponse(200, b"x" * 100, chunks=10, cut_after=30))
    opened = []

    async def read_all() -> None:
        async with client(transport).stream("POST", "query", kind="stream") as body:
            opened.append(body)
            await body.read()

    with pytest.raises(TransientEngineError, match="response cut off: ServerDisconnected"):
        await read_all()
    assert opened[0].received == 30


# -- gzip, headers, limits, metrics --------------------------------------------------------------


async def test_gzip_compresses_bodies_asked_for_and_decodes_responses() -> None:
    rows = b"a,b\n1,2\n" * 100

    def handler(request: HttpRequest) -> MockResponse:
        assert request.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(request.body) == b"m f=1 1"
        assert request.headers["Accept-Encoding"] == "gzip"
        return MockResponse(200, gzip.compress(rows), {"Content-Encoding": "gzip"})

    reply = await client(MockTransport(handler)).request(
        "POST", "write", kind="write", body=b"m f=1 1", compress=True
    )
    assert reply.body == rows


async def test_gzip_off_sends_plain_bodies_and_asks_for_identity() -> None:
    transport = answer()
    await client(transport, gzip_on=False).request(
        "POST", "write", kind="write", body=b"m f=1 1", compress=True
    )
    (sent,) = transport.requests
    assert sent.body == b"m f=1 1"
    assert "Content-Encoding" not in sent.headers
    assert sent.headers["Accept-Encoding"] == "identity"


async def test_a_caller_may_refuse_compression_for_one_request() -> None:
    transport = answer()
    await client(transport).request(
        "POST", "query", kind="query", headers={"Accept-Encoding": "identity"}
    )
    assert transport.requests[0].headers["Accept-Encoding"] == "identity"


async def test_header_hooks_add_to_every_request_retries_included(tmp_path: Path) -> None:
    traces = iter(["00-a-01-01", "00-b-01-01"])
    statuses = iter([401, 200])
    transport = MockTransport(lambda r: MockResponse(next(statuses), b"{}"))
    http = client(
        transport,
        TokenAuth(LiteralSecret(value=TOKEN)),
        hooks=(lambda: {"traceparent": next(traces)},),
    )
    await http.request("GET", "q", kind="query")
    assert [r.headers["traceparent"] for r in transport.requests] == ["00-a-01-01", "00-b-01-01"]


async def test_requests_in_flight_stay_within_max_concurrency() -> None:
    in_flight = peak = 0

    async def handler(request: HttpRequest) -> MockResponse:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return MockResponse(200, b"{}")

    http = client(MockTransport(handler), max_concurrency=2)
    await asyncio.gather(*(http.request("GET", "q", kind="query") for _ in range(6)))
    assert peak == 2


async def test_metrics_keep_their_names_and_labels() -> None:
    metrics = Metrics()
    http = client(answer(200, b"0123456789"), metrics=metrics)
    await http.request("POST", "q", kind="execute", body=b"abc")
    value = metrics.registry.get_sample_value
    labels = {"connection": "plant"}
    assert value("tierflow_payload_bytes_total", {**labels, "direction": "sent"}) == 3
    assert value("tierflow_payload_bytes_total", {**labels, "direction": "received"}) == 10
    assert value("tierflow_query_duration_seconds_count", {**labels, "kind": "execute"}) == 1


async def test_aclose_closes_the_transport() -> None:
    transport = answer()
    await client(transport).aclose()
    assert transport.closed


# -- secrets off the event loop ------------------------------------------------------------------


async def test_a_command_secret_resolves_on_a_worker_thread_and_is_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []

    def run(source: CommandSecret) -> str:
        threads.append(threading.get_ident())
        return f"value-{len(threads)}"

    monkeypatch.setattr(_secrets, "_run_command", run)
    source = CommandSecret(command=("print-secret", "test_http"))
    _secrets.refresh(source)
    assert await aresolve(source) == "value-1"
    assert await aresolve(source) == "value-1"  # cached: no second fetch
    _secrets.refresh(source)
    assert await aresolve(source) == "value-2"
    assert threads
    assert threading.get_ident() not in threads


async def test_concurrent_requests_fetch_a_cold_secret_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def run(source: CommandSecret) -> str:
        calls.append("x")
        return TOKEN

    monkeypatch.setattr(_secrets, "_run_command", run)
    source = CommandSecret(command=("print-secret", "cold"))
    _secrets.refresh(source)
    transport = answer()
    http = client(transport, TokenAuth(source))
    await asyncio.gather(*(http.request("GET", "q", kind="query") for _ in range(5)))
    assert calls == ["x"]
    assert {r.headers["Authorization"] for r in transport.requests} == {f"Token {TOKEN}"}


# -- the engines through the layer ---------------------------------------------------------------


async def test_a_2x_write_is_gzipped_once(tmp_path: Path) -> None:
    from tests.influx2_standin import influxdb2_connection
    from tierflow._engines.flux._engine import FluxEngine

    token = tmp_path / "token"
    token.write_text(TOKEN, encoding="utf-8")

    def handler(request: HttpRequest) -> MockResponse:
        if request.url.endswith("/api/v2/buckets"):
            return MockResponse(200, b'{"buckets":[{"name":"hot"}]}')
        return MockResponse(204)

    transport = MockTransport(handler)
    engine = FluxEngine(
        "cloud", influxdb2_connection("http://influx.example:8086", token), transport=transport
    )
    sent = await engine.write(b"m v=1 1\n", database="hot")
    write = transport.requests[-1]
    assert write.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(write.body) == b"m v=1 1\n"  # one layer: what the server undoes
    assert sent == len(write.body)
    assert write.params == {"org": "acme", "bucket": "hot", "precision": "ns"}


async def test_a_1x_statement_error_inside_a_200_goes_through_the_engines_table() -> None:
    from tierflow._config import InfluxDB1Connection
    from tierflow._engines.influxql._engine import InfluxQLEngine

    body = b'{"results":[{"statement_id":0,"error":"engine is closed"}]}'
    transport = MockTransport(lambda request: MockResponse(200, body))
    connection = InfluxDB1Connection(kind="influxdb1", url="http://influx.example:8086")
    engine = InfluxQLEngine("plant", connection, transport=transport)
    with pytest.raises(TransientEngineError, match="plant: statement 0: engine is closed"):
        await engine.query("SHOW DATABASES")
    assert transport.requests[0].body == b"q=SHOW+DATABASES&epoch=ns"
