"""JSON log lines, one per record, carrying the current trace_id so a log line leads to its trace."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson
from opentelemetry import trace

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        ctx = trace.get_current_span().get_span_context()
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "service": self._service,
            "message": record.getMessage(),
            "trace_id": format(ctx.trace_id, "032x") if ctx.is_valid else None,
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def setup_logging(service: str, level: str = "INFO") -> None:
    """Route every logger (ours, uvicorn's, litellm's) through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


@contextlib.contextmanager
def startup_errors_logged(service: str) -> Iterator[None]:
    """A setting that stops a service (`SystemExit("NAME: why")`) is told as one JSON line, and the exit code is 2:
    a pod's log stays parseable, and the reason reaches the log pipeline like any other."""
    try:
        yield
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        logging.getLogger(service).error(
            "Cannot start: %s", exc.code, extra={"event": "startup_failed", "reason": exc.code}
        )
        raise SystemExit(2) from None
