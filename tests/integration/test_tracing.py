"""Tracing against a real influxd: every request that reaches a recording proxy in front of it
carries a W3C `traceparent`, one trace per window run, and (with the SDK's in-memory exporter)
the spans those headers name.

The oracles are what the proxy saw on the wire (headers, paths, the time range of each
`SELECT … INTO`, the faults it injected), the state file's own history (run ids), and the
tiers as `ThrowawayInfluxd`'s client reads them back.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

import tierflow
from tests.integration._helpers import (
    AGGREGATES,
    EVERY,
    archive_config,
    assert_all_succeeded,
    assert_tier,
    downsamples,
    expected_tier,
    grid,
    ns,
    telemetry,
    time_range,
    write_points,
)
from tests.integration._support import read_state, run_tierflow
from tests.integration.conftest import WARM_RP, config_tables, read_tier, write_toml
from tests.proxy import Exchange, Fault, FaultRule, Proxy, ThreadedProxy, times
from tests.spans import (
    named,
    otlp_receiver,
    parent_id,
    recording,
    span_id,
    trace_id,
    traceparent,
)
from tierflow.testing import ThrowawayInfluxd

WINDOWS = 6
JOB = "down"


def downsample_config(directory: Path, url: str, db: str, start: datetime) -> Path:
    """One 5-minute downsample job, each window its own batch (so its own window run)."""
    job = {
        "measurements": ["sensor"],
        "every": "5m",
        "catchup_chunk": "5m",
        "start": start,
        "aggregates": AGGREGATES,
    }
    tables = config_tables(url=url, db=db, state=directory / "state.db", jobs={JOB: job})
    return write_toml(directory, tables)


def first_downsample_unavailable_once() -> FaultRule:
    return times(1, Fault.unavailable(retry_after=None), lambda e: bool(downsamples([e])))


async def run_downsample(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime
) -> tuple[list[Exchange], list[tierflow.BatchRun]]:
    """Six windows through a proxy that answers the first `SELECT … INTO` with a 503; the
    tier is checked against aggregates computed here (tracing changes nothing of the work)."""
    points = telemetry(5, start)
    write_points(influxd, db, points)
    async with Proxy(influxd.url, fault=first_downsample_unavailable_once()) as proxy:
        config = downsample_config(tmp_path, proxy.url, db, start)
        async with tierflow.open(config) as tf:
            runs = await tf.run_once(now=start + WINDOWS * EVERY)
    assert_all_succeeded(runs)
    assert len(runs) == WINDOWS
    assert_tier(read_tier(influxd, db, WARM_RP), expected_tier(points, grid(start, EVERY, WINDOWS)))
    return proxy.exchanges, runs


def faulted_and_retry(exchanges: list[Exchange]) -> tuple[Exchange, Exchange]:
    queries = downsamples(exchanges)
    faulted = [e for e in queries if e.fault is not None]
    assert len(faulted) == 1
    retry = queries[queries.index(faulted[0]) + 1]
    assert retry.q == faulted[0].q
    assert retry.status == 200
    return faulted[0], retry


async def test_without_an_sdk_every_request_still_carries_a_traceparent_per_window(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime
) -> None:
    # The core install: only the API, no provider configured (no test ever sets a global one).
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider), (
        "a global tracer provider is set (OTEL_* in the environment of an in-process CLI run?)"
    )
    exchanges, _ = await run_downsample(influxd, db, tmp_path, start)

    assert exchanges
    parents = {e.id: traceparent(e.headers) for e in exchanges}  # every request: one, valid
    assert not any(p.sampled for p in parents.values())  # nobody records: say so downstream
    # Each request names a span of its own, even without anyone recording them.
    assert len({p.parent_id for p in parents.values()}) == len(exchanges)

    by_window: dict[tuple[datetime, datetime], set[int]] = defaultdict(set)
    for exchange in downsamples(exchanges):
        assert exchange.q is not None
        by_window[time_range(exchange.q)].add(parents[exchange.id].trace_id)
    assert sorted(by_window) == grid(start, EVERY, WINDOWS)
    assert all(len(ids) == 1 for ids in by_window.values())  # a retry stays in its trace
    assert len({min(ids) for ids in by_window.values()}) == WINDOWS  # one trace per window
    faulted, retry = faulted_and_retry(exchanges)
    assert parents[faulted.id].trace_id == parents[retry.id].trace_id


async def test_window_runs_are_traces_whose_spans_the_headers_name(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime
) -> None:
    with recording() as exporter:
        exchanges, runs = await run_downsample(influxd, db, tmp_path, start)
        spans = exporter.get_finished_spans()

    window_runs = named(spans, "window_run")
    assert len(window_runs) == WINDOWS
    by_trace = {trace_id(run): run for run in window_runs}
    assert len(by_trace) == WINDOWS  # different windows, different traces
    assert all(run.parent is None for run in window_runs)
    clients = {span_id(s): s for s in spans if s.kind is SpanKind.CLIENT}

    # Every request names its own client span, which says what the proxy saw.
    parents = {e.id: traceparent(e.headers) for e in exchanges}
    for exchange in exchanges:
        header = parents[exchange.id]
        client = clients[header.parent_id]
        assert trace_id(client) == header.trace_id
        assert header.sampled
        attributes = dict(client.attributes or {})
        assert attributes["url.path"] == exchange.path
        assert attributes["http.request.method"] == exchange.method
        assert attributes["http.response.status_code"] == exchange.status
        assert attributes["tierflow.connection"] == "plant"
        # Never the query string (InfluxQL, 1.x credentials) nor a header.
        assert not any("q=" in str(v) or "SELECT" in str(v) for v in attributes.values())
        run = by_trace.get(header.trace_id)
        if run is not None:
            assert parent_id(client) == span_id(run)
        else:
            assert client.parent is None  # a request outside any window run (field checks)

    # Each `SELECT … INTO` belongs to the run of its own window.
    history = {a.start: a for a in read_state(tmp_path / "state.db", JOB)[2]}
    for exchange in downsamples(exchanges):
        assert exchange.q is not None
        low, high = time_range(exchange.q)
        run = by_trace[parents[exchange.id].trace_id]
        attributes = dict(run.attributes or {})
        assert attributes["tierflow.window.start"] == low.isoformat()
        assert attributes["tierflow.window.stop"] == high.isoformat()
        assert attributes["tierflow.job"] == JOB
        assert attributes["tierflow.job.kind"] == "downsample"
        assert attributes["tierflow.windows"] == 1
        assert attributes["tierflow.status"] == "succeeded"
        assert attributes["tierflow.attempt"] == 1
        assert attributes["tierflow.run_id"] == history[low].run_id

    # State calls of each run are its children, one span per call.
    for run in window_runs:
        children = [s for s in spans if parent_id(s) == span_id(run)]
        assert all(trace_id(child) == trace_id(run) for child in children)
        calls = [s.name for s in children if s.name.startswith("state.")]
        assert calls.count("state.claim") == 1
        assert calls.count("state.finish") == 1

    # The 503 is an event on its window's run; its retry went out under the same trace.
    faulted, retry = faulted_and_retry(exchanges)
    assert parents[faulted.id].trace_id == parents[retry.id].trace_id
    assert parents[faulted.id].parent_id != parents[retry.id].parent_id
    retried = by_trace[parents[faulted.id].trace_id]
    for run in window_runs:
        events = [e for e in run.events if e.name == "retry"]
        if run is not retried:
            assert events == []
            continue
        assert len(events) == 1
        event = dict(events[0].attributes or {})
        assert event["tierflow.retry.attempt"] == 1
        assert event["http.response.status_code"] == 503
        assert event["tierflow.connection"] == "plant"
        assert "error.type" in event
    assert dict(clients[parents[faulted.id].parent_id].attributes or {})["error.type"]
    assert len(runs) == WINDOWS


async def test_archive_and_restore_requests_carry_a_traceparent(
    influxd: ThrowawayInfluxd, db: str, tmp_path: Path, start: datetime
) -> None:
    points = telemetry(9, start)
    write_points(influxd, db, points)
    hours = 2
    stop = start + timedelta(hours=hours)
    with recording() as exporter:
        async with Proxy(influxd.url) as proxy:
            config = archive_config(
                tmp_path,
                proxy.url,
                f"{db}/autogen",
                ["sensor"],
                every="1h",
                start=start,
                restored=f"{db}/{WARM_RP}",
            )
            # The proxy's aiohttp server un-gzips a request body as it reads it, and would
            # forward it still labelled gzip: the restore's writes go uncompressed.
            text = config.read_text(encoding="utf-8")
            config.write_text(
                text.replace("[connections.plant]\n", "[connections.plant]\ngzip = false\n"),
                encoding="utf-8",
            )
            async with tierflow.open(config) as tf:
                runs = await tf.run_once(now=stop)
                archived = proxy.exchanges
                await tf.restore("cold", start, stop, into="restored")
            restoring = proxy.exchanges[len(archived) :]
        spans = exporter.get_finished_spans()

    assert_all_succeeded(runs)
    # The restore wrote back every point of the range (read back by the test's own client).
    hot = read_tier(influxd, db, "autogen")
    assert read_tier(influxd, db, WARM_RP) == {
        key: fields for key, fields in hot.items() if ns(start) <= key[1] < ns(stop)
    }

    window_runs = named(spans, "window_run")
    assert len(window_runs) == hours
    assert {dict(r.attributes or {})["tierflow.job.kind"] for r in window_runs} == {"archive"}
    runs_by_trace = {trace_id(run): run for run in window_runs}
    assert len(runs_by_trace) == hours
    clients = {span_id(s): s for s in spans if s.kind is SpanKind.CLIENT}
    per_run: dict[int, int] = defaultdict(int)
    for exchange in archived:
        header = traceparent(exchange.headers)
        client: ReadableSpan = clients[header.parent_id]
        assert trace_id(client) == header.trace_id
        if header.trace_id in runs_by_trace:
            per_run[header.trace_id] += 1
    assert set(per_run) == set(runs_by_trace)  # each archive window read under its own trace
    assert any(e.path == "/write" for e in restoring)
    for exchange in restoring:
        header = traceparent(exchange.headers)
        assert trace_id(clients[header.parent_id]) == header.trace_id
        assert header.trace_id not in runs_by_trace


def test_run_once_exports_over_otlp_the_spans_its_requests_name(
    influxd: ThrowawayInfluxd,
    db: str,
    tmp_path: Path,
    start: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The CLI as installed: OTEL_* set, spans flushed to a receiver as the process exits.
    write_points(influxd, db, telemetry(7, start))
    with otlp_receiver() as received, ThreadedProxy(influxd.url) as threaded:
        config = downsample_config(tmp_path, threaded.url, db, start)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", received.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "tierflow-under-test")
        now = (start + WINDOWS * EVERY).isoformat()
        ran = run_tierflow("run-once", "--now", now, "--json", "-c", config)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        exchanges = threaded.proxy.exchanges

    (resource,) = {
        a.value.string_value
        for request in received.requests()
        for spans in request.resource_spans
        for a in spans.resource.attributes
        if a.key == "service.name"
    }
    assert resource == "tierflow-under-test"
    spans = received.spans()
    window_runs = [s for s in spans if s.name == "window_run"]
    assert len(window_runs) == WINDOWS
    assert len({s.trace_id for s in window_runs}) == WINDOWS
    exported = {int.from_bytes(s.span_id, "big"): s for s in spans}
    run_traces = {int.from_bytes(s.trace_id, "big") for s in window_runs}
    assert exchanges
    for exchange in exchanges:
        header = traceparent(exchange.headers)
        assert header.sampled
        span = exported[header.parent_id]  # the request's own span reached the collector
        assert int.from_bytes(span.trace_id, "big") == header.trace_id
    for exchange in downsamples(exchanges):
        assert traceparent(exchange.headers).trace_id in run_traces
