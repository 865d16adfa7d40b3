"""Admission: refuse at once (503 + Retry-After) rather than queue without bound, and refuse while draining."""

from __future__ import annotations

from routeiq_gateway.admission.inflight import InFlight
from routeiq_gateway.http.errors import GatewayError, retry_after_header


def admit(inflight: InFlight, limit: int, draining: bool) -> None:
    if draining:
        raise GatewayError(
            503,
            "The gateway is shutting down; retry on another instance.",
            code="draining",
            headers=retry_after_header(1),
        )
    if inflight.requests >= limit:
        raise GatewayError(
            503, "The gateway is at capacity; retry shortly.", code="overloaded", headers=retry_after_header(1)
        )
