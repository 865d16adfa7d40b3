"""Admission: refuse at once (503 + Retry-After) rather than queue without bound, and refuse while draining.

Two checks at two moments: draining before anything is read, capacity once the body has arrived. A request
counts against `max_in_flight` only when it is ready to work, so clients sending slowly cannot starve the rest
(their bodies have deadlines of their own, see http/limits.py).
"""

from __future__ import annotations

from routeiq_gateway.admission.inflight import InFlight
from routeiq_gateway.http.errors import GatewayError, retry_after_header


def refuse_if_draining(draining: bool) -> None:
    if draining:
        raise GatewayError(
            503,
            "The gateway is shutting down; retry on another instance.",
            code="draining",
            headers=retry_after_header(1),
        )


def admit(inflight: InFlight, limit: int, draining: bool) -> None:
    refuse_if_draining(draining)
    if inflight.requests >= limit:
        raise GatewayError(
            503, "The gateway is at capacity; retry shortly.", code="overloaded", headers=retry_after_header(1)
        )
