"""Deployment strategies within a model group (routing/deployment_strategies.py), the runtime state they read
(routing/runtime.py), and the dispatcher's attempt plan built from their order."""

from __future__ import annotations

import random
import sys
import types
from collections import Counter

import pytest
from routeiq_gateway.dispatch.dispatcher import Dispatcher, attempt_plan
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.providers import Completed
from routeiq_gateway.routing.deployment_strategies import DEPLOYMENT_STRATEGIES, litellm_price, ordered
from routeiq_gateway.routing.deployments import Deployment
from routeiq_gateway.routing.runtime import COOLDOWN_FAILURES, RuntimeState
from routeiq_gateway.state import build_state
from routeiq_shared.config_schema import ConfigError, load_config


def config(strategy: str, deployments: str, extra: str = "") -> bytes:
    return f"""
model_list:
{deployments}
router_settings: {{routing_strategy: {strategy}, num_retries: 0{extra}}}
""".encode()


def group(strategy: str, deployments: str) -> tuple[Deployment, ...]:
    return build_state(load_config(config(strategy, deployments), None, {}), created=0).groups["g"]


THREE = """
  - {model_name: g, litellm_params: {model: openai/x, api_base: "http://127.0.0.1:1/v1"}}
  - {model_name: g, litellm_params: {model: openai/y, api_base: "http://127.0.0.1:2/v1"}}
  - {model_name: g, litellm_params: {model: openai/z, api_base: "http://127.0.0.1:3/v1"}}
"""


def firsts(strategy: str, deps: tuple[Deployment, ...], runtime: RuntimeState, n: int = 3000) -> Counter[str]:
    rng = random.Random(5)
    strat = DEPLOYMENT_STRATEGIES[strategy]
    return Counter(ordered(strat, deps, runtime, rng, False)[0].upstream_model for _ in range(n))


def test_simple_shuffle_is_uniform_without_weights() -> None:
    counts = firsts("simple-shuffle", group("simple-shuffle", THREE), RuntimeState())
    assert set(counts) == {"x", "y", "z"}
    assert all(900 <= c <= 1100 for c in counts.values()), counts


@pytest.mark.parametrize("key", ["weight", "rpm", "tpm"])
def test_simple_shuffle_weighs_by_weight_rpm_or_tpm(key: str) -> None:
    deps = group(
        "simple-shuffle",
        f"""
  - {{model_name: g, litellm_params: {{model: openai/x, api_base: "http://127.0.0.1:1/v1", {key}: 30}}}}
  - {{model_name: g, litellm_params: {{model: openai/y, api_base: "http://127.0.0.1:2/v1", {key}: 10}}}}
""",
    )
    counts = firsts("simple-shuffle", deps, RuntimeState(), 4000)
    assert 2800 <= counts["x"] <= 3200, counts  # 75% expected
    assert all(dict(d.extra_params).get("weight") is None for d in deps)  # never sent upstream


def test_least_busy_picks_fewest_in_flight() -> None:
    deps = group("least-busy", THREE)
    runtime = RuntimeState()
    for dep, n in zip(deps, (3, 1, 2), strict=True):
        for _ in range(n):
            runtime.started(dep.id)
    order = ordered(DEPLOYMENT_STRATEGIES["least-busy"], deps, runtime, random.Random(1), False)
    assert [d.upstream_model for d in order] == ["y", "z", "x"]
    runtime.finished(deps[0].id)
    runtime.finished(deps[0].id)  # x now has 1: ties with y, both before z
    assert set(firsts("least-busy", deps, runtime, 200)) == {"x", "y"}


def test_latency_based_tries_unmeasured_first_then_lowest_ewma_and_ttft_for_streams() -> None:
    deps = group("latency-based-routing", THREE)
    runtime = RuntimeState()
    strat = DEPLOYMENT_STRATEGIES["latency-based-routing"]
    runtime.succeeded(deps[0].id, 0.5, stream=False)
    runtime.succeeded(deps[1].id, 0.1, stream=False)
    assert ordered(strat, deps, runtime, random.Random(1), False)[0].upstream_model == "z"  # not measured yet
    runtime.succeeded(deps[2].id, 0.3, stream=False)
    assert [d.upstream_model for d in ordered(strat, deps, runtime, random.Random(1), False)] == ["y", "z", "x"]
    # Streams: time to first token where measured.
    runtime.succeeded(deps[0].id, 0.01, stream=True)
    assert ordered(strat, deps, runtime, random.Random(1), True)[0].upstream_model == "x"
    # EWMA: one fast sample does not undo a slow history.
    runtime.succeeded(deps[1].id, 10.0, stream=False)
    assert runtime.get(deps[1].id).latency == pytest.approx(0.1 + 0.3 * 9.9)


