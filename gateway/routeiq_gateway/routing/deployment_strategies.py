"""Deployment strategies: in which order the deployments of one model group are tried
(`router_settings.routing_strategy`, named as LiteLLM names them).

Each strategy orders the whole group, best first; the dispatcher walks that order for its retries and then moves
on to the fallback groups. Deployments cooling down after repeated failures (runtime.py) go to the end whatever
the strategy, so they are still tried when nothing else is left.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

from routeiq_gateway.routing.deployments import Deployment
from routeiq_gateway.routing.runtime import RuntimeState

_INF = float("inf")


class DeploymentStrategy(Protocol):
    def order(
        self, group: Sequence[Deployment], runtime: RuntimeState, rng: random.Random, stream: bool
    ) -> list[Deployment]: ...


def weighted_order(items: Sequence[Deployment], weights: Sequence[float], rng: random.Random) -> list[Deployment]:
    """A weighted random permutation (Efraimidis-Spirakis): the first item is drawn with probability ∝ weight."""
    keys = [(rng.random() ** (1.0 / w) if w > 0 else -rng.random(), i) for i, w in enumerate(weights)]
    keys.sort(reverse=True)
    return [items[i] for _, i in keys]


class SimpleShuffle:
    """Random start, weighted by `weight`, else rpm, else tpm when every deployment gives one; uniform otherwise."""

    def order(
        self, group: Sequence[Deployment], runtime: RuntimeState, rng: random.Random, stream: bool
    ) -> list[Deployment]:
        weights = [d.weight for d in group]
        if any(w is None for w in weights):
            start = rng.randrange(len(group))
            return [group[(start + i) % len(group)] for i in range(len(group))]
        return weighted_order(group, [w or 0.0 for w in weights], rng)


def _sorted_by(
    group: Sequence[Deployment], rng: random.Random, key: Callable[[Deployment], float | tuple[float, ...]]
) -> list[Deployment]:
    # Shuffled first so that ties (equal keys) are broken at random: a stable sort then keeps that order.
    shuffled = list(group)
    rng.shuffle(shuffled)
    shuffled.sort(key=key)
    return shuffled


class LeastBusy:
    """Fewest requests in flight first."""

    def order(
        self, group: Sequence[Deployment], runtime: RuntimeState, rng: random.Random, stream: bool
    ) -> list[Deployment]:
        return _sorted_by(group, rng, lambda d: runtime.get(d.id).in_flight)


class LatencyBased:
    """Lowest EWMA latency first (time to first token for streams); unmeasured deployments first of all, so
    each gets measured."""

    def order(
        self, group: Sequence[Deployment], runtime: RuntimeState, rng: random.Random, stream: bool
    ) -> list[Deployment]:
        def key(d: Deployment) -> float:
            stats = runtime.get(d.id)
            value = (stats.ttft if stats.ttft is not None else stats.latency) if stream else stats.latency
            return -1.0 if value is None else value

        return _sorted_by(group, rng, key)


_cost_map_cache: dict[str, float | None] = {}


def litellm_price(dep: Deployment) -> float | None:
    """input + output price per token from LiteLLM's cost map, only if litellm is imported already (importing
    it costs seconds and memory the native path never needs)."""
    if dep.litellm_model in _cost_map_cache:
        return _cost_map_cache[dep.litellm_model]
    litellm = sys.modules.get("litellm")
    if litellm is None:
        return None  # not cached: a later import may still tell
    cost_map = getattr(litellm, "model_cost", {}) or {}
    entry = cost_map.get(dep.litellm_model) or cost_map.get(dep.upstream_model)
    price: float | None = None
    if isinstance(entry, dict):
        inp, out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
        if isinstance(inp, int | float) and isinstance(out, int | float):
            price = float(inp) + float(out)
    _cost_map_cache[dep.litellm_model] = price
    return price


def deployment_price(dep: Deployment) -> float | None:
    if dep.input_cost is not None and dep.output_cost is not None:
        return dep.input_cost + dep.output_cost
    return litellm_price(dep)


class CostBased:
    """Cheapest (input + output price per token) first: model_info, else LiteLLM's cost map; unknown last."""

    def order(
        self, group: Sequence[Deployment], runtime: RuntimeState, rng: random.Random, stream: bool
    ) -> list[Deployment]:
        def key(d: Deployment) -> float:
            price = deployment_price(d)
            return _INF if price is None else price

        return _sorted_by(group, rng, key)


class UsageBased:
    """Most headroom in the current minute first: the smaller of 1 - used/limit over the rpm and tpm limits a
    deployment has (1.0 without limits), counted locally; ties go to fewer requests this minute."""

    def order(
        self, group: Sequence[Deployment], runtime: RuntimeState, rng: random.Random, stream: bool
    ) -> list[Deployment]:
        def key(d: Deployment) -> tuple[float, float]:
            stats = runtime.usage(d.id)
            headroom = 1.0
            if d.rpm:
                headroom = min(headroom, 1.0 - stats.requests / d.rpm)
            if d.tpm:
                headroom = min(headroom, 1.0 - stats.tokens / d.tpm)
            return (-headroom, float(stats.requests))

        return _sorted_by(group, rng, key)


DEPLOYMENT_STRATEGIES: dict[str, DeploymentStrategy] = {
    "simple-shuffle": SimpleShuffle(),
    "least-busy": LeastBusy(),
    "latency-based-routing": LatencyBased(),
    "cost-based-routing": CostBased(),
    "usage-based-routing": UsageBased(),
}


def ordered(
    strategy: DeploymentStrategy,
    group: Sequence[Deployment],
    runtime: RuntimeState,
    rng: random.Random,
    stream: bool,
) -> list[Deployment]:
    """The strategy's order, with deployments in cooldown moved to the end (kept: better than nothing)."""
    if len(group) == 1:
        return list(group)
    order = strategy.order(group, runtime, rng, stream)
    cooling = [d for d in order if runtime.cooling(d.id)]
    if not cooling:
        return order
    return [d for d in order if not runtime.cooling(d.id)] + cooling
