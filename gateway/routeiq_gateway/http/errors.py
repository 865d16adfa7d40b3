"""OpenAI-style errors. Every failure a client sees is one of these: a status, a type, a message, never a trace."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    431: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "service_unavailable",
    504: "timeout",
}


@dataclass(slots=True)
class GatewayError(Exception):
    status: int
    message: str
    code: str | None = None
    param: str | None = None
    headers: tuple[tuple[bytes, bytes], ...] = field(default_factory=tuple)
    # Upstream failures that another attempt may cure (timeouts, resets, 429, 5xx).
    retryable: bool = False

    def body(self) -> bytes:
        return error_body(self.status, self.message, self.code, self.param)

    def __str__(self) -> str:
        return f"{self.status} {self.code or ''}: {self.message}"


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
    err = {"message": message, "type": _TYPES.get(status, "api_error"), "param": param, "code": code}
    return orjson.dumps({"error": err})


def bad_request(message: str, param: str | None = None, status: int = 400) -> GatewayError:
    # 400, as OpenAI answers a missing or mistyped parameter (never 422): clients branch on it.
    return GatewayError(status, message, code="invalid_request", param=param)


def retry_after_header(seconds: int) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"retry-after", str(seconds).encode()),)
