"""Who may call /v1/*: the master key, as `Authorization: Bearer` or `x-api-key`, compared in constant time."""

from __future__ import annotations

import hmac

from routeiq_gateway.http.asgi import Scope
from routeiq_gateway.http.errors import GatewayError

_UNAUTHORIZED = "Missing or invalid API key. Send 'Authorization: Bearer <key>'."


def presented_key(authorization: bytes | None, x_api_key: bytes | None) -> bytes | None:
    if authorization is not None:
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() == b"bearer" and token:
            return token.strip()
    return x_api_key


def check_key(expected: bytes | None, authorization: bytes | None, x_api_key: bytes | None) -> bytes | None:
    """Raise 401 unless the presented key matches; return the presented key (routing keys A/B arms on it).
    No master key configured means the API is open."""
    key = presented_key(authorization, x_api_key)
    if expected is not None and (key is None or not hmac.compare_digest(key, expected)):
        raise GatewayError(401, _UNAUTHORIZED, code="invalid_api_key")
    return key


def matches_any(allowed: tuple[bytes, ...], key: bytes) -> bool:
    """Every key is compared, so timing reveals neither which matched nor how many there are to try."""
    matched = False
    for candidate in allowed:
        matched |= hmac.compare_digest(key, candidate)
    return matched


def auth_headers(scope: Scope) -> tuple[bytes | None, bytes | None]:
    """`Authorization` and `x-api-key` from ASGI headers (names already lower-case)."""
    authorization = x_api_key = None
    for key, value in scope["headers"]:
        if key == b"authorization":
            authorization = value
        elif key == b"x-api-key":
            x_api_key = value
    return authorization, x_api_key
