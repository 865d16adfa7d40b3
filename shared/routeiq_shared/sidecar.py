"""What both sidecars share around their loop: settings from the environment, logging, the health server,
and a clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from .egress import EgressError, check_setting_url
from .health_server import HealthServer
from .jsonlog import startup_errors_logged
from .telemetry import setup_tracing


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


def env_number(env: Mapping[str, str], name: str, default: float) -> float:
    """A non-negative number from the environment; a bad value stops the agent with a message naming it."""
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise SystemExit(f"{name} must not be negative, got {raw!r}")
    return value


def env_url(env: Mapping[str, str], name: str, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """A URL setting, or None when unset. One that cannot work, or names a link-local or metadata address in any
    spelling, stops the agent with a message naming the variable (never a request to it)."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return check_setting_url(name, raw, schemes)
    except EgressError as exc:
        raise SystemExit(str(exc)) from None


def jittered(interval: float, jitter: float, rng: random.Random) -> float:
    """The poll interval ± `jitter` (a fraction), so a fleet's polls don't arrive in lockstep."""
    return max(0.05, interval * (1 + rng.uniform(-jitter, jitter)))


def run_agent(
    service: str,
    once: bool,
    run_once: Callable[[], Coroutine[Any, Any, int]],
    run_forever: Callable[[], Coroutine[Any, Any, None]],
) -> None:
    """Tracing around the agent's life; with `once`, exit with run_once's code."""
    with startup_errors_logged(service):
        provider = setup_tracing(service)
    try:
        if once:
            sys.exit(asyncio.run(run_once()))
        asyncio.run(run_forever())
    finally:
        provider.shutdown()
