"""What a sidecar knows about its object store: when it last answered a poll (staleness), and the store's circuit
breaker (breaker.py) that stops the agent polling a store that keeps failing until a cool-down has passed.

While the store is down the agent changes nothing on the volume: the gateway keeps serving the last good config
and model. The agent says how stale they may be: `store.staleness_seconds` in its health document,
`<prefix>_store_staleness_seconds` in its metrics, and `<run_dir>/<agent>.status.json` on the shared volume, which
the gateway reads for its own `/health/dependencies`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Gauge

from .atomic import atomic_write
from .breaker import BreakerMetrics, BreakerPolicy
from .sidecar import env_number

# StoreError reasons that say the store did not answer (not that an object is missing or wrong).
STORE_DOWN_REASONS = frozenset({"store_unavailable", "store_error"})


def policy_from_env(env: Mapping[str, str], prefix: str, interval: float) -> BreakerPolicy:
    """`<prefix>_BREAKER_FAILURES` (5, the seeds' default) and `<prefix>_BREAKER_COOLDOWN` (default: the poll
    interval, so a store that is back is seen at the next poll, as without a breaker; the seeds' 60 s would hold
    a recovered store off for up to a minute). While open, a poll is skipped until the cool-down is over, and the
    one that probes makes a single attempt (no retries)."""
    failures = int(env_number(env, f"{prefix}_BREAKER_FAILURES", 5))
    cooldown = env_number(env, f"{prefix}_BREAKER_COOLDOWN", interval)
    try:
        return BreakerPolicy(failures, cooldown)
    except ValueError as exc:
        raise SystemExit(f"{prefix}_BREAKER_FAILURES / {prefix}_BREAKER_COOLDOWN: {exc}") from None


class StoreHealth:
    def __init__(
        self,
        registry: CollectorRegistry,
        prefix: str,
        policy: BreakerPolicy,
        log: logging.Logger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.started_at = clock()
        self.last_ok_at: float | None = None
        self.breaker = BreakerMetrics(registry, prefix).breaker("s3", lambda: policy, log)
        Gauge(
            f"{prefix}_store_staleness_seconds",
            "Seconds since the object store last answered a poll (since start when it never has)",
            registry=registry,
        ).set_function(self.staleness)

    def allow(self) -> bool:
        return self.breaker.allow()

    def ok(self) -> None:
        self.last_ok_at = self.clock()
        self.breaker.success()

    def failed(self, reason: str) -> None:
        self.breaker.failure(reason)

    def staleness(self) -> float:
        return round(self.clock() - (self.last_ok_at or self.started_at), 3)

    def document(self) -> dict[str, Any]:
        return {
            "breaker": self.breaker.state.label,
            "last_ok_at": self.last_ok_at,
            "staleness_seconds": self.staleness(),
            "last_error": self.breaker.last_reason or None,
        }


def write_agent_status(run_dir: Path, agent: str, document: Mapping[str, Any]) -> None:
    """The agent's health document on the shared volume, for the gateway to read (best effort)."""
    # A volume the agent cannot write to is reported by its own sync; this file is only a courtesy.
    with contextlib.suppress(OSError):
        atomic_write(run_dir / f"{agent}.status.json", orjson.dumps({**document, "written_at": time.time()}))
