"""OpenTelemetry: every span tierflow makes, the `traceparent` it sends, and export from env.

The core depends on `opentelemetry-api` alone. With only the API (or the SDK installed but no
exporter asked for) nothing is recorded or exported, yet every request to InfluxDB still
carries a W3C `traceparent`: the API's no-op tracer gives spans an invalid context (or its
parent's), so where a span comes back without one of its own, a non-recording span with fresh
random ids (sampled flag off) stands in. A window run is the root of its own trace; its engine
requests share that trace id, each with a span id of its own.

`configure_from_env` installs the SDK (the `otel` extra) when the standard `OTEL_*` variables
ask for export; a process that installed its own tracer provider keeps it.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TracerProvider,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tierflow._logging import log_event

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.typedefs import Middleware
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "TRACER_NAME",
    "configure_from_env",
    "current_span",
    "end_request",
    "finish_window_run",
    "provider_from_env",
    "request_span",
    "retry_event",
    "server_spans",
    "store_call",
    "trace_headers",
    "use_provider",
    "window_run",
]

TRACER_NAME = "tierflow"
#: Always W3C TraceContext, whatever `OTEL_PROPAGATORS` says: the issue promises a
#: `traceparent` on every request, and a proxy or InfluxDB's log can only follow that one.
_PROPAGATOR = TraceContextTextMapPropagator()
#: Follows the global provider once one is set (a ProxyTracer).
_GLOBAL = trace.get_tracer(TRACER_NAME)
_override: Tracer | None = None
# Ids for stand-in spans; a generator of our own, so a test seeding `random` repeats none, and
# re-seeded in a forked child, which would otherwise draw its parent's ids.
_IDS = random.Random()
os.register_at_fork(after_in_child=_IDS.seed)

P = ParamSpec("P")
S = TypeVar("S")
T = TypeVar("T")


def tracer() -> Tracer:
    return _override or _GLOBAL


@contextmanager
def use_provider(provider: TracerProvider) -> Iterator[None]:
    """Trace into `provider` instead of the global one while the block runs (tests, and
    programs that keep a provider of their own without making it global)."""
    global _override
    before, _override = _override, provider.get_tracer(TRACER_NAME)
    try:
        yield
    finally:
        _override = before


def current_span() -> Span:
    return trace.get_current_span()


def _stand_in(parent: SpanContext | None) -> NonRecordingSpan:
    """A span nobody records, with a fresh span id: in `parent`'s trace when it has one, else in
    a new trace, not sampled."""
    span_id = _IDS.getrandbits(64) or 1
    if parent is not None and parent.is_valid:
        context = SpanContext(
            parent.trace_id, span_id, False, parent.trace_flags, parent.trace_state
        )
    else:
        context = SpanContext(_IDS.getrandbits(128) or 1, span_id, False, TraceFlags(0))
    return NonRecordingSpan(context)


def _own(span: Span, parent: SpanContext | None) -> Span:
    """`span`, unless it has no context of its own (the API's no-op tracer hands back the
    parent's, or an invalid one): then a stand-in."""
    if span.is_recording():
        return span
    mine = span.get_span_context()
    if not mine.is_valid or (parent is not None and mine.span_id == parent.span_id):
        return _stand_in(parent)
    return span


# -- window runs -----------------------------------------------------------------------------


@contextmanager
def window_run(
    *,
    job: str,
    kind: str,
    start: datetime,
    stop: datetime,
    windows: int,
    reason: str,
) -> Iterator[Span]:
    """The span of one window run (a claimed batch): the root of a trace of its own, linked to
    the span current when it began (if any). Current while the block runs, so the run's engine
    requests and state calls are its children; a retry is an event on it. The caller sets
    `tierflow.attempt` and `tierflow.status` as they become known (`finish_window_run`)."""
    ambient = trace.get_current_span().get_span_context()
    span = tracer().start_span(
        "window_run",
        context=Context(),  # a new trace: different windows, different traces
        links=[Link(ambient)] if ambient.is_valid else None,
    )
    if span.is_recording():
        span.set_attributes(
            {
                "tierflow.job": job,
                "tierflow.job.kind": kind,
                "tierflow.window.start": start.isoformat(),
                "tierflow.window.stop": stop.isoformat(),
                "tierflow.windows": windows,
                "tierflow.reason": reason,
            }
        )
    span = _own(span, None)
    with trace.use_span(span, end_on_exit=True):
        yield span


def finish_window_run(
    span: Span, *, status: str, attempt: int | None, error: str | None = None
) -> None:
    """Record a window run's outcome on its span."""
    if not span.is_recording():
        return
    span.set_attribute("tierflow.status", status)
    if attempt is not None:
        span.set_attribute("tierflow.attempt", attempt)
    if error:
        span.set_status(Status(StatusCode.ERROR, error))


# -- engine requests --------------------------------------------------------------------------


def request_span(
    method: str, path: str, *, connection: str, kind: str, host: str | None, port: int | None
) -> Span:
    """A client span for one request to a server, a child of the current span (not made
    current: the caller ends it, `end_request`). Only the path is kept, never the query
    string (InfluxQL text, 1.x `u`/`p`) nor any header."""
    parent = trace.get_current_span().get_span_context()
    span = tracer().start_span(f"{method} {path}", kind=SpanKind.CLIENT)
    if span.is_recording():
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.path": path,
            "tierflow.connection": connection,
            "tierflow.request.kind": kind,
        }
        if host is not None:
            attributes["server.address"] = host
        if port is not None:
            attributes["server.port"] = port
        span.set_attributes(attributes)
    return _own(span, parent)


