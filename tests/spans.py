"""Spans as tests see them: the SDK's in-memory exporter behind a provider of the test's own
(`tierflow._tracing.use_provider`), so no global provider is ever set by a test; and the W3C
`traceparent` headers a recording proxy saw, parsed; and a stand-in OTLP/HTTP receiver for
what an exporter sends over the wire."""

from __future__ import annotations

import gzip
import http.server
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tierflow._tracing import use_provider

# version 00, trace id, parent (span) id, flags (https://www.w3.org/TR/trace-context/#traceparent-header)
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@dataclass(frozen=True)
class TraceParent:
    trace_id: int
    parent_id: int
    sampled: bool


def traceparent(headers: Mapping[str, str]) -> TraceParent:
    """The request's `traceparent`, checked to be one: fails on a missing or malformed header,
    or on the all-zero ids the specification declares invalid."""
    values = [v for k, v in headers.items() if k.lower() == "traceparent"]
    assert len(values) == 1, f"not exactly one traceparent header in {sorted(headers)}"
    found = _TRACEPARENT.fullmatch(values[0])
    assert found is not None, f"malformed traceparent {values[0]!r}"
    trace_id, parent_id, flags = (int(part, 16) for part in found.groups())
    assert trace_id != 0, f"invalid (all-zero) trace id in {values[0]!r}"
    assert parent_id != 0, f"invalid (all-zero) parent id in {values[0]!r}"
    return TraceParent(trace_id, parent_id, bool(flags & 1))


@contextmanager
def recording() -> Iterator[InMemorySpanExporter]:
    """Every span tierflow ends while the block runs, in the returned exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with use_provider(provider):
        yield exporter
    provider.shutdown()


def named(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


@dataclass
class Received:
    """What an OTLP/HTTP receiver was sent: each POST's path, content type and (un-gzipped)
    body."""

    url: str
    posts: list[tuple[str, str, bytes]] = field(default_factory=list)

    def requests(self) -> list[ExportTraceServiceRequest]:
        decoded = []
        for _, _, body in self.posts:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            decoded.append(request)
        return decoded

    def spans(self) -> list[Any]:
        """Every span sent (protobuf `Span`s: `name`, `trace_id`/`span_id` bytes, …)."""
        return [
            span
            for request in self.requests()
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]


@contextmanager
def otlp_receiver() -> Iterator[Received]:
    """A stand-in OTLP/HTTP collector on a free local port, answering 200 to every POST."""
    received = Received("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            received.posts.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
