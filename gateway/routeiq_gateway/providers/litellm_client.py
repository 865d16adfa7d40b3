"""Every provider that does not speak the OpenAI protocol (anthropic/, bedrock/, vertex_ai/, azure/, …), via LiteLLM.

LiteLLM is imported only when a loaded config has such a deployment: it costs seconds of start-up and memory.
Retries are ours (dispatch.py), so LiteLLM's own are switched off per call.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import orjson
from routeiq_shared.egress import EgressError, EgressPolicy

from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.http.sse import DONE, json_event
from routeiq_gateway.providers import Completed
from routeiq_gateway.providers.http1 import HeaderInjection, check_header_line
from routeiq_gateway.providers.litellm_logging import quiet_litellm
from routeiq_gateway.providers.scrub import scrub
from routeiq_gateway.routing.deployments import Deployment

# Where LiteLLM sends a provider's calls when the deployment sets no api_base (checked like any other host).
DEFAULT_HOSTS = {
    "anthropic": "api.anthropic.com",
    "mistral": "api.mistral.ai",
    "groq": "api.groq.com",
    "cohere": "api.cohere.ai",
    "cohere_chat": "api.cohere.ai",
    "deepseek": "api.deepseek.com",
    "together_ai": "api.together.xyz",
    "fireworks_ai": "api.fireworks.ai",
    "perplexity": "api.perplexity.ai",
    "xai": "api.x.ai",
}
# LiteLLM connects by name, so the check below cannot pin the address it connects to: a DNS answer that changes
# within this window (rebinding) is not seen. The native path has no such window (it connects to the checked address).
EGRESS_CHECK_TTL_SECONDS = 30.0

# Request fields a client may set on the LiteLLM path. Anything else is dropped: LiteLLM takes api_base, api_key,
# headers, cloud credentials … as call arguments, and a client must never be able to redirect our provider key.
CLIENT_PARAMS = frozenset(
    {
        # chat
        "messages", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
        "max_completion_tokens", "n", "presence_penalty", "response_format", "seed", "stop", "stream",
        "stream_options", "temperature", "top_p", "tools", "tool_choice", "parallel_tool_calls", "user",
        "functions", "function_call", "reasoning_effort", "modalities", "audio", "prediction", "service_tier",
        "top_k", "thinking",
        # completions
        "prompt", "suffix", "echo", "best_of",
        # embeddings
        "input", "dimensions", "encoding_format",
    }
)  # fmt: skip


def _caused_by_transport(exc: BaseException) -> bool:
    """LiteLLM reports a refused or reset connection as a 500 'InternalServerError'; the cause chain tells."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, OSError) or type(seen).__name__ in ("ConnectError", "ReadError", "RemoteProtocolError"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _non_error_status(exc: BaseException) -> int | None:
    """The upstream's status when it answered 1xx/2xx/3xx: LiteLLM wraps that (a 201, a 302 it did not follow) in
    an APIConnectionError with status 500; the provider's own exception in the cause chain keeps the real one."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        status = getattr(seen, "status_code", None)
        if isinstance(status, int) and 100 <= status < 400 and status != 200:
            return status
        seen = seen.__cause__ or seen.__context__
    return None


def _to_gateway_error(exc: Exception, dep: Deployment | None = None) -> GatewayError:
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    # LiteLLM's texts quote the URL it called and sometimes the request's headers: scrubbed before anyone sees them.
    message = scrub(str(getattr(exc, "message", "") or exc), dep)[:500]
    odd = _non_error_status(exc)
    if odd is not None:
        return GatewayError(
            502,
            f"Upstream answered {odd} where 200 was expected; check the deployment's api_base",
            code="upstream_unexpected_status",
        )
    if name == "Timeout" or status == 408:
        return GatewayError(504, "Upstream timed out", code="upstream_timeout", retryable=True)
    if name == "APIConnectionError" or _caused_by_transport(exc):
        return GatewayError(502, "Upstream connection failed", code="upstream_unreachable", retryable=True)
    if status == 429:
        return GatewayError(429, f"Upstream rate limit: {message}", code="upstream_rate_limited", retryable=True)
    if status in (401, 403):
        return GatewayError(502, f"Upstream refused the gateway's credentials ({status})", code="upstream_auth")
    if isinstance(status, int) and 400 <= status < 500:
        return GatewayError(status, message, code="upstream_rejected")
    return GatewayError(502, f"Upstream error: {message}", code="upstream_error", retryable=True)


def _dump(obj: Any) -> dict[str, Any]:
    return obj.model_dump(exclude_none=True) if hasattr(obj, "model_dump") else dict(obj)


class LiteLLMStream:
    __slots__ = ("_dep", "_it", "usage")

    def __init__(self, it: Any, dep: Deployment | None = None) -> None:
        self._it = it
        self._dep = dep
        self.usage: dict[str, Any] | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._it:
                data = _dump(chunk)
                if data.get("usage"):
                    self.usage = data["usage"]
                yield json_event(data)
        except GatewayError:
            raise
        except Exception as exc:  # noqa: BLE001 — LiteLLM raises provider errors of many classes; all map to one error shape
            raise _to_gateway_error(exc, self._dep) from None
        yield DONE

    async def aclose(self) -> None:
        close = getattr(self._it, "aclose", None)
        if close is not None:
            await close()


def _destination(dep: Deployment) -> tuple[str, int] | None:
    if dep.api_base:
        try:
            parts = urlsplit(dep.api_base)
            port = parts.port or (80 if parts.scheme == "http" else 443)
        except ValueError:
            return None  # config validation refuses such a URL; LiteLLM fails on it the same way
        return (parts.hostname, port) if parts.hostname else None
    host = DEFAULT_HOSTS.get(dep.provider)
    return (host, 443) if host else None


def _check_headers(dep: Deployment) -> None:
    """The last line of defence behind config validation: nothing LiteLLM puts on a header line may split it."""
    try:
        if dep.api_key:
            check_header_line("authorization", dep.api_key)
        for key, value in dep.extra_params:
            if key in ("extra_headers", "headers") and isinstance(value, dict):
                for name, item in value.items():
                    check_header_line(str(name), str(item))
    except HeaderInjection as exc:
        raise GatewayError(
            502,
            f"Deployment of '{dep.model_name}' is misconfigured: {exc}",
            code="upstream_misconfigured",
            retryable=True,
        ) from None


class LiteLLMProvider:
    def __init__(self, policy: EgressPolicy | None = None) -> None:
        # Use the cost map bundled with the package instead of fetching it at import (no network in a pod).
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        litellm.telemetry = False
        quiet_litellm(litellm)
        self._litellm = litellm
        self._policy = policy if policy is not None else EgressPolicy()
        self._checked: dict[tuple[str, int], tuple[float, str | None]] = {}  # → (expires, refusal or None)

    def set_policy(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._checked = {}

    async def _check_egress(self, dep: Deployment) -> None:
        dest = _destination(dep)
        if dest is None:
            return
        now = time.monotonic()
        cached = self._checked.get(dest)
        if cached is None or cached[0] < now:
            try:
                await self._policy.resolve(*dest)
                refusal = None
            except EgressError as exc:
                refusal = str(exc)
            except OSError:
                return  # unresolvable now: LiteLLM's own connect fails and says so; nothing is cached
            self._checked[dest] = cached = (now + EGRESS_CHECK_TTL_SECONDS, refusal)
        if cached[1] is not None:
            raise GatewayError(
                502, f"Upstream refused by egress policy: {cached[1]}", code="upstream_forbidden", retryable=True
            )

    async def call(
        self, dep: Deployment, endpoint: str, body: dict[str, Any], stream: bool, traceparent: str | None
    ) -> Completed | LiteLLMStream:
        _check_headers(dep)
        await self._check_egress(dep)
        kwargs: dict[str, Any] = {k: v for k, v in body.items() if k in CLIENT_PARAMS}
        kwargs.update(dep.extra_params)
        kwargs.update(model=dep.litellm_model, timeout=dep.timeout if not stream else dep.stream_timeout, num_retries=0)
        if dep.api_base:
            kwargs["api_base"] = dep.api_base
        if dep.api_key:
            kwargs["api_key"] = dep.api_key
        if traceparent:
            kwargs["extra_headers"] = {**kwargs.get("extra_headers", {}), "traceparent": traceparent}
        fn = {
            "chat/completions": self._litellm.acompletion,
            "completions": self._litellm.atext_completion,
            "embeddings": self._litellm.aembedding,
        }[endpoint]
        try:
            result = await fn(**kwargs)
        except Exception as exc:  # noqa: BLE001 — see LiteLLMStream: every provider error becomes one GatewayError
            raise _to_gateway_error(exc, dep) from None
        if stream:
            return LiteLLMStream(result, dep)
        data = _dump(result)
        return Completed(orjson.dumps(data), data.get("usage"))
