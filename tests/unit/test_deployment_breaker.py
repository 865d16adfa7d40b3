"""Provider deployments' circuit breakers (routing/runtime.py): LiteLLM's cooldown opens it, a half-open probe lets
one request back in (its failure re-opens, its success closes), answers over the latency budget count as failures,
open deployments go last and are still tried when the whole group is open, and the dispatcher feeds all this
from real attempts (here against a stub provider: the integration test test_deployment_breakers.py runs the
real processes)."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from routeiq_gateway.dispatch.dispatcher import Dispatcher, attempt_plan
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.providers import Completed
from routeiq_gateway.routing.deployment_strategies import DEPLOYMENT_STRATEGIES, ordered
from routeiq_gateway.routing.deployments import Deployment
from routeiq_gateway.routing.runtime import RuntimeState
from routeiq_gateway.state import GatewayState, build_state
from routeiq_shared.breaker import BreakerState
from routeiq_shared.config_schema import load_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _state(extra: str = "", budget: str = "") -> GatewayState:
    raw = f"""
model_list:
  - {{model_name: g, litellm_params: {{model: openai/x, api_base: "http://127.0.0.1:1/v1"}}}}
  - {{model_name: g, litellm_params: {{model: openai/y, api_base: "http://127.0.0.1:2/v1"}}}}
router_settings: {{retry_after: 0, allowed_fails: 1, cooldown_time: 10{extra or ", num_retries: 1"}}}
{budget}
"""
    return build_state(load_config(raw.encode(), None, {}), created=0)


def test_open_half_open_probe_and_close(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    moves: list[tuple[str, str]] = []
    runtime = RuntimeState(clock=clock, wall=clock, on_change=lambda d, old, new, why: moves.append((d, new.label)))
    assert not runtime.failed("a", allowed_fails=1, cooldown=10)
    with caplog.at_level(logging.INFO, logger="routeiq.gateway"):
        assert runtime.failed("a", allowed_fails=1, cooldown=10, reason="upstream_timeout")  # opened now
    assert runtime.breaker("a") is BreakerState.OPEN and runtime.cooling("a")
    assert "upstream_timeout" in runtime.reason("a")
    line = next(r for r in caplog.records if r.__dict__.get("event") == "circuit_breaker")
    assert line.__dict__["to"] == "open" and line.__dict__["deployment_id"] == "a"
    clock.now += 10
    assert runtime.breaker("a") is BreakerState.HALF_OPEN and not runtime.cooling("a")  # a probe may go
    runtime.attempting("a")
    assert runtime.cooling("a")  # the probe is out: the others keep away
    assert runtime.failed("a", allowed_fails=1, cooldown=10, reason="upstream_timeout")  # the probe failed
    assert runtime.breaker("a") is BreakerState.OPEN and runtime.reason("a").startswith("probe failed")
    clock.now += 10
    runtime.attempting("a")
    runtime.ok("a")
    assert runtime.breaker("a") is BreakerState.CLOSED and not runtime.cooling("a") and not runtime.unhealthy
    assert [m for _, m in moves] == ["open", "half_open", "open", "half_open", "closed"]


def test_open_deployments_go_last_and_an_all_open_group_is_still_tried() -> None:
    deps = _state().groups["g"]
    runtime = RuntimeState()
    for _ in range(2):
        runtime.failed(deps[0].id, 1, 10)
    strategy = DEPLOYMENT_STRATEGIES["simple-shuffle"]
    for _ in range(50):
        assert [d.id for d in ordered(strategy, deps, runtime, random.Random(), False)][-1] == deps[0].id
    for _ in range(2):
        runtime.failed(deps[1].id, 1, 10)
    assert {d.id for d in ordered(strategy, deps, runtime, random.Random(), False)} == {d.id for d in deps}


def test_the_attempt_plan_skips_open_deployments_unless_the_whole_group_is_open() -> None:
    state = _state(", num_retries: 3")
    deps = state.groups["g"]
    runtime = RuntimeState()
    for _ in range(2):
        runtime.failed(deps[0].id, 1, 10)
    for _ in range(50):  # the retries cycle over the peer only
        plan = attempt_plan(state, "g", random.Random(), runtime)
        assert [d.id for d in plan] == [deps[1].id] * 4
    for _ in range(2):
        runtime.failed(deps[1].id, 1, 10)
    plan = attempt_plan(state, "g", random.Random(), runtime)
    assert {d.id for d in plan} == {d.id for d in deps} and len(plan) == 4  # all open: a last resort, as before


class _Stub:
    """A provider whose deployment x fails or answers slowly on demand."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.calls: list[str] = []

    async def call(self, dep: Deployment, endpoint: str, body: dict[str, Any], stream: bool, tp: Any) -> Completed:
        self.calls.append(dep.upstream_model)
        if dep.upstream_model == "x" and self.mode == "fail":
            raise GatewayError(504, "Upstream timed out", code="upstream_timeout", retryable=True)
        if dep.upstream_model == "x" and self.mode == "slow":
            await asyncio.sleep(0.05)
        return Completed(b"{}", None)


def _send(dispatcher: Dispatcher, state: GatewayState, span: Any) -> Any:
    return asyncio.run(dispatcher.send(state, "g", "chat/completions", {"model": "g"}, False, None, span))


def test_the_dispatcher_opens_on_failures_and_slow_answers_and_says_so_on_the_span() -> None:
    tracer = TracerProvider().get_tracer("t")
    stub = _Stub()
    for mode, budget in (("fail", ""), ("slow", "routeiq: {breakers: {deployment_latency_budget_seconds: 0.01}}")):
        state = _state(budget=budget)
        runtime = RuntimeState()
        dispatcher = Dispatcher(stub, None, GatewayMetrics(), runtime)  # type: ignore[arg-type]
        x = next(d for d in state.groups["g"] if d.upstream_model == "x")
        stub.mode = mode
        opened_on = None
        for _ in range(20):
            with tracer.start_as_current_span("req") as span:
                _send(dispatcher, state, span)
                if any(e.name == "circuit_breaker_opened" for e in span.events):  # type: ignore[attr-defined]
                    opened_on = span
            if runtime.breaker(x.id) is BreakerState.OPEN:
                break
        assert runtime.breaker(x.id) is BreakerState.OPEN, mode
        assert opened_on is not None
        stub.calls.clear()
        with tracer.start_as_current_span("req") as span:
            _send(dispatcher, state, span)
        assert stub.calls == ["y"]  # open: the peer first, and it answered
        assert span.attributes["routeiq.breaker.open"] == ("openai/x",)  # type: ignore[attr-defined]
        assert span.attributes["routeiq.breaker.reasons"][0]  # type: ignore[attr-defined]
