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
RuntimeState and the ScoringRunner, which outlive reloads.
"""

from __future__ import annotations

import importlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from routeiq_shared.config_schema import Candidate, RouterSpec

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


class _Fallback(Exception):
    def __init__(self, reason: str, score: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.score = score


@dataclass(frozen=True, slots=True)
class RouterPlan:
    spec: RouterSpec
    strategy: str
    by_price: tuple[str, ...]  # candidates cheapest first (unknown prices last, in config order)
    weights: tuple[float, ...]  # random: per candidate
    custom: Callable[[str, list[str]], Any] | None = None
    custom_error: str | None = None  # why the custom router could not be loaded (import or instantiation)

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
        try:
            group, score = await self._choose(body, loaded, groups, runtime, runner, rng)
        except _Fallback as why:
            group, by = self._fallback(groups, runtime, rng)
            return Decision(group, spec.name, version, why.reason, self.strategy, why.score, why.reason, by)
        reason = "model" if loaded is not None else "strategy"
        return Decision(group, spec.name, version, reason, self.strategy, score, None, self.strategy)

    async def _choose(
        self,
        body: Mapping[str, Any],
        loaded: LoadedModel | None,
        groups: Mapping[str, tuple[Deployment, ...]],
        runtime: RuntimeState,
        runner: ScoringRunner,
        rng: random.Random,
    ) -> tuple[str, float | None]:
        strategy = self.strategy
        if strategy == "latency":
            return self._latency(groups, runtime, rng), None
        if strategy == "random":
            return self._random(rng), None
        if strategy == "cost" and self.spec.artifact is None:
            return self.by_price[0], None
        if strategy == "custom":
            return await self._custom(body, runner), None
        # learned, or cost with an artifact
        if loaded is None:
            raise _Fallback("no_model")
        text = prompt_text(body)
        if not text:
            raise _Fallback("no_text")
        model = loaded.model
        if not _is_scorer_artifact(model):  # legacy: the estimator names the candidate itself
            try:
                key = ("predict", loaded.name, loaded.version)
                choice = await runner.run_batched(key, _predict_many(model), text)
            except Exception:  # noqa: BLE001 — a model that cannot score this prompt must not fail the request
                raise _Fallback("predict_failed") from None
            if choice not in self.spec.candidates:
                raise _Fallback("unknown_choice")
            return choice, None
        try:
            score = await runner.run_batched(("score", loaded.name, loaded.version), _score_many(model), text)
        except Exception:  # noqa: BLE001 — as above
            raise _Fallback("score_failed") from None
        if not 0.0 <= score <= 1.0:  # NaN fails this too
            raise _Fallback("score_failed", None)
        threshold = self.spec.threshold
        if threshold is None:
            default = getattr(model, "default_threshold", None)
            threshold = float(default) if isinstance(default, int | float) else DEFAULT_THRESHOLD
        if strategy == "cost":
            # The cheapest whose quality clears: the weak one unless the prompt needs the strong one.
            return (self.by_price[-1] if score >= threshold else self.by_price[0]), score
        candidates = self.spec.candidates
        return (candidates[-1] if score >= threshold else candidates[0]), score

    def _latency(self, groups: Mapping[str, tuple[Deployment, ...]], runtime: RuntimeState, rng: random.Random) -> str:
        def group_latency(name: str) -> float:
            values = [runtime.get(d.id).latency for d in groups.get(name, ())]
            if any(v is None for v in values):
                return -1.0  # a deployment not measured yet: try it, so it gets measured
            return min((v for v in values if v is not None), default=_INF)

        shuffled = list(self.spec.candidates)
        rng.shuffle(shuffled)  # ties at random
        return min(shuffled, key=group_latency)

    def _random(self, rng: random.Random) -> str:
        return rng.choices(self.spec.candidates, weights=self.weights)[0]

    async def _custom(self, body: Mapping[str, Any], runner: ScoringRunner) -> str:
        if self.custom is None:
            raise _Fallback("import_failed")
        router, candidates = self.custom, list(self.spec.candidates)
        try:
            choice = await runner.run(
                ("custom", self.spec.name, id(router)), lambda t: router(t, candidates), prompt_text(body)
            )
        except Exception:  # a custom router's bug must not fail the request: logged with its traceback
            log.warning(
                "Custom router raised; its fallback answers",
                extra={"event": "router_fallback", "router": self.spec.name, "reason": "custom_failed"},
                exc_info=True,
            )
            raise _Fallback("custom_failed") from None
        if not isinstance(choice, str) or choice not in self.spec.candidates:
            raise _Fallback("unknown_choice")
        return choice

    def _fallback(
        self, groups: Mapping[str, tuple[Deployment, ...]], runtime: RuntimeState, rng: random.Random
    ) -> tuple[str, str]:
        name = self.spec.fallback
        if name == "cost":
            return self.by_price[0], name
        if name == "latency":
            return self._latency(groups, runtime, rng), name
        if name == "random":
            return self._random(rng), name
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
    the config still loads, and its fallback answers."""
    prices = candidate_prices(candidates, spec.candidates)
    order = {name: i for i, name in enumerate(spec.candidates)}
    by_price = tuple(sorted(spec.candidates, key=lambda n: (prices[n] is None, prices[n] or 0.0, order[n])))
    weights = tuple((spec.weights or {}).get(n, 0.0) if spec.weights else 1.0 for n in spec.candidates)
    strategy = spec.effective_strategy
    custom: Callable[[str, list[str]], Any] | None = None
    error: str | None = None
    if strategy == "custom" and spec.import_path is not None:
        try:
            custom = load_custom(spec.import_path, spec.params)
        except Exception as exc:  # noqa: BLE001 — any failure of foreign code at load means: use the fallback
            error = f"{type(exc).__name__}: {exc}"
            log.error(
                "Custom router could not be loaded; its fallback answers",
                extra={
                    "event": "router_load",
                    "router": spec.name,
                    "import_path": spec.import_path,
                    "reason": error,
                    "fallback": spec.fallback or spec.fallback_group,
                },
            )
    return RouterPlan(spec, strategy, by_price, weights, custom, error)
