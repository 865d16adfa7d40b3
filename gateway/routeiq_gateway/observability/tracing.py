"""Request spans: continue the client's W3C trace, and hand our span on to the upstream as `traceparent`."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()


def parent_context(traceparent: bytes | None, tracestate: bytes | None) -> Context | None:
    if traceparent is None:
        return None
    carrier = {"traceparent": traceparent.decode("latin-1")}
    if tracestate is not None:
        carrier["tracestate"] = tracestate.decode("latin-1")
    return _PROPAGATOR.extract(carrier)


def traceparent_of(span: Span) -> str | None:
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def get_tracer() -> trace.Tracer:
    return trace.get_tracer("routeiq.gateway")
