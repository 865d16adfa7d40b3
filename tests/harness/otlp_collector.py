"""A tiny OTLP/HTTP traces receiver for assertions: POST /v1/traces (protobuf), spans kept in memory.

It runs in a thread of the test process (ThreadingHTTPServer) because only the test reads what it stores;
services under test reach it over loopback through the standard OTEL_EXPORTER_OTLP_* variables.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


@dataclass(frozen=True)
class SpanRecord:
    name: str
    trace_id: str  # 32 hex chars
    span_id: str  # 16 hex chars
    parent_span_id: str | None
    kind: str  # "SERVER", "CLIENT", "INTERNAL", ...
    status: str  # "UNSET", "OK", "ERROR"
    status_message: str
    attributes: dict[str, Any]
    resource_attributes: dict[str, Any]
    scope_name: str
    start_ns: int
    end_ns: int
    events: list[str] = field(default_factory=list)


def _any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in items if isinstance(kv, KeyValue)}


def decode_spans(request: ExportTraceServiceRequest) -> list[SpanRecord]:
    records: list[SpanRecord] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                records.append(
                    SpanRecord(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        status=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                        status_message=span.status.message,
                        attributes=_attributes(span.attributes),
                        resource_attributes=resource,
                        scope_name=scope_spans.scope.name,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        events=[e.name for e in span.events],
                    )
                )
    return records


class OtlpCollector:
    """Start with `start()`, point a service at `endpoint` (OTEL_EXPORTER_OTLP_ENDPOINT) or
    `traces_endpoint` (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), then assert on `spans()`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._lock = threading.Lock()
        self._spans: list[SpanRecord] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""
        self.traces_endpoint = ""

    def start(self) -> OtlpCollector:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/v1/traces":
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if "protobuf" not in (self.headers.get("Content-Type") or ""):
                    # OTLP/JSON encodes ids as hex, not protobuf-JSON base64; no exporter we use sends it.
                    self.send_error(415, "only application/x-protobuf is supported")
                    return
                try:
                    request = _parse_export(body, self.headers)
                except Exception as exc:  # noqa: BLE001 - any decode failure is the client's error here
                    self.send_error(400, f"cannot decode OTLP request: {exc}")
                    return
                collector._add(decode_spans(request))
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer((self._host, 0), Handler)
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.endpoint = f"http://{self._host}:{port}"
        self.traces_endpoint = f"{self.endpoint}/v1/traces"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="otlp-collector", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def env(self, service_name: str | None = None) -> dict[str, str]:
        """OTEL_* variables that make a child process export traces here, promptly."""
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": self.traces_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms; the default 5 s would slow every trace test
        }
        if service_name:
            env["OTEL_SERVICE_NAME"] = service_name
        return env

    def _add(self, spans: list[SpanRecord]) -> None:
        with self._lock:
            self._spans.extend(spans)

    def spans(self, name: str | None = None) -> list[SpanRecord]:
        with self._lock:
            return [s for s in self._spans if name is None or s.name == name]

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    def wait_for_spans(
        self,
        predicate: Callable[[list[SpanRecord]], bool] | None = None,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[SpanRecord]:
        """Poll until predicate(spans) is true (default: at least `count` spans); return the spans."""
        check = predicate or (lambda spans: len(spans) >= count)
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if check(spans):
                return spans
            if time.monotonic() >= deadline:
                names = [s.name for s in spans]
                raise TimeoutError(f"OTLP collector: condition not met after {timeout}s; spans so far: {names}")
            time.sleep(0.02)

    def __enter__(self) -> OtlpCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _parse_export(body: bytes, headers: Any) -> ExportTraceServiceRequest:
    encoding = (headers.get("Content-Encoding") or "").lower()
    if encoding == "gzip":
        body = gzip.decompress(body)
    elif encoding == "deflate":
        body = zlib.decompress(body)
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request
