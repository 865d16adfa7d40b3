"""SIGTERM: stop taking work, let what is in flight finish (up to the grace timeout), then stop the server.

While draining, readiness answers 503 (so Kubernetes stops routing here) and new requests get 503 at once,
but the listener stays open: a request that arrives during drain gets an answer, not a refused connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from routeiq_gateway.app import GatewayApp

log = logging.getLogger("routeiq.gateway.drain")


async def drain(app: GatewayApp, grace_seconds: float, stop_server: Callable[[], None]) -> None:
    if app.draining:
        return
    app.draining = True
    start = time.monotonic()
    in_flight, streams = app.inflight.requests, app.inflight.streams
    log.info(
        "Draining",
        extra={
            "event": "drain_start",
            "in_flight": in_flight,
            "active_streams": streams,
            "grace_seconds": grace_seconds,
        },
    )
    finished = await app.inflight.wait_idle(grace_seconds)
    log.info(
        "Graceful shutdown",
        extra={
            "event": "shutdown",
            "clean": finished,
            "in_flight_at_start": in_flight,
            "streams_at_start": streams,
            "abandoned": app.inflight.requests,
            "seconds": round(time.monotonic() - start, 3),
            "version": app.ref.current.version,
        },
    )
    stop_server()
