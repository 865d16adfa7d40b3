"""Runtime state of deployments: what the process has measured, which must outlive a config reload.

GatewayState is rebuilt whole on every reload; latencies, in-flight counts and failure counts are not config, so
they live here, owned by the process and keyed by the stable deployment id (deployments.deployment_id). A reload
keeps the measurements of every deployment it did not change. All updates happen on the event loop thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

EWMA_ALPHA = 0.3  # weight of the newest sample: a deployment that slows down shows within a few requests
# LiteLLM's defaults (router_settings.allowed_fails / cooldown_time): a deployment that fails more than
# ALLOWED_FAILS times within a minute sits out COOLDOWN_SECONDS.
ALLOWED_FAILS = 3
COOLDOWN_SECONDS = 5.0
COOLDOWN_FAILURES = ALLOWED_FAILS + 1  # the failure that starts a cooldown


@dataclass(slots=True)
class DeploymentStats:
    latency: float | None = None  # EWMA seconds of whole non-streamed calls; None = not measured yet
    ttft: float | None = None  # EWMA seconds to the first streamed chunk
    in_flight: int = 0
    failures: int = 0  # in fail_minute
    fail_minute: int = -1
    cooldown_until: float = 0.0
    minute: int = -1  # the wall-clock minute the usage counts below belong to
    requests: int = 0
    tokens: int = 0


def _ewma(old: float | None, sample: float) -> float:
    return sample if old is None else old + EWMA_ALPHA * (sample - old)


class RuntimeState:
    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.stats: dict[str, DeploymentStats] = {}
        self.clock = clock
        self.wall = wall

    def get(self, dep_id: str) -> DeploymentStats:
        stats = self.stats.get(dep_id)
        if stats is None:
            stats = self.stats[dep_id] = DeploymentStats()
        return stats

    def usage(self, dep_id: str) -> DeploymentStats:
        """The stats with the usage counts of the current minute (reset when a new minute has begun)."""
        stats = self.get(dep_id)
        minute = int(self.wall() // 60)
        if stats.minute != minute:
            stats.minute, stats.requests, stats.tokens = minute, 0, 0
        return stats

    def started(self, dep_id: str) -> None:
        stats = self.usage(dep_id)
        stats.in_flight += 1
        stats.requests += 1

    def finished(self, dep_id: str) -> None:
        stats = self.get(dep_id)
        stats.in_flight = max(0, stats.in_flight - 1)

    def succeeded(self, dep_id: str, seconds: float, *, stream: bool) -> None:
        stats = self.get(dep_id)
        if stream:
            stats.ttft = _ewma(stats.ttft, seconds)
        else:
            stats.latency = _ewma(stats.latency, seconds)

    def failed(self, dep_id: str, allowed_fails: int = ALLOWED_FAILS, cooldown: float = COOLDOWN_SECONDS) -> None:
        """Count a failed call; past `allowed_fails` in the current minute the deployment cools down `cooldown`
        seconds (router_settings.allowed_fails / cooldown_time, as LiteLLM counts them)."""
        stats = self.get(dep_id)
        minute = int(self.wall() // 60)
        if stats.fail_minute != minute:
            stats.fail_minute, stats.failures = minute, 0
        stats.failures += 1
        if stats.failures > allowed_fails and cooldown > 0:
            stats.cooldown_until = self.clock() + cooldown

    def add_tokens(self, dep_id: str, tokens: int) -> None:
        self.usage(dep_id).tokens += tokens

    def cooling(self, dep_id: str) -> bool:
        stats = self.stats.get(dep_id)
        return stats is not None and stats.cooldown_until > self.clock()

    def forget_except(self, keep: set[str]) -> None:
        """Drop deployments no longer configured, so removed ones do not accumulate across reloads."""
        for dep_id in [d for d in self.stats if d not in keep]:
            del self.stats[dep_id]
