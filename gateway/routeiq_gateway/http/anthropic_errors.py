"""Errors in the shape Anthropic's API answers, for the /v1/messages ingress: the `anthropic` SDK reads
`{"type": "error", "error": {"type", "message"}}` to pick its exception class (its status decides the class, the
type is shown), and an in-band `event: error` in a stream."""

from __future__ import annotations

import orjson

from routeiq_gateway.http.asgi import Send, send_response
from routeiq_gateway.http.errors import GatewayError

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def anthropic_error_body(exc: GatewayError) -> bytes:
    error = {"type": _TYPES.get(exc.status, "api_error" if exc.status >= 500 else "invalid_request_error")}
    # Anthropic's shape has no `param`: the field's name is already in our messages ("'max_tokens' is required.").
    error["message"] = exc.message
    return orjson.dumps({"type": "error", "error": error})


async def send_anthropic_error(send: Send, exc: GatewayError) -> None:
    await send_response(send, exc.status, anthropic_error_body(exc), headers=exc.headers)


def anthropic_error_event(exc: GatewayError) -> bytes:
    return b"event: error\ndata: " + anthropic_error_body(exc) + b"\n\n"