def test_cost_based_uses_model_info_then_litellm_cost_map_unknown_last(monkeypatch: pytest.MonkeyPatch) -> None:
    deps = group(
        "cost-based-routing",
        """
  - {model_name: g, litellm_params: {model: openai/x, api_base: "http://127.0.0.1:1/v1"},
     model_info: {input_cost_per_token: 0.00001, output_cost_per_token: 0.00003}}
  - {model_name: g, litellm_params: {model: openai/unpriced-model, api_base: "http://127.0.0.1:2/v1"}}
  - {model_name: g, litellm_params: {model: openai/y, api_base: "http://127.0.0.1:3/v1"},
     model_info: {input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}}
  - {model_name: g, litellm_params: {model: openai/mapped-model, api_base: "http://127.0.0.1:4/v1"}}
""",
    )
    strat = DEPLOYMENT_STRATEGIES["cost-based-routing"]
    fake = types.ModuleType("litellm")
    fake.model_cost = {"mapped-model": {"input_cost_per_token": 0.000002, "output_cost_per_token": 0.000004}}  # type: ignore[attr-defined]
    monkeypatch.delitem(sys.modules, "litellm", raising=False)
    assert litellm_price(deps[3]) is None  # litellm not imported: not imported for this either
    assert "litellm" not in sys.modules
    monkeypatch.setitem(sys.modules, "litellm", fake)
    order = ordered(strat, deps, RuntimeState(), random.Random(1), False)
    assert [d.upstream_model for d in order] == ["y", "mapped-model", "x", "unpriced-model"]


def test_usage_based_prefers_most_headroom_this_minute() -> None:
    deps = group(
        "usage-based-routing",
        """
  - {model_name: g, litellm_params: {model: openai/x, api_base: "http://127.0.0.1:1/v1", rpm: 10}}
  - {model_name: g, litellm_params: {model: openai/y, api_base: "http://127.0.0.1:2/v1", tpm: 1000}}
""",
    )
    now = [600.0]
    runtime = RuntimeState(wall=lambda: now[0])
    strat = DEPLOYMENT_STRATEGIES["usage-based-routing"]
    for _ in range(2):
        runtime.started(deps[0].id)  # x: 8/10 requests left = 0.8
    runtime.add_tokens(deps[1].id, 500)  # y: 0.5
    assert [d.upstream_model for d in ordered(strat, deps, runtime, random.Random(1), False)] == ["x", "y"]
    for _ in range(4):
        runtime.started(deps[0].id)  # x: 0.4
    assert ordered(strat, deps, runtime, random.Random(1), False)[0].upstream_model == "y"
    now[0] = 660.0  # a new minute: both back to full headroom, ties go to fewer requests (y, whose count reset too)
    assert runtime.usage(deps[0].id).requests == 0


def test_deployments_in_cooldown_go_last() -> None:
    deps = group("least-busy", THREE)
    runtime = RuntimeState()
    for _ in range(COOLDOWN_FAILURES):
        runtime.failed(deps[0].id)
    for _ in range(200):
        order = ordered(DEPLOYMENT_STRATEGIES["simple-shuffle"], deps, runtime, random.Random(), False)
        assert order[-1].upstream_model == "x"


def test_attempt_plan_follows_the_strategy_order_then_fallbacks() -> None:
    raw = config(
        "least-busy",
        THREE + '  - {model_name: f, litellm_params: {model: openai/f, api_base: "http://127.0.0.1:5/v1"}}',
        ", fallbacks: [{g: [f]}]",
    ).replace(b"num_retries: 0", b"num_retries: 1")
    st = build_state(load_config(raw, None, {}), created=0)
    runtime = RuntimeState()
    x, y, _z = st.groups["g"]
    runtime.started(x.id)
    runtime.started(y.id)
    plan = attempt_plan(st, "g", random.Random(3), runtime)
    assert [d.upstream_model for d in plan] == ["z", "x", "f", "f"] or [d.upstream_model for d in plan] == [
        "z",
        "y",
        "f",
        "f",
    ]
    assert st.measure and st.routing_strategy == "least-busy"


