"""Runtime state of deployments: what the process has measured, which must outlive a config reload.

GatewayState is rebuilt whole on every reload; latencies, in-flight counts and failure counts are not config, so
they live here, owned by the process and keyed by the stable deployment id (deployments.deployment_id). A reload
keeps the measurements of every deployment it did not change. All updates happen on the event loop thread.

Each deployment's circuit breaker lives here too; its cooldown is LiteLLM's (router_settings.allowed_fails /
cooldown_time): more than `allowed_fails` failures in a minute open it — a call over
`routeiq.breakers.deployment_latency_budget_seconds` (a timeout too) counts as a failure — for `cooldown_time`
seconds; then it is half-open: the next request that reaches it is the probe, the others keep away while the
probe is out; the probe's success closes it, its failure opens it again for another cooldown. Strategies put
deployments that are open (or half-open with a probe out) last (deployment_strategies.ordered), and the attempt
plan leaves them out while a peer is not (dispatcher.attempt_plan).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from routeiq_shared.breaker import BreakerState

log = logging.getLogger("routeiq.gateway")
OnChange = Callable[[str, BreakerState, BreakerState, str], None]  # deployment id, old, new, reason

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
    breaker: BreakerState = BreakerState.CLOSED
    reason: str = ""  # why the breaker last opened
    probe_at: float | None = None  # half-open: when the probe went out
    cooldown: float = COOLDOWN_SECONDS  # of the last opening: a probe out longer than this may be replaced
    minute: int = -1  # the wall-clock minute the usage counts below belong to
    requests: int = 0
    tokens: int = 0


def _ewma(old: float | None, sample: float) -> float:
    return sample if old is None else old + EWMA_ALPHA * (sample - old)


class RuntimeState:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_change: OnChange | None = None,
    ) -> None:
        self.stats: dict[str, DeploymentStats] = {}
        self.clock = clock
        self.wall = wall
        self.on_change = on_change  # metrics of each transition (observability/metrics.py)
        self.unhealthy: set[str] = set()  # ids whose breaker is not closed: one set lookup on a success
        self.names: dict[str, str] = {}  # id → "group/model" for log lines (describe())

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

    def failed(
        self,
        dep_id: str,
        allowed_fails: int = ALLOWED_FAILS,
        cooldown: float = COOLDOWN_SECONDS,
        reason: str = "error",
    ) -> bool:
        """Count a failed call; past `allowed_fails` in the current minute the deployment cools down `cooldown`
        seconds (router_settings.allowed_fails / cooldown_time, as LiteLLM counts them), and a failed half-open
        probe at once. True when this failure opened the breaker."""
        stats = self.get(dep_id)
        minute = int(self.wall() // 60)
        if stats.fail_minute != minute:
            stats.fail_minute, stats.failures = minute, 0
        stats.failures += 1
        if cooldown <= 0:
            return False
        state = self._state(dep_id, stats)
        if state is BreakerState.HALF_OPEN:
            self._open(dep_id, stats, cooldown, f"probe failed: {reason}")
            return True
        if stats.failures > allowed_fails:
            stats.cooldown_until = self.clock() + cooldown
            if state is BreakerState.CLOSED:
                self._open(dep_id, stats, cooldown, f"{stats.failures} failures this minute, last: {reason}")
                return True
        return False

    def ok(self, dep_id: str) -> None:
        """A call succeeded (within the latency budget): a half-open deployment is closed again."""
        if dep_id not in self.unhealthy:
            return
        stats = self.get(dep_id)
        if self._state(dep_id, stats) is BreakerState.HALF_OPEN:
            stats.failures = 0
            stats.probe_at = None
            self._move(dep_id, stats, BreakerState.CLOSED, "probe succeeded")

    def attempting(self, dep_id: str) -> None:
        """A call to the deployment starts: when it is half-open with no probe out, this call is the probe."""
        if dep_id not in self.unhealthy:
            return
        stats = self.get(dep_id)
        if self._state(dep_id, stats) is BreakerState.HALF_OPEN and not self._probe_out(stats):
            stats.probe_at = self.clock()

    def breaker(self, dep_id: str) -> BreakerState:
        stats = self.stats.get(dep_id)
        return BreakerState.CLOSED if stats is None else self._state(dep_id, stats)

    def reason(self, dep_id: str) -> str:
        stats = self.stats.get(dep_id)
        return "" if stats is None else stats.reason

    def describe(self, names: dict[str, str]) -> None:
        self.names = names

    def add_tokens(self, dep_id: str, tokens: int) -> None:
        self.usage(dep_id).tokens += tokens

    def cooling(self, dep_id: str) -> bool:
        """Open, or half-open with its probe out: kept away from (tried last)."""
        if dep_id not in self.unhealthy:
            return False
        stats = self.stats[dep_id]
        state = self._state(dep_id, stats)
        return state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self._probe_out(stats))

    def forget_except(self, keep: set[str]) -> None:
        """Drop deployments no longer configured, so removed ones do not accumulate across reloads."""
        for dep_id in [d for d in self.stats if d not in keep]:
            del self.stats[dep_id]
            self.unhealthy.discard(dep_id)

    # --- the breaker's transitions ---------------------------------------------------------------------------

    def _state(self, dep_id: str, stats: DeploymentStats) -> BreakerState:
        """The breaker's state now: an open one whose cooldown is over turns half-open (a transition)."""
        if stats.breaker is BreakerState.OPEN and stats.cooldown_until <= self.clock():
            stats.probe_at = None
            self._move(dep_id, stats, BreakerState.HALF_OPEN, "cooldown over: the next request probes")
        return stats.breaker

    def _probe_out(self, stats: DeploymentStats) -> bool:
        # A probe whose request never reported (cancelled) is replaced after another cooldown.
        return stats.probe_at is not None and self.clock() - stats.probe_at < max(stats.cooldown, 1.0)

    def _open(self, dep_id: str, stats: DeploymentStats, cooldown: float, reason: str) -> None:
        stats.cooldown_until = self.clock() + cooldown
        stats.cooldown = cooldown
        stats.probe_at = None
        stats.reason = reason[:300]
        self._move(dep_id, stats, BreakerState.OPEN, reason)

    def _move(self, dep_id: str, stats: DeploymentStats, new: BreakerState, reason: str) -> None:
        old, stats.breaker = stats.breaker, new
        if old is new:
            return
        if new is BreakerState.CLOSED:
            self.unhealthy.discard(dep_id)
        else:
            self.unhealthy.add(dep_id)
        log.log(
            logging.WARNING if new is BreakerState.OPEN else logging.INFO,
            f"Deployment circuit breaker {old.label} -> {new.label}",
            extra={
                "event": "circuit_breaker",
                "dependency": "deployment",
                "deployment_id": dep_id,
                "deployment": self.names.get(dep_id, ""),
                "from": old.label,
                "to": new.label,
                "reason": reason[:300],
            },
        )
        if self.on_change is not None:
            self.on_change(dep_id, old, new, reason)
