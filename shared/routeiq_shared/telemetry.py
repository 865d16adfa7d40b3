"""OpenTelemetry set-up from the standard OTEL_* variables.

Exporter choice follows OTEL_TRACES_EXPORTER (otlp, console, none). With no exporter and no OTLP endpoint set,
nothing would read the spans, so none is recorded: span contexts (trace ids) are still made, so trace ids reach
logs and upstream traceparent headers, at a fraction of a recording span's cost.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from .egress import EgressError, check_setting_url


def _exporter(env: Mapping[str, str]) -> SpanExporter | None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        if env.get(name, "").strip():
            try:
                check_setting_url(name, env[name].strip())
            except EgressError as exc:  # spans would go to a metadata address: refuse to start, say why
                raise SystemExit(str(exc)) from None
    choice = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    has_endpoint = bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    if choice == "none" or (not choice and not has_endpoint):
        return None
    if choice == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def setup_tracing(default_service: str, env: Mapping[str, str] | None = None) -> TracerProvider:
    """Install a global TracerProvider; OTEL_SERVICE_NAME overrides the default service name."""
    env = os.environ if env is None else env
    service = env.get("OTEL_SERVICE_NAME") or default_service
    exporter = _exporter(env)
    # None lets the SDK honour OTEL_TRACES_SAMPLER as usual.
    sampler = None if exporter is not None else ALWAYS_OFF
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}), sampler=sampler)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider
