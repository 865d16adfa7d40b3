"""Which deployment serves a request, and what happens when it fails: retries with jittered exponential backoff
within the model group, then the group's fallbacks (router_settings.num_retries / retry_after / fallbacks).

Only failures another attempt may cure are retried (timeouts, resets, 429, 5xx); a 4xx is the request's own fault.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Span

from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.providers import Completed, Provider, Streaming
from routeiq_gateway.routing.deployments import Deployment
from routeiq_gateway.state import GatewayState

MAX_BACKOFF_SECONDS = 5.0


@dataclass(slots=True)
class Outcome:
    deployment: Deployment
    result: Completed | Streaming
    attempts: int


def backoff_seconds(base: float, attempt: int, rng: random.Random) -> float:
    """Full-jitter exponential backoff (attempt counts from 1): uniform over [0, the capped exponential]."""
    return rng.uniform(0.0, min(MAX_BACKOFF_SECONDS, base * (2 ** (attempt - 1))))


def attempt_plan(state: GatewayState, model: str, rng: random.Random) -> list[Deployment]:
    """Deployments in the order to try them: the group (shuffled start, then its peers), then each fallback."""
    plan: list[Deployment] = []
    for group_name in (model, *state.fallbacks.get(model, ())):
        group = state.groups[group_name]
        start = rng.randrange(len(group)) if len(group) > 1 else 0
        tries = state.num_retries + 1
        plan.extend(group[(start + i) % len(group)] for i in range(tries))
    return plan


class Dispatcher:
    def __init__(self, native: Provider, litellm: Provider | None, metrics: GatewayMetrics) -> None:
        self.native = native
        self.litellm = litellm
        self.metrics = metrics
        self.rng = random.Random()

    def provider_for(self, dep: Deployment) -> Provider:
        if dep.native:
            return self.native
        if self.litellm is None:
            raise GatewayError(503, "The LiteLLM provider layer is not loaded yet.", code="provider_unavailable")
        return self.litellm

    async def send(
        self,
        state: GatewayState,
        model: str,
        endpoint: str,
        body: dict[str, Any],
        stream: bool,
        traceparent: str | None,
        span: Span,
    ) -> Outcome:
        group = state.groups[model]
        if state.num_retries == 0 and len(group) == 1 and model not in state.fallbacks:
            plan: list[Deployment] | tuple[Deployment, ...] = group  # the common case, without building a plan
        else:
            plan = attempt_plan(state, model, self.rng)
        last: GatewayError | None = None
        for i, dep in enumerate(plan):
            if i:
                self.metrics.retries.labels(model).inc()
                await asyncio.sleep(backoff_seconds(state.retry_backoff, i, self.rng))
            try:
                result = await self.provider_for(dep).call(dep, endpoint, body, stream, traceparent)
            except GatewayError as exc:
                self._record_failure(span, model, dep, exc)
                if not exc.retryable:
                    raise
                last = exc
                continue
            if dep.model_name != model:
                self.metrics.fallbacks.labels(model, dep.model_name).inc()
            return Outcome(dep, result, i + 1)
        assert last is not None  # the plan is never empty: every group has a deployment
        raise last

    def _record_failure(self, span: Span, model: str, dep: Deployment, exc: GatewayError) -> None:
        reason = exc.code or str(exc.status)
        span.add_event(
            "upstream_attempt_failed", {"deployment": dep.litellm_model, "status": exc.status, "reason": reason}
        )
        self.metrics.upstream_errors.labels(model, reason).inc()
