"""The dependency circuit breaker (routeiq_shared/breaker.py): closed → open after N consecutive failures or
slow calls → one half-open probe after the cool-down → closed on success, open again on failure; each
transition in the metrics and one JSON-able log record."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry
from routeiq_shared.breaker import BreakerMetrics, BreakerPolicy, BreakerState, CircuitBreaker
from routeiq_shared.config_schema import BreakersSettings, ConfigError, load_config

log = logging.getLogger("test.breaker")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _breaker(policy: BreakerPolicy, clock: Clock) -> tuple[CircuitBreaker, CollectorRegistry]:
    registry = CollectorRegistry()
    return BreakerMetrics(registry, "t").breaker("redis", lambda: policy, log, clock=clock), registry


def _state(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("t_circuit_breaker_state", {"dependency": "redis"})


def test_opens_after_consecutive_failures_probes_once_and_closes(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    breaker, registry = _breaker(BreakerPolicy(failures=3, cooldown_seconds=10), clock)
    assert _state(registry) == 0.0
    breaker.failure("boom")
    breaker.failure("boom")
    breaker.success()  # consecutive: a success in between starts the count again
    breaker.failure("boom")
    breaker.failure("boom")
    assert breaker.closed and breaker.allow()
    with caplog.at_level(logging.INFO, logger="test.breaker"):
        breaker.failure("boom")
        assert breaker.state is BreakerState.OPEN and _state(registry) == 1.0
        assert not breaker.allow()
        clock.now += 9.9
        assert not breaker.allow() and not breaker.probe_due()
        clock.now += 0.2
        assert breaker.allow()  # the one probe
        assert breaker.state is BreakerState.HALF_OPEN and _state(registry) == 2.0
        assert not breaker.allow()  # nobody else while it is out
        breaker.success()
    assert breaker.closed and _state(registry) == 0.0
    moves = [
        (r.__dict__["from"], r.__dict__["to"]) for r in caplog.records if r.__dict__.get("event") == "circuit_breaker"
    ]
    assert moves == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert all(r.__dict__["dependency"] == "redis" for r in caplog.records)
    opened = registry.get_sample_value("t_circuit_breaker_transitions_total", {"dependency": "redis", "to": "open"})
    assert opened == 1.0


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    clock = Clock()
    breaker, _ = _breaker(BreakerPolicy(failures=1, cooldown_seconds=5), clock)
    breaker.failure("down")
    clock.now += 5
    assert breaker.allow()
    breaker.failure("still down")
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 5
    assert breaker.allow()


def test_calls_over_the_latency_budget_count_as_failures() -> None:
    clock = Clock()
    breaker, _ = _breaker(BreakerPolicy(failures=2, cooldown_seconds=5, latency_budget_seconds=0.5), clock)
    breaker.success(0.4)
    breaker.success(0.9)
    assert breaker.closed
    breaker.success(1.5)
    assert breaker.state is BreakerState.OPEN and breaker.last_reason.startswith("slow")


def test_a_probe_that_never_reports_does_not_hold_it_half_open() -> None:
    clock = Clock()
    breaker, _ = _breaker(BreakerPolicy(failures=1, cooldown_seconds=2), clock)
    breaker.failure("down")
    clock.now += 2
    assert breaker.allow() and not breaker.allow()
    clock.now += 2  # the probe's caller was cancelled: after another cool-down one more may go
    assert breaker.allow()


def test_policy_and_config_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="failures"):
        BreakerPolicy(failures=0)
    with pytest.raises(ValueError, match="latency_budget"):
        BreakerPolicy(latency_budget_seconds=0)
    raw = (
        b"model_list: [{model_name: m, litellm_params: {model: openai/m}}]\nrouteiq: {breakers: {redis: {failures: 0}}}"
    )
    with pytest.raises(ConfigError, match=r"routeiq\.breakers\.redis\.failures"):
        load_config(raw)
    defaults = BreakersSettings().policies()
    # Redis and PostgreSQL fall back after one failed call and probe every second (what limits and keys did
    # before the breaker); S3 uses the seeds' 5 failures / 60 s.
    assert defaults["redis"] == BreakerPolicy(1, 1.0) and defaults["postgres"] == BreakerPolicy(1, 1.0)
    assert defaults["s3"] == BreakerPolicy(5, 60.0)
