"""`routeiq-config-sync`: the sidecar's entry point.

Its sync loop is not built yet; until it is, the agent starts, serves its health endpoint on HEALTH_PORT
(default 8081) and says plainly that it has never synced, so readiness stays 503 and nobody mistakes it for
a working agent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from routeiq_shared.health_server import HealthServer
from routeiq_shared.jsonlog import setup_logging
from routeiq_shared.sidecar import run_until_stopped

SERVICE = "routeiq-config-sync"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=SERVICE, description=__doc__)
    parser.add_argument("--health-port", type=int, default=int(os.environ.get("HEALTH_PORT", "8081")))
    args = parser.parse_args(argv)
    setup_logging(SERVICE, os.environ.get("LOG_LEVEL", "INFO"))
    started = time.time()
    registry = CollectorRegistry()
    Gauge("routeiq_config_sync_start_timestamp_seconds", "When the agent started", registry=registry).set(started)
    source = os.environ.get("CONFIG_SOURCE")

    def status() -> dict[str, Any]:
        return {
            "status": "not_synced",
            "source": source,
            "started_at": started,
            "last_success_at": None,
            "last_error": "sync loop not implemented in this build",
        }

    health = HealthServer("/health/config-sync", status, lambda: False, registry)

    async def idle(stop: asyncio.Event) -> None:
        await stop.wait()

    asyncio.run(run_until_stopped(health, args.health_port, idle))
