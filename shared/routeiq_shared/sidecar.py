"""What both sidecars share around their loop: settings from the environment, logging, the health server,
and a clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from .health_server import HealthServer


async def run_until_stopped(
    health: HealthServer, port: int, loop_body: Callable[[asyncio.Event], Awaitable[None]]
) -> None:
    """Serve health on `port` and run `loop_body(stop)` until SIGTERM/SIGINT sets `stop`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await health.start("0.0.0.0", port)
    try:
        await loop_body(stop)
    finally:
        await health.stop()
