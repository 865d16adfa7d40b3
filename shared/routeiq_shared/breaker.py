"""A circuit breaker around one dependency (Redis, PostgreSQL, S3): closed → open after `failures` consecutive
failures (a call slower than `latency_budget_seconds` counts as one) → half-open after `cooldown_seconds`, when
one probe may go → closed when it succeeds, open again when it fails.

One breaker per dependency per process, shared by every user of that dependency there, so one sees what the
others learned. Callers ask `allow()` before a call and report `success()` / `failure()` after it; a background
task that probes on its own asks `probe_due()`. Each transition is one JSON log line and goes to `on_change`
(metrics). The policy is read at each use, so a config reload applies at once. Not thread-safe: one event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from prometheus_client import CollectorRegistry, Counter, Gauge


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 5  # consecutive failures that open it (the seeds' default)
    cooldown_seconds: float = 60.0  # open this long before one probe may go
    latency_budget_seconds: float | None = None  # a call slower than this counts as a failure

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError("failures must be at least 1")
        if self.cooldown_seconds < 0:
            raise ValueError("cooldown_seconds must not be negative")
        if self.latency_budget_seconds is not None and self.latency_budget_seconds <= 0:
            raise ValueError("latency_budget_seconds must be positive")


OnChange = Callable[[str, BreakerState, BreakerState, str], None]  # dependency, old, new, reason


class CircuitBreaker:
    def __init__(
        self,
        dependency: str,
        policy: Callable[[], BreakerPolicy],
        log: logging.Logger,
        on_change: OnChange | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dependency = dependency
        self.policy = policy
        self.log = log
        self.on_change = on_change
        self.clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0  # consecutive
        self._opened_at = 0.0
        self._probe_at: float | None = None  # when the half-open probe went out
        self.last_reason = ""

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is BreakerState.CLOSED

    def probe_due(self) -> bool:
        """Open for its cool-down (or half-open with a probe that never reported): one probe may go now."""
        policy = self.policy()
        now = self.clock()
        if self._state is BreakerState.OPEN:
            return now - self._opened_at >= policy.cooldown_seconds
        if self._state is BreakerState.HALF_OPEN:
            # A probe that never reported (its caller was cancelled) must not keep the breaker half-open forever.
            return self._probe_at is None or now - self._probe_at >= max(policy.cooldown_seconds, 1.0)
        return False

    def allow(self) -> bool:
        """Whether a call may go now: always when closed; when open, only the one probe after the cool-down."""
        if self._state is BreakerState.CLOSED:
            return True
        if not self.probe_due():
            return False
        if self._state is BreakerState.OPEN:
            self._move(BreakerState.HALF_OPEN, "cooldown elapsed: probing")
        self._probe_at = self.clock()
        return True

    def success(self, seconds: float | None = None) -> None:
        budget = self.policy().latency_budget_seconds
        if seconds is not None and budget is not None and seconds > budget:
            self.failure(f"slow: {seconds:.3f} s over the budget of {budget:g} s")
            return
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._probe_at = None
            self._move(BreakerState.CLOSED, "call succeeded")

    def failure(self, reason: str) -> None:
        self._failures += 1
        self.last_reason = reason
        if self._state is BreakerState.HALF_OPEN:
            self._open(f"probe failed: {reason}")
        elif self._state is BreakerState.CLOSED and self._failures >= self.policy().failures:
            self._open(f"{self._failures} consecutive failures, last: {reason}")
        elif self._state is BreakerState.OPEN:
            self._opened_at = self.clock()  # a failure seen while open (a call begun before it opened) restarts it

    def _open(self, reason: str) -> None:
        self._opened_at = self.clock()
        self._probe_at = None
        self._move(BreakerState.OPEN, reason)

    def _move(self, new: BreakerState, reason: str) -> None:
        old, self._state = self._state, new
        if old is new:
            return
        level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
        self.log.log(
            level,
            f"Circuit breaker of {self.dependency} {old.label} -> {new.label}",
            extra={
                "event": "circuit_breaker",
                "dependency": self.dependency,
                "from": old.label,
                "to": new.label,
                "reason": reason[:300],
                "cooldown_seconds": self.policy().cooldown_seconds,
            },
        )
        if self.on_change is not None:
            self.on_change(self.dependency, old, new, reason)


class BreakerMetrics:
    """`<prefix>_circuit_breaker_state{dependency}` (0 closed, 1 open, 2 half-open) and
    `<prefix>_circuit_breaker_transitions_total{dependency,to}`, in the process's registry."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        self.state = Gauge(
            f"{prefix}_circuit_breaker_state",
            "Circuit breaker of a dependency: 0 closed, 1 open, 2 half-open",
            ["dependency"],
            registry=registry,
        )
        self.transitions = Counter(
            f"{prefix}_circuit_breaker_transitions",
            "Circuit breaker transitions by dependency and the state entered",
            ["dependency", "to"],
            registry=registry,
        )

    def watch(self, dependency: str) -> None:
        """The dependency shows as closed from the start (not absent until its first transition)."""
        self.state.labels(dependency).set(0)

    def changed(self, dependency: str, old: BreakerState, new: BreakerState, reason: str) -> None:
        self.state.labels(dependency).set(int(new))
        self.transitions.labels(dependency, new.label).inc()

    def breaker(
        self,
        dependency: str,
        policy: Callable[[], BreakerPolicy],
        log: logging.Logger,
        also: OnChange | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> CircuitBreaker:
        """A breaker whose transitions land in these metrics (and in `also`, e.g. a degraded-mode gauge)."""
        self.watch(dependency)

        def on_change(dep: str, old: BreakerState, new: BreakerState, reason: str) -> None:
            self.changed(dep, old, new, reason)
            if also is not None:
                also(dep, old, new, reason)

        return CircuitBreaker(dependency, policy, log, on_change, clock)