def test_deployment_id_is_stable_and_ignores_the_key() -> None:
    a = group("simple-shuffle", "  - {model_name: g, litellm_params: {model: openai/x, api_key: one}}")[0]
    b = group("simple-shuffle", "  - {model_name: g, litellm_params: {model: openai/x, api_key: two}}")[0]
    c = group("simple-shuffle", "  - {model_name: g, litellm_params: {model: openai/y, api_key: one}}")[0]
    assert a.id == b.id != c.id
    assert "one" not in a.id


def test_default_state_measures_nothing_and_unknown_strategy_is_refused() -> None:
    st = build_state(load_config(config("simple-shuffle", THREE), None, {}), created=0)
    assert not st.measure
    with pytest.raises(ConfigError) as err:
        load_config(config("fastest-please", THREE), None, {})
    assert err.value.path == "router_settings.routing_strategy"


# -- the dispatcher's bookkeeping ----------------------------------------------------------------------------


class _Stream:
    usage = {"total_tokens": 7}

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration

    async def aclose(self) -> None:
        return None


class _Provider:
    """Fails the deployments named in `failing` with a retryable 502; answers the others."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.calls: list[str] = []

    async def call(self, dep: Deployment, endpoint: str, body: dict, stream: bool, traceparent: str | None) -> object:
        self.calls.append(dep.upstream_model)
        if dep.upstream_model in self.failing:
            raise GatewayError(502, "upstream broke", retryable=True)
        return _Stream() if stream else Completed(b"{}", {"total_tokens": 5})


def test_dispatcher_records_latency_in_flight_failures_and_tokens_when_a_strategy_reads_them() -> None:
    import asyncio

    from opentelemetry.trace import INVALID_SPAN

    raw = config("least-busy", THREE).replace(b"num_retries: 0", b"num_retries: 2")
    st = build_state(load_config(raw, None, {}), created=0)
    x, y, z = st.groups["g"]
    runtime = RuntimeState()
    runtime.started(y.id)  # y and z busier: x is first
    runtime.started(z.id)
    provider = _Provider({"x"})
    dispatcher = Dispatcher(provider, None, GatewayMetrics(), runtime)  # type: ignore[arg-type]

    outcome = asyncio.run(dispatcher.send(st, "g", "chat/completions", {}, False, None, INVALID_SPAN))
    assert provider.calls[0] == "x" and outcome.deployment.upstream_model != "x" and outcome.attempts == 2
    assert runtime.get(x.id).failures == 1 and runtime.get(x.id).in_flight == 0
    served = runtime.get(outcome.deployment.id)
    assert served.latency is not None and served.in_flight == 1  # back to the one started above
    dispatcher.add_tokens(st, outcome, {"total_tokens": 5})
    assert served.tokens == 5

    streamed = asyncio.run(dispatcher.send(st, "g", "chat/completions", {}, True, None, INVALID_SPAN))
    held = runtime.get(streamed.deployment.id)
    assert streamed.held and held.in_flight >= 1
    before = held.in_flight
    dispatcher.first_chunk(streamed)
    assert held.ttft is not None
    dispatcher.stream_ended(streamed)
    dispatcher.stream_ended(streamed)  # idempotent: released once
    assert held.in_flight == before - 1


def test_dispatcher_records_nothing_on_the_default_path() -> None:
    import asyncio

    from opentelemetry.trace import INVALID_SPAN

    st = build_state(load_config(config("simple-shuffle", THREE.splitlines()[1] + "\n"), None, {}), created=0)
    runtime = RuntimeState()
    dispatcher = Dispatcher(_Provider(set()), None, GatewayMetrics(), runtime)  # type: ignore[arg-type]
    outcome = asyncio.run(dispatcher.send(st, "g", "chat/completions", {}, False, None, INVALID_SPAN))
    dispatcher.add_tokens(st, outcome, {"total_tokens": 5})
    assert not st.measure and runtime.stats == {}


def test_runtime_state_forgets_only_deployments_no_longer_configured() -> None:
    runtime = RuntimeState()
    runtime.succeeded("kept", 0.2, stream=False)
    runtime.succeeded("removed", 0.3, stream=False)
    runtime.forget_except({"kept", "new"})
    assert set(runtime.stats) == {"kept"} and runtime.get("kept").latency == 0.2
