"""Spans as tests see them: the SDK's in-memory exporter behind a provider of the test's own
(`tierflow._tracing.use_provider`), so no global provider is ever set by a test; and the W3C
`traceparent` headers a recording proxy saw, parsed."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

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
