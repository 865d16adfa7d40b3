"""Which deployment serves a request, and what happens when it fails: the group's deployments in the order of
its deployment strategy (routing/deployment_strategies.py), retried with jittered exponential backoff, then the
group's fallbacks (router_settings.routing_strategy / num_retries / retry_after / fallbacks).

What the strategies measure (latency, time to first token, in-flight, usage, failures) is recorded here into
the process's RuntimeState, only when the config has a strategy that reads it (`state.measure`): the default
single-deployment path does no bookkeeping at all.

Only failures another attempt may cure are retried (timeouts, resets, 429, 5xx); a 4xx is the request's own fault.

Every attempt's outcome also feeds its deployment's circuit breaker (routing/runtime.py): failures, and answers
slower than `routeiq.breakers.deployment_latency_budget_seconds`, count; a success closes a half-open one. The
span says which deployments were kept back and why (`routeiq.breaker.open`, `routeiq.breaker.reasons`) and when
an attempt opened a breaker (event `circuit_breaker_opened`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span

from routeiq_gateway.dispatch import precall
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.providers import Completed, Provider, Streaming
from routeiq_gateway.routing.deployment_strategies import DEPLOYMENT_STRATEGIES, ordered
from routeiq_gateway.routing.deployments import Deployment
from routeiq_gateway.routing.runtime import RuntimeState
from routeiq_gateway.state import GatewayState

MAX_BACKOFF_SECONDS = 5.0


@dataclass(slots=True)
class Outcome:
    deployment: Deployment
    result: Completed | Streaming
    attempts: int
    started: float = 0.0  # perf_counter when the successful attempt began
    held: bool = field(default=False)  # a stream still counted in flight: release with Dispatcher.stream_ended


def backoff_seconds(base: float, attempt: int, rng: random.Random) -> float:
    """Full-jitter exponential backoff (attempt counts from 1): uniform over [0, the capped exponential]."""
    return rng.uniform(0.0, min(MAX_BACKOFF_SECONDS, base * (2 ** (attempt - 1))))


def attempt_plan(
    state: GatewayState,
    model: str,
    rng: random.Random,
    runtime: RuntimeState | None = None,
    stream: bool = False,
    tokens: int | None = None,
) -> list[Deployment]:
    """Deployments in the order to try them: the group in its strategy's order (cycled for the retries), then
    each fallback group the same way. With `tokens` (pre-call checks), only deployments whose context window
    holds them; none at all is a 400 (precall.py)."""
    strategy = DEPLOYMENT_STRATEGIES[state.routing_strategy]
    runtime = runtime if runtime is not None else RuntimeState()
    plan: list[Deployment] = []
    tries = state.num_retries + 1
    considered: list[Deployment] = []
    for group_name in (model, *state.fallbacks.get(model, ())):
        order = ordered(strategy, state.group(group_name) or (), runtime, rng, stream)
        if tokens is not None:
            considered += order
            order = [d for d in order if precall.fits(d, tokens)]
            if not order:
                continue
        if runtime.unhealthy:
            # Open deployments are skipped while a peer of the group is not; with all open, all are tried.
            order = [d for d in order if not runtime.cooling(d.id)] or order
        plan.extend(order[i % len(order)] for i in range(tries))
    if not plan and tokens is not None:
        raise precall.too_long(considered, tokens)
    return plan


class Dispatcher:
    def __init__(
        self,
        native: Provider,
        litellm: Provider | None,
        metrics: GatewayMetrics,
        runtime: RuntimeState | None = None,
        translated: Provider | None = None,
    ) -> None:
        self.native = native
        self.litellm = litellm
        self.translated = translated  # providers/translated.py; loaded with LiteLLM (it uses its transformations)
        self.metrics = metrics
        self.runtime = runtime if runtime is not None else RuntimeState()
        self.rng = random.Random()

    def provider_for(self, dep: Deployment) -> Provider:
        if dep.native:
            return self.native
        provider = self.translated if dep.translated else self.litellm
        if provider is None:
            raise GatewayError(503, "The LiteLLM provider layer is not loaded yet.", code="provider_unavailable")
        return provider

    async def send(
        self,
        state: GatewayState,
        model: str,
        endpoint: str,
        body: dict[str, Any],
        stream: bool,
        traceparent: str | None,
        span: Span,
        provider: Provider | None = None,  # serves this endpoint on every path (providers/surface.py); None: by path
    ) -> Outcome:
        group = state.group(model) or ()
        measure = state.measure
        tokens = precall.tokens_or_none(body) if state.pre_call_checks else None
        if state.num_retries == 0 and len(group) == 1 and model not in state.fallbacks and tokens is None:
            plan: Sequence[Deployment] = group  # the common case, without building a plan
        else:
            plan = attempt_plan(state, model, self.rng, self.runtime, stream, tokens)
        runtime = self.runtime
        if runtime.unhealthy:
            self._note_open(span, group, runtime)
        budget = state.deployment_latency_budget
        timed = measure or budget is not None
        last: GatewayError | None = None
        for i, dep in enumerate(plan):
            if i:
                self.metrics.retries.labels(model).inc()
                await asyncio.sleep(backoff_seconds(state.retry_backoff, i, self.rng))
            started = 0.0
            if timed:
                started = time.perf_counter()
            if measure:
                runtime.started(dep.id)
            runtime.attempting(dep.id)
            try:
                result = await (provider or self.provider_for(dep)).call(dep, endpoint, body, stream, traceparent)
            except GatewayError as exc:
                if state.cooldown_seconds > 0:
                    reason = exc.code or str(exc.status)
                    if runtime.failed(dep.id, state.allowed_fails, state.cooldown_seconds, reason):
                        self._opened(span, dep)
                if measure:
                    runtime.finished(dep.id)
                self._record_failure(span, model, dep, exc)
                if not exc.retryable:
                    raise
                last = exc
                continue
            except BaseException:
                if measure:
                    runtime.finished(dep.id)
                raise
            if budget is not None and time.perf_counter() - started > budget:
                # Answered, but too slowly: counts against the deployment like a failure would.
                if state.cooldown_seconds > 0 and runtime.failed(
                    dep.id, state.allowed_fails, state.cooldown_seconds, f"slower than {budget:g} s"
                ):
                    self._opened(span, dep)
            else:
                runtime.ok(dep.id)
            if dep.model_name != model:
                self.metrics.fallbacks.labels(model, dep.model_name).inc()
            held = False
            if measure:
                if isinstance(result, Completed):
                    runtime.succeeded(dep.id, time.perf_counter() - started, stream=False)
                    runtime.finished(dep.id)
                else:
                    held = True  # in flight until the stream ends; its first chunk gives the time to first token
            return Outcome(dep, result, i + 1, started, held)
        assert last is not None  # the plan is never empty: every group has a deployment
        raise last

    def first_chunk(self, outcome: Outcome) -> None:
        if outcome.held:
            self.runtime.succeeded(outcome.deployment.id, time.perf_counter() - outcome.started, stream=True)

    def stream_ended(self, outcome: Outcome) -> None:
        if outcome.held:
            outcome.held = False
            self.runtime.finished(outcome.deployment.id)

    def add_tokens(self, state: GatewayState, outcome: Outcome, usage: object) -> None:
        if state.measure and isinstance(usage, dict):
            total = usage.get("total_tokens")
            if isinstance(total, int) and total > 0:
                self.runtime.add_tokens(outcome.deployment.id, total)

    def _note_open(self, span: Span, group: Sequence[Deployment], runtime: RuntimeState) -> None:
        kept_back = {d.id: d for d in group if runtime.cooling(d.id)}
        if kept_back:
            span.set_attribute("routeiq.breaker.open", [d.litellm_model for d in kept_back.values()])
            span.set_attribute("routeiq.breaker.reasons", [runtime.reason(i) for i in kept_back])

    def _opened(self, span: Span, dep: Deployment) -> None:
        span.add_event(
            "circuit_breaker_opened",
            {"deployment": dep.litellm_model, "deployment_id": dep.id, "reason": self.runtime.reason(dep.id)},
        )

    def _record_failure(self, span: Span, model: str, dep: Deployment, exc: GatewayError) -> None:
        reason = exc.code or str(exc.status)
        span.add_event(
            "upstream_attempt_failed", {"deployment": dep.litellm_model, "status": exc.status, "reason": reason}
        )
        self.metrics.upstream_errors.labels(model, reason).inc()
