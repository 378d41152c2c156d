"""Tracing without a server: export set up from `OTEL_*` (or not), the `traceparent` the HTTP
layer sends with and without an SDK, window-run and state-call spans of the runner, and the
daemon's endpoints honouring an incoming `traceparent`."""

from __future__ import annotations

import os

import aiohttp
import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from tests.events import Events
from tests.fakes import FakeEngine
from tests.spans import (
    named,
    otlp_receiver,
    parent_id,
    recording,
    span_id,
    trace_id,
    traceparent,
)
from tests.unit.test_alert_metrics import free_port
from tests.unit.test_runner import NOW, make_runner
from tierflow._config import ServerConfig
from tierflow._daemon import MetricsServer
from tierflow._errors import QueryError
from tierflow._http import ErrorTable, HttpClient, TokenAuth
from tierflow._secrets import LiteralSecret
from tierflow._tracing import configure_from_env, provider_from_env, tracer, window_run
from tierflow.testing import MockResponse, MockTransport

# -- export from the environment -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_otel_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell must not decide what these tests see.
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"},  # no exporter asked for
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "TRUE"},
    ],
)
def test_nothing_is_exported_unless_asked_for(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert provider_from_env() is None
    assert configure_from_env() is False
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def test_an_unknown_exporter_is_logged_and_ignored(
    events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin-ish")
    assert provider_from_env() is None
    (logged,) = events.named("tracing_not_exported")
    assert "zipkin-ish" in logged["reason"]


def test_the_console_exporter_writes_to_stderr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    provider = provider_from_env()
    assert provider is not None
    provider.get_tracer("t").start_span("seen-on-stderr").end()
    provider.shutdown()
    out, err = capsys.readouterr()
    assert "seen-on-stderr" in err
    assert out == ""  # stdout is for what a command prints


def test_an_otlp_endpoint_alone_exports_protobuf_spans_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with otlp_receiver() as received:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", received.url)
        provider = provider_from_env()
        assert provider is not None
        provider.get_tracer("t").start_span("exported").end()
        provider.shutdown()  # flushes the batch
    assert [(path, kind) for path, kind, _ in received.posts] == [
        ("/v1/traces", "application/x-protobuf")
    ]
    (request,) = received.requests()
    (resource,) = request.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert service["service.name"] == "tierflow"  # OTEL_SERVICE_NAME unset
    names = [s.name for scope in resource.scope_spans for s in scope.spans]
    assert names == ["exported"]


def test_otel_service_name_wins_over_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    provider = provider_from_env()
    assert provider is not None
    provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "warm-tier")
    named_provider = provider_from_env()
    assert named_provider is not None
    assert named_provider.resource.attributes["service.name"] == "warm-tier"
    assert provider.resource.attributes["service.name"] == "tierflow"
    named_provider.shutdown()


# -- the HTTP layer --------------------------------------------------------------------------------


def client(transport: MockTransport) -> HttpClient:
    return HttpClient(
        "plant",
        "http://u:pw@influx.example:8086/",
        transport=transport,
        auth=TokenAuth(LiteralSecret(value="tok")),
        errors=ErrorTable(()),
        max_concurrency=2,
    )


async def test_without_an_sdk_requests_of_a_window_run_share_a_trace_not_a_span() -> None:
    statuses = iter([401, 200, 200, 200])
    transport = MockTransport(lambda r: MockResponse(next(statuses), b"{}"))
    http = client(transport)
    with window_run(job="j", kind="downsample", start=NOW, stop=NOW, windows=1, reason="r"):
        await http.request("GET", "query", kind="query")  # sent twice: a 401 first
        await http.request("GET", "query", kind="query")
    with window_run(job="j", kind="downsample", start=NOW, stop=NOW, windows=1, reason="r"):
        await http.request("GET", "ping", kind="ping")
    await http.aclose()
    first, again, second, other = (traceparent(r.headers) for r in transport.requests)
    assert first == again  # one request, sent again with fresh credentials
    assert first.trace_id == second.trace_id != other.trace_id
    assert first.parent_id != second.parent_id
    assert not any(p.sampled for p in (first, second, other))


async def test_a_request_outside_any_span_still_carries_a_traceparent() -> None:
    transport = MockTransport(lambda r: MockResponse(200, b"{}"))
    http = client(transport)
    await http.request("GET", "ping", kind="ping")
    await http.request("GET", "ping", kind="ping")
    one, two = (traceparent(r.headers) for r in transport.requests)
    assert one.trace_id != two.trace_id


async def test_a_client_span_keeps_the_path_never_the_query_or_credentials() -> None:
    transport = MockTransport(lambda r: MockResponse(400, b'{"error":"bad"}'))
    http = client(transport)
    with recording() as exporter:
        with pytest.raises(QueryError):
            await http.request(
                "POST", "query?db=x", kind="query", form={"q": "SELECT secret", "p": "pw"}
            )
        (span,) = exporter.get_finished_spans()
    header = traceparent(transport.requests[0].headers)
    assert (header.trace_id, header.parent_id) == (trace_id(span), span_id(span))
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.ERROR
    attributes = dict(span.attributes or {})
    assert attributes == {
        "http.request.method": "POST",
        "url.path": "/query",
        "server.address": "influx.example",
        "server.port": 8086,
        "tierflow.connection": "plant",
        "tierflow.request.kind": "query",
        "http.response.status_code": 400,
        "http.request.body.size": len(transport.requests[0].body),
        "http.response.body.size": len(b'{"error":"bad"}'),
        "error.type": "QueryError",
    }


# -- the runner ------------------------------------------------------------------------------------


async def test_each_window_run_is_a_trace_with_its_state_calls_and_outcome() -> None:
    runner, _, _ = make_runner(engine=FakeEngine(failures={3: QueryError("no such field")}))
    with recording() as exporter:
        runs = await runner.run_due(NOW)
        spans = exporter.get_finished_spans()
    window_runs = named(spans, "window_run")
    assert len(window_runs) == len(runs) >= 2
    assert len({trace_id(s) for s in window_runs}) == len(window_runs)
    by_start = {dict(s.attributes or {})["tierflow.window.start"]: s for s in window_runs}
    for run in runs:
        span = by_start[run.batch.range.start.isoformat()]
        attributes = dict(span.attributes or {})
        assert attributes["tierflow.status"] == run.status.value
        assert attributes["tierflow.attempt"] == max(run.attempts)
        assert attributes["tierflow.job"] == run.job
        assert attributes["tierflow.windows"] == run.batch.count
        expected = StatusCode.ERROR if run.error else StatusCode.UNSET
        assert span.status.status_code is expected
        calls = [s.name for s in spans if parent_id(s) == span_id(span)]
        assert calls.count("state.claim") == calls.count("state.finish") == 1
    assert any(run.error for run in runs)
    # Planning and status between runs start no traces of their own.
    roots = {s.name for s in spans if s.parent is None}
    assert roots == {"window_run"}


async def test_a_window_run_inside_a_recorded_span_links_to_it() -> None:
    with recording() as exporter:
        outer = tracer().start_span("outer")
        with (
            trace.use_span(outer, end_on_exit=True),
            window_run(job="j", kind="k", start=NOW, stop=NOW, windows=1, reason="r"),
        ):
            pass
        spans = exporter.get_finished_spans()
    (run,) = named(spans, "window_run")
    (outer_span,) = named(spans, "outer")
    assert run.parent is None
    assert trace_id(run) != trace_id(outer_span)
    assert [link.context.span_id for link in run.links] == [span_id(outer_span)]


# -- the daemon's endpoints ------------------------------------------------------------------------


async def test_the_daemon_honours_an_incoming_traceparent() -> None:
    runner, _, _ = make_runner()
    port = free_port()
    server = MetricsServer(runner, ServerConfig(listen=f"127.0.0.1:{port}"))
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with recording() as exporter:
        await server.start()
        try:
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{port}"
                headers = {"traceparent": incoming}
                async with session.get(f"{url}/metrics", headers=headers) as response:
                    assert response.status == 200
                async with session.get(f"{url}/nowhere", headers=headers) as response:
                    assert response.status == 404
                async with session.get(f"{url}/healthz") as response:
                    assert response.status == 200
        finally:
            await server.stop()
        spans = exporter.get_finished_spans()
    metrics, missing, health = (s for s in spans if s.kind is SpanKind.SERVER)
    for span in (metrics, missing):
        assert span.parent is not None
        assert span.parent.is_remote
        assert trace_id(span) == 0x0AF7651916CD43DD8448EB211C80319C
        assert parent_id(span) == 0xB7AD6B7169203331
    assert metrics.name == "GET /metrics"
    assert dict(metrics.attributes or {})["http.response.status_code"] == 200
    assert dict(missing.attributes or {})["http.response.status_code"] == 404
    assert health.parent is None  # no traceparent: a trace of its own