def end_request(
    span: Span, *, status: int | None, sent: int, received: int, error: BaseException | None
) -> None:
    """End a request's span with what came of it (the error by its class only: messages
    may quote the server, and the span outlives the scrubbing rules of a log line)."""
    if span.is_recording():
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        span.set_attribute("http.request.body.size", sent)
        span.set_attribute("http.response.body.size", received)
        if error is not None:
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()


def trace_headers(span: Span) -> dict[str, str]:
    """`traceparent` (and `tracestate`, if any) naming `span`."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def retry_event(
    *, connection: str, attempt: int, delay: float, error: BaseException | None
) -> None:
    """A retry, as an event on the current span (the window run's)."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes: dict[str, str | int | float] = {
        "tierflow.connection": connection,
        "tierflow.retry.attempt": attempt,
        "tierflow.retry.delay_s": round(delay, 3),
    }
    if error is not None:
        attributes["error.type"] = type(error).__name__
        status = getattr(error, "status", None)
        if isinstance(status, int):
            attributes["http.response.status_code"] = status
    span.add_event("retry", attributes)


# -- state store calls ------------------------------------------------------------------------


def store_call(
    operation: str,
) -> Callable[
    [Callable[Concatenate[S, P], Awaitable[T]]], Callable[Concatenate[S, P], Awaitable[T]]
]:
    """Wrap a state store method: one span per call (one transaction), named
    `state.<operation>`, made only inside a recorded span (a window run), so planning, status
    and heartbeats of an idle daemon start no traces and cost one check."""

    def wrap(
        call: Callable[Concatenate[S, P], Awaitable[T]],
    ) -> Callable[Concatenate[S, P], Awaitable[T]]:
        name = f"state.{operation}"

        @functools.wraps(call)
        async def traced(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
            if not trace.get_current_span().is_recording():
                return await call(self, *args, **kwargs)
            span = tracer().start_span(name)
            span.set_attributes(
                {"db.operation.name": operation, "tierflow.state.store": type(self).__name__}
            )
            with trace.use_span(span, end_on_exit=True):
                return await call(self, *args, **kwargs)

        return traced

    return wrap


# -- the daemon's endpoints ---------------------------------------------------------------------


def server_spans() -> Middleware:
    """aiohttp middleware: each request handled in a server span whose parent is the
    request's own `traceparent`, when it carries one. (A factory: the server side of aiohttp
    is imported only by a daemon that serves.)"""
    from aiohttp import web

    return web.middleware(_server_span)


async def _server_span(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    from aiohttp import web

    parent = _PROPAGATOR.extract(request.headers)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else None
    span = tracer().start_span(
        f"{request.method} {route}" if route else request.method,
        context=parent,
        kind=SpanKind.SERVER,
    )
    if span.is_recording():
        span.set_attributes({"http.request.method": request.method, "url.path": request.path})
        if route:
            span.set_attribute("http.route", route)
    span = _own(span, trace.get_current_span(parent).get_span_context())
    with trace.use_span(span, end_on_exit=True, record_exception=False):
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _answered(span, exc.status)
            raise
        _answered(span, response.status)
        return response


def _answered(span: Span, status: int) -> None:
    if span.is_recording():
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))


# -- export, from the environment ---------------------------------------------------------------


def configure_from_env() -> bool:
    """Install the SDK as the global tracer provider when the `OTEL_*` variables ask for
    export (see `provider_from_env`) and no provider is installed yet; True if it was."""
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return False  # the program made its own choice
    provider = provider_from_env()
    if provider is None:
        return False
    trace.set_tracer_provider(provider)
    return True


def provider_from_env() -> SdkTracerProvider | None:
    """An SDK tracer provider exporting as `OTEL_TRACES_EXPORTER` (`otlp`, `console`, `none`;
    `otlp` when only `OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT` is set) says, or None: export not
    asked for, `OTEL_SDK_DISABLED=true`, or the SDK not installed. Sampler, batching, endpoint,
    headers and resource come from their own `OTEL_*` variables, read by the SDK. A value it
    cannot use is logged and ignored, as the OpenTelemetry specification asks of SDKs."""
    environ = os.environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n]
    endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not names and any(environ.get(name) for name in endpoint):
        names = ["otlp"]
    names = [n for n in names if n != "none"]
    if not names:
        return None
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        _not_exported("the OpenTelemetry SDK is not installed: pip install 'tierflow[otel]'")
        return None
    exporters = [e for e in (_exporter(name) for name in names) if e is not None]
    if not exporters:
        return None
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: TRACER_NAME}))
    provider = SdkProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _exporter(name: str) -> SpanExporter | None:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # stderr: stdout is for what a command prints (`--json` output among it).
        return ConsoleSpanExporter(out=sys.stderr)
    if name != "otlp":
        _not_exported(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (otlp, console, none)")
        return None
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    try:
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found, unused-ignore]
                OTLPSpanExporter as GrpcExporter,
            )

            exporter: SpanExporter = GrpcExporter()
            return exporter
    except ImportError:
        package = "opentelemetry-exporter-otlp-proto-" + ("grpc" if protocol == "grpc" else "http")
        _not_exported(f"OTLP over {protocol} needs {package}: pip install {package}")
        return None
    _not_exported(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} unsupported (http/protobuf, grpc)")
    return None


def _not_exported(why: str) -> None:
    log_event("tracing_not_exported", level=logging.WARNING, reason=why)
