"""Virtual models (`routeiq.routers`): a request for e.g. `auto` is sent to one of the router's candidates,
chosen by its strategy.

Strategies (RouterSpec.strategy; candidates are listed cheapest first):
  learned  the artifact's scorer: the strongest candidate iff score >= threshold (config's `threshold`, else the
           artifact's default_threshold), else the cheapest; a legacy artifact's predict() names the candidate.
  cost     the cheapest candidate (llm_candidates.json input+output price) whose predicted quality clears the
           threshold: with a binary scorer, the cheapest unless score >= threshold; without an artifact, the
           cheapest.
  latency  the candidate group with the lowest measured EWMA latency (unmeasured first, so each gets measured).
  random   weighted by `weights` (uniform without).
  custom   `import_path` names a class (instantiated once per config load with `params` as keyword arguments)
           or a function; either is called with (text, candidates) and returns a candidate's name.
When a strategy cannot answer (model missing or failing to score, custom router failing to import or raising,
a choice that is not a candidate), `fallback` answers — a strategy (cost, latency, random) or a model group,
by default `default` or the first candidate — and the decision says why (fallback_reason).

A RouterPlan is built once per config load (state.py) and never mutated; what it measures lives in the
RuntimeState and the ScoringRunner, which outlive reloads. A router with `arms` (A/B, canary) holds one plan per
arm; `for_caller` picks the caller's (arms.py) before deciding.
"""

from __future__ import annotations

import importlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from routeiq_shared.config_schema import FALLBACK_STRATEGIES, Candidate, RouterSpec

from routeiq_gateway.routing.arms import ArmSplit
from routeiq_gateway.routing.deployments import Deployment
from routeiq_gateway.routing.offloop import ScoringRunner
from routeiq_gateway.routing.router_models import LoadedModel
from routeiq_gateway.routing.runtime import RuntimeState

log = logging.getLogger("routeiq.gateway.routers")

MAX_ROUTING_TEXT = 4096  # characters of prompt the router reads; the tail of a long prompt adds little
DEFAULT_THRESHOLD = 0.5  # when neither config nor artifact gives one
_INF = float("inf")


@dataclass(frozen=True, slots=True)
class Decision:
    group: str
    router: str
    version: str | None  # the artifact version that chose (or was asked), None when there was none
    reason: str  # "model" / "strategy" when the strategy answered, else why the fallback did (= fallback_reason)
    strategy: str = "learned"  # the router's configured strategy
    score: float | None = None  # the scorer's score for the strong model, when one was computed
    fallback_reason: str | None = None  # no_model, no_text, predict_failed, score_failed, unknown_choice, ...
    answered_by: str = ""  # the strategy (or "group") that chose in the end


