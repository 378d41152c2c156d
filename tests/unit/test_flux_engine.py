"""The 2.x engine's request contract, against a recording stand-in of the InfluxDB 2.x HTTP API
(`tests/influx2_standin.py`). The stand-in checks the *contract* only (paths, `org`, the token
header, gzip, JSON bodies, annotated CSV, status codes, Retry-After); it runs no Flux, so it says
nothing about what a script computes: that is the live suite's job
(`tests/integration/test_engine_contract.py`)."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.influx2_standin import (
    ROTATED,
    TOKEN,
    Answer,
    StandIn,
    annotated_csv,
    error_answer,
    error_csv,
    influxdb2_connection,
)
from tierflow._engines.flux._engine import FluxEngine
from tierflow._errors import AuthError, EngineError, QueryError, TransientEngineError
from tierflow._templates import DeleteRange, RenderedQuery

T0 = datetime(2026, 11, 1, tzinfo=UTC)
SCRIPT = (
    'from(bucket: "hot") |> range(start: 2026-11-01T00:00:00Z, stop: 2026-11-01T01:00:00Z)'
    ' |> count() |> to(bucket: "warm", org: "acme")'
)
ROWS = annotated_csv(
    [
        (
            ["_start", "_stop", "_time", "_value", "_field", "_measurement", "host"],
            ["dateTime:RFC3339"] * 3 + ["double", "string", "string", "string"],
            [
                [
                    f"{T0:%FT%TZ}",
                    "2026-11-01T01:00:00Z",
                    "2026-11-01T00:00:00Z",
                    "1.5",
                    "t",
                    "m",
                    'a,"quoted"\nhost',
                ],
                [
                    f"{T0:%FT%TZ}",
                    "2026-11-01T01:00:00Z",
                    "2026-11-01T00:05:00.123456789Z",
                    "2",
                    "t",
                    "m",
                    "b",
                ],
            ],
        ),
        (
            ["_time", "_value"],
            ["dateTime:RFC3339", "long"],
            [["2026-11-01T00:00:00Z", "7"]],
        ),
    ]
)


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    server = StandIn(tokens={TOKEN}, default_csv=ROWS)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def engine(standin: StandIn, token_file: Path) -> AsyncIterator[FluxEngine]:
    flux = FluxEngine("cloud", influxdb2_connection(standin.url, token_file))
    yield flux
    await flux.aclose()


def query(text: str = SCRIPT, deletes: tuple[DeleteRange, ...] = ()) -> RenderedQuery:
    return RenderedQuery(text, "flux/downsample.flux.j2", "v1", "flux", deletes)


async def test_a_query_is_a_json_post_scoped_to_the_org_with_the_token(
    standin: StandIn, engine: FluxEngine
) -> None:
    done = await engine.execute(query())

    assert standin.paths() == ["/api/v2/buckets", "/api/v2/buckets", "/api/v2/query"]
    lookups = [r.query for r in standin.requests[:2]]
    assert lookups == [{"org": "acme", "name": "hot"}, {"org": "acme", "name": "warm"}]
    sent = standin.requests[-1]
    assert sent.method == "POST"
    assert sent.query == {"org": "acme"}
    assert sent.headers["Authorization"] == f"Token {TOKEN}"
    assert sent.headers["Content-Type"].startswith("application/json")
    assert "gzip" in sent.headers["Accept-Encoding"]
    body = sent.json()
    assert body["query"] == SCRIPT
    assert body["type"] == "flux"
    assert body["dialect"]["annotations"] == ["datatype", "group", "default"]
    assert body["dialect"]["header"] is True
    # Three data rows in two tables: `to()` passed on three field values.
    assert done.points_written == 3
    assert done.bytes_received == len(ROWS)
    assert done.bytes_sent == len(sent.body)


async def test_gzip_off_asks_for_no_compression(standin: StandIn, token_file: Path) -> None:
    flux = FluxEngine("cloud", influxdb2_connection(standin.url, token_file, gzip=False))
    try:
        await flux.execute(query())
    finally:
        await flux.aclose()
    assert "gzip" not in standin.requests[-1].headers.get("Accept-Encoding", "")


async def test_a_gzipped_response_is_read(standin: StandIn, engine: FluxEngine) -> None:
    standin.gzip_responses = True
    series = await engine.query(SCRIPT)
    assert sum(len(s.values) for s in series) == 3
    assert gzip.compress(ROWS) != ROWS  # the stand-in really compressed something


async def test_query_returns_one_series_per_table_with_time_first(
    standin: StandIn, engine: FluxEngine
) -> None:
    first, second = await engine.query(SCRIPT)

    assert first.name == "_result"
    assert first.columns == ["time", "_start", "_stop", "_value", "_field", "_measurement", "host"]
    assert first.tags == {"_field": "t", "_measurement": "m", "host": 'a,"quoted"\nhost'}
    times = [row[0] for row in first.values]
    assert times == [1_793_491_200_000_000_000, 1_793_491_500_123_456_789]
    assert [row[3] for row in first.values] == [1.5, 2.0]
    assert second.columns == ["time", "_value"]
    assert second.values == [[1_793_491_200_000_000_000, 7]]


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ('error calling function "to": bucket "warm" not found', QueryError),
        ("failed to execute query: context deadline exceeded", TransientEngineError),
    ],
)
async def test_an_error_table_inside_a_200_is_an_engine_error(
    standin: StandIn, engine: FluxEngine, message: str, kind: type[EngineError]
) -> None:
    standin.script("/api/v2/query", Answer(200, ROWS[:-2] + b"\r\n\r\n" + error_csv(message)))
    with pytest.raises(kind) as caught:
        await engine.execute(query())
    assert type(caught.value) is kind
    assert message in str(caught.value)
    assert str(caught.value).startswith("connection cloud: ")


@pytest.mark.parametrize(
    ("status", "kind", "retry_after"),
    [
        (503, TransientEngineError, 7.0),
        (429, TransientEngineError, 2.5),
        (500, TransientEngineError, None),
        (400, QueryError, None),
        (413, QueryError, None),
        (422, QueryError, None),
        (403, AuthError, None),
    ],
)
async def test_http_errors_are_classified_with_retry_after(
    standin: StandIn,
    engine: FluxEngine,
    status: int,
    kind: type[EngineError],
    retry_after: float | None,
) -> None:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    standin.script("/api/v2/query", error_answer(status, "the server's reason", **headers))
    with pytest.raises(EngineError) as caught:
        await engine.execute(query())
    assert type(caught.value) is kind
    assert caught.value.transient is (kind is TransientEngineError)
    assert caught.value.status == status
    assert caught.value.retry_after == retry_after
    assert f"HTTP {status}: the server's reason" in str(caught.value)


async def test_a_401_fetches_the_token_again_and_retries_once(
    standin: StandIn, engine: FluxEngine, token_file: Path
) -> None:
    await engine.execute(query())
    # The token is rotated at its source and on the server: the old one is now refused.
    token_file.write_text(ROTATED, encoding="utf-8")  # noqa: ASYNC240 (a test's setup)
    standin.tokens = {ROTATED}
    before = len(standin.requests)

    done = await engine.execute(query())

    retried = standin.requests[before:]
    assert [r.path for r in retried] == ["/api/v2/query", "/api/v2/query"]
    assert [r.headers["Authorization"] for r in retried] == [f"Token {TOKEN}", f"Token {ROTATED}"]
    assert done.points_written == 3


async def test_a_token_refused_twice_is_an_auth_error_that_names_the_source_not_the_token(
    standin: StandIn, engine: FluxEngine, token_file: Path
) -> None:
    standin.tokens = {"another"}
    with pytest.raises(AuthError) as caught:
        await engine.execute(query())
    message = str(caught.value)
    assert f"file {token_file}" in message
    assert TOKEN not in message
    assert standin.paths() == ["/api/v2/buckets", "/api/v2/buckets"]  # one try, one retry


async def test_a_bucket_outside_the_org_is_refused_before_any_query(
    standin: StandIn, engine: FluxEngine
) -> None:
    standin.buckets = {"hot"}
    with pytest.raises(QueryError, match="bucket 'warm' is not a bucket of org 'acme'"):
        await engine.execute(query())
    assert "/api/v2/query" not in standin.paths()
    # Buckets found once are not looked up again.
    standin.buckets = {"hot", "warm"}
    await engine.execute(query())
    await engine.execute(query())
    assert standin.paths().count("/api/v2/buckets") == 3


async def test_replace_deletes_the_dest_window_first(standin: StandIn, engine: FluxEngine) -> None:
    stop = T0 + timedelta(hours=1)
    deletes = (DeleteRange("warm", "m 5m", T0, stop, (("site", "ber lin"),)),)

    await engine.execute(query(deletes=deletes))

    paths = [p for p in standin.paths() if p != "/api/v2/buckets"]
    assert paths == ["/api/v2/delete", "/api/v2/query"]
    delete = next(r for r in standin.requests if r.path == "/api/v2/delete")
    assert delete.query == {"org": "acme", "bucket": "warm"}
    assert delete.headers["Authorization"] == f"Token {TOKEN}"
    assert delete.json() == {
        "start": "2026-11-01T00:00:00Z",
        "stop": "2026-11-01T00:59:59.999999999Z",
        "predicate": '_measurement="m 5m" AND "site"="ber lin"',
    }


async def test_a_failed_delete_sends_no_query(standin: StandIn, engine: FluxEngine) -> None:
    standin.script("/api/v2/delete", error_answer(503, "busy", **{"Retry-After": "3"}))
    deletes = (DeleteRange("warm", "m", T0, T0 + timedelta(hours=1)),)
    with pytest.raises(TransientEngineError) as caught:
        await engine.execute(query(deletes=deletes))
    assert caught.value.retry_after == 3.0
    assert "/api/v2/query" not in standin.paths()


async def test_ping_asks_health_and_ready(standin: StandIn, engine: FluxEngine) -> None:
    await engine.ping()
    assert standin.paths() == ["/health", "/ready"]
    standin.script("/health", Answer(503, b'{"name":"influxdb","status":"fail","message":"x"}'))
    with pytest.raises(TransientEngineError, match="/health answered HTTP 503"):
        await engine.ping()
    standin.script("/ready", Answer(503, b"{}"))
    with pytest.raises(TransientEngineError, match="/ready answered HTTP 503"):
        await engine.ping()


async def test_analyze_returns_the_servers_syntax_errors(
    standin: StandIn, engine: FluxEngine
) -> None:
    standin.script(
        "/api/v2/query/analyze",
        Answer(200, b'{"errors":[{"line":2,"column":5,"character":0,"message":"expected )"}]}'),
    )
    assert await engine.analyze("from(") == ["line 2:5: expected )"]
    sent = standin.requests[-1]
    assert sent.json() == {"query": "from(", "type": "flux"}
    assert sent.headers["Authorization"] == f"Token {TOKEN}"


async def test_requests_in_flight_stay_within_max_concurrency(
    standin: StandIn, token_file: Path
) -> None:
    import asyncio

    flux = FluxEngine("cloud", influxdb2_connection(standin.url, token_file, max_concurrency=2))
    standin.script("/api/v2/query", *[Answer(200, ROWS, delay=0.05)] * 6)
    try:
        await flux.execute(query())  # learn the buckets first
        await asyncio.gather(*(flux.execute(query()) for _ in range(5)))
    finally:
        await flux.aclose()
    assert standin.max_in_flight == 2


async def test_an_unreachable_server_is_transient(token_file: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    flux = FluxEngine("cloud", influxdb2_connection(f"http://127.0.0.1:{port}", token_file))
    try:
        with pytest.raises(TransientEngineError, match="unreachable"):
            await flux.ping()
        with pytest.raises(TransientEngineError, match="unreachable"):
            await flux.execute(query())
    finally:
        await flux.aclose()


async def test_a_missing_token_source_is_an_auth_error(standin: StandIn, tmp_path: Path) -> None:
    flux = FluxEngine("cloud", influxdb2_connection(standin.url, tmp_path / "missing"))
    with pytest.raises(AuthError, match="cannot read secret file"):
        await flux.execute(query())
    await flux.aclose()
    assert standin.requests == []


def test_influxdb_client_is_imported_only_when_a_2x_engine_runs() -> None:
    import subprocess
    import sys

    script = (
        "import sys, tierflow, tierflow._cli, tierflow._jobs, tierflow._validation\n"
        "from tierflow._engines import engine_for\n"
        "assert 'influxdb_client' not in sys.modules, 'imported at package import'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