def prompt_text(body: Mapping[str, Any]) -> str:
    """What the router reads: the last user message of a chat (text parts only), or a completion's prompt."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for msg in reversed(messages):
            if isinstance(msg, dict) and msg.get("role") == "user":
                return _text_of(msg.get("content"))[:MAX_ROUTING_TEXT]
        return ""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = " ".join(p for p in prompt if isinstance(p, str))
    return prompt[:MAX_ROUTING_TEXT] if isinstance(prompt, str) else ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # Only string texts: the edge checks parts, but a router must never be the thing that fails a request.
        texts = (p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text")
        return " ".join(t for t in texts if isinstance(t, str))
    return ""


def candidate_prices(candidates: Mapping[str, Candidate], groups: Sequence[str]) -> dict[str, float | None]:
    """Price per group from llm_candidates.json: the entry named after the group, else one whose model is it."""
    by_model = {c.model: c for c in candidates.values()}
    out: dict[str, float | None] = {}
    for group in groups:
        cand = candidates.get(group) or by_model.get(group)
        out[group] = None if cand is None else cand.input_price + cand.output_price
    return out


def _is_scorer_artifact(model: Any) -> bool:
    return callable(getattr(getattr(model, "scorer", None), "score", None))


def _score_many(model: Any) -> Callable[[list[str]], list[float]]:
    scorer = model.scorer

    def score(texts: list[str]) -> list[float]:
        return [float(v) for v in scorer.score(texts)]

    return score


def _predict_many(model: Any) -> Callable[[list[str]], list[str]]:
    def predict(texts: list[str]) -> list[str]:
        return [str(v) for v in model.predict(texts)]

    return predict


class CannotAnswer(Exception):
    """A strategy could not choose; `reason` says why (it becomes the decision's fallback_reason)."""

    def __init__(self, reason: str, score: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.score = score


@dataclass(frozen=True, slots=True)
class RoutingContext:
    """What a strategy may read for one request."""

    body: Mapping[str, Any]
    loaded: LoadedModel | None  # the router's model, when it has one and it is loaded
    groups: Mapping[str, tuple[Deployment, ...]]
    runtime: RuntimeState
    runner: ScoringRunner
    rng: random.Random
    fallback: bool = False  # answering as a fallback: a model the strategy would use has failed already


class RouterStrategy(Protocol):
    async def choose(self, plan: RouterPlan, ctx: RoutingContext) -> tuple[str, float | None]:
        """(the chosen candidate, the score when one was computed); raises CannotAnswer."""
        ...


def _threshold(plan: RouterPlan, model: Any) -> float:
    if plan.spec.threshold is not None:
        return plan.spec.threshold
    default = getattr(model, "default_threshold", None)
    return float(default) if isinstance(default, int | float) else DEFAULT_THRESHOLD


async def _model_choice(plan: RouterPlan, ctx: RoutingContext) -> tuple[str | None, float | None, Any]:
    """Ask the router's model: (a legacy model's named choice or None, a scorer's score or None, the model)."""
    loaded = ctx.loaded
    if loaded is None:
        raise CannotAnswer("no_model")
    text = prompt_text(ctx.body)
    if not text:
        raise CannotAnswer("no_text")
    model = loaded.model
    if not _is_scorer_artifact(model):  # legacy: the estimator names the candidate itself
        try:
            choice = await ctx.runner.run_batched(("predict", loaded.name, loaded.version), _predict_many(model), text)
        except Exception:  # noqa: BLE001 — a model that cannot score this prompt must not fail the request
            raise CannotAnswer("predict_failed") from None
        if choice not in plan.spec.candidates:
            raise CannotAnswer("unknown_choice")
        return choice, None, model
    try:
        score = await ctx.runner.run_batched(("score", loaded.name, loaded.version), _score_many(model), text)
    except Exception:  # noqa: BLE001 — as above
        raise CannotAnswer("score_failed") from None
    if not 0.0 <= score <= 1.0:  # NaN fails this too
        raise CannotAnswer("score_failed")
    return None, score, model


class Learned:
    """The strongest candidate (last) iff score >= threshold, else the cheapest (first)."""

    async def choose(self, plan: RouterPlan, ctx: RoutingContext) -> tuple[str, float | None]:
        choice, score, model = await _model_choice(plan, ctx)
        if choice is not None or score is None:
            return choice or plan.spec.candidates[0], None
        candidates = plan.spec.candidates
        return (candidates[-1] if score >= _threshold(plan, model) else candidates[0]), score


class Cost:
    """The cheapest candidate whose predicted quality clears the threshold (cheapest without a model)."""

    async def choose(self, plan: RouterPlan, ctx: RoutingContext) -> tuple[str, float | None]:
        if plan.spec.artifact is None or ctx.fallback:
            return plan.by_price[0], None
        choice, score, model = await _model_choice(plan, ctx)
        if choice is not None or score is None:
            return choice or plan.by_price[0], None
        # A binary scorer: the weak (cheapest) one clears unless the prompt needs the strong one.
        return (plan.by_price[-1] if score >= _threshold(plan, model) else plan.by_price[0]), score


class Latency:
    """The candidate group with the lowest EWMA latency; a group with an unmeasured deployment first."""

    async def choose(self, plan: RouterPlan, ctx: RoutingContext) -> tuple[str, float | None]:
        runtime, groups = ctx.runtime, ctx.groups

        def group_latency(name: str) -> float:
            values = [runtime.get(d.id).latency for d in groups.get(name, ())]
            if any(v is None for v in values):
                return -1.0  # a deployment not measured yet: try it, so it gets measured
            return min((v for v in values if v is not None), default=_INF)

        shuffled = list(plan.spec.candidates)
        ctx.rng.shuffle(shuffled)  # ties at random
        return min(shuffled, key=group_latency), None


class RandomStrategy:
    """Weighted by `weights` (uniform without)."""

    async def choose(self, plan: RouterPlan, ctx: RoutingContext) -> tuple[str, float | None]:
        return ctx.rng.choices(plan.spec.candidates, weights=plan.weights)[0], None


class Custom:
    """The callable `import_path` names, called with (text, candidates)."""

    async def choose(self, plan: RouterPlan, ctx: RoutingContext) -> tuple[str, float | None]:
        if plan.custom is None:
            raise CannotAnswer("import_failed")
        router, candidates = plan.custom, list(plan.spec.candidates)
        try:
            choice = await ctx.runner.run(
                ("custom", plan.spec.name, id(router)), lambda t: router(t, candidates), prompt_text(ctx.body)
            )
        except Exception:  # a custom router's bug must not fail the request: logged with its traceback
            log.warning(
                "Custom router raised; its fallback answers",
                extra={"event": "router_fallback", "router": plan.spec.name, "reason": "custom_failed"},
                exc_info=True,
            )
            raise CannotAnswer("custom_failed") from None
        if not isinstance(choice, str) or choice not in candidates:
            raise CannotAnswer("unknown_choice")
        return choice, None


ROUTER_STRATEGIES: dict[str, RouterStrategy] = {
    "learned": Learned(),
    "cost": Cost(),
    "latency": Latency(),
    "random": RandomStrategy(),
    "custom": Custom(),
}


@dataclass(frozen=True, slots=True)
class RouterPlan:
    spec: RouterSpec
    strategy: str
    by_price: tuple[str, ...]  # candidates cheapest first (unknown prices last, in config order)
    weights: tuple[float, ...]  # random: per candidate
    custom: Callable[[str, list[str]], Any] | None = None
    arms: ArmSplit | None = None  # A/B or canary: which of arm_plans serves a caller; None without arms
    arm_plans: tuple[RouterPlan, ...] = ()

    def for_caller(self, caller: bytes | None, rng: random.Random) -> tuple[RouterPlan, str]:
        """(the plan that decides for this caller, its arm's name or "" without arms)."""
        if self.arms is None:
            return self, ""
        index = self.arms.pick(caller, rng)
        return self.arm_plans[index], self.arms.names[index]

    async def decide(
        self,
        body: Mapping[str, Any],
        models: Mapping[str, LoadedModel],
        groups: Mapping[str, tuple[Deployment, ...]],
        runtime: RuntimeState,
        runner: ScoringRunner,
        rng: random.Random,
    ) -> Decision:
        spec = self.spec
        loaded = models.get(spec.artifact) if spec.artifact is not None else None
        version = loaded.version if loaded is not None else None
        ctx = RoutingContext(body, loaded, groups, runtime, runner, rng)
        try:
            group, score = await ROUTER_STRATEGIES[self.strategy].choose(self, ctx)
        except CannotAnswer as why:
            group, by = await self._fallback(ctx)
            return Decision(group, spec.name, version, why.reason, self.strategy, why.score, why.reason, by)
        reason = "model" if loaded is not None else "strategy"
        return Decision(group, spec.name, version, reason, self.strategy, score, None, self.strategy)

    async def _fallback(self, ctx: RoutingContext) -> tuple[str, str]:
        """(the group, what chose it): the fallback strategy, without a model, or the fallback group."""
        name = self.spec.fallback
        if name in FALLBACK_STRATEGIES:
            fallback_ctx = RoutingContext(ctx.body, None, ctx.groups, ctx.runtime, ctx.runner, ctx.rng, True)
            group, _ = await ROUTER_STRATEGIES[name].choose(self, fallback_ctx)
            return group, name
        return self.spec.fallback_group, "group"


def load_custom(import_path: str, params: Mapping[str, Any]) -> Callable[[str, list[str]], Any]:
    """Import `package.module:attr`; a class is instantiated with `params` (keyword arguments), a function is
    used as it is. Raises what the import or the constructor raised, or TypeError if the result is not callable."""
    module_name, _, attr = import_path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if isinstance(target, type):
        target = target(**params)
    if not callable(target):
        raise TypeError(f"{import_path} is not callable")
    return target  # type: ignore[no-any-return]


def build_plan(spec: RouterSpec, candidates: Mapping[str, Candidate]) -> RouterPlan:
    """One router's plan for one config load. A custom router that does not import is logged and recorded:
    the config still loads, and its fallback answers. A router with arms gets one plan per arm."""
    if spec.arms is not None:
        arm_plans = tuple(build_plan(arm, candidates) for arm in spec.arm_specs())
        split = ArmSplit.of(spec.name, [(arm.name, arm.weight) for arm in spec.arms])
        first = arm_plans[0]
        return RouterPlan(spec, "arms", first.by_price, first.weights, arms=split, arm_plans=arm_plans)
    prices = candidate_prices(candidates, spec.candidates)
    order = {name: i for i, name in enumerate(spec.candidates)}
    by_price = tuple(sorted(spec.candidates, key=lambda n: (prices[n] is None, prices[n] or 0.0, order[n])))
    weights = tuple((spec.weights or {}).get(n, 0.0) if spec.weights else 1.0 for n in spec.candidates)
    strategy = spec.effective_strategy
    custom: Callable[[str, list[str]], Any] | None = None
    if strategy == "custom" and spec.import_path is not None:
        try:
            custom = load_custom(spec.import_path, spec.params)
        except Exception as exc:  # noqa: BLE001 — any failure of foreign code at load means: use the fallback
            log.error(
                "Custom router could not be loaded; its fallback answers",
                extra={
                    "event": "router_load",
                    "router": spec.name,
                    "import_path": spec.import_path,
                    "reason": f"{type(exc).__name__}: {exc}",
                    "fallback": spec.fallback or spec.fallback_group,
                },
            )
    return RouterPlan(spec, strategy, by_price, weights, custom)
