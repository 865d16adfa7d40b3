"""Every provider that does not speak the OpenAI protocol (anthropic/, bedrock/, vertex_ai/, azure/, …), via LiteLLM.

LiteLLM is imported only when a loaded config has such a deployment: it costs seconds of start-up and memory.
Retries are ours (dispatch.py), so LiteLLM's own are switched off per call.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import orjson

from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.providers import Completed
from routeiq_gateway.routing.deployments import Deployment

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


def _to_gateway_error(exc: Exception) -> GatewayError:
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", "") or exc)[:500]
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
    __slots__ = ("_it", "usage")

    def __init__(self, it: Any) -> None:
        self._it = it
        self.usage: dict[str, Any] | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._it:
                data = _dump(chunk)
                if data.get("usage"):
                    self.usage = data["usage"]
                yield b"data: " + orjson.dumps(data) + b"\n\n"
        except GatewayError:
            raise
        except Exception as exc:  # noqa: BLE001 — LiteLLM raises provider errors of many classes; all map to one error shape
            raise _to_gateway_error(exc) from None
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        close = getattr(self._it, "aclose", None)
        if close is not None:
            await close()


class LiteLLMProvider:
    def __init__(self) -> None:
        # Use the cost map bundled with the package instead of fetching it at import (no network in a pod).
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        litellm.telemetry = False
        self._litellm = litellm

    async def call(
        self, dep: Deployment, endpoint: str, body: dict[str, Any], stream: bool, traceparent: str | None
    ) -> Completed | LiteLLMStream:
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
            raise _to_gateway_error(exc) from None
        if stream:
            return LiteLLMStream(result)
        data = _dump(result)
        return Completed(orjson.dumps(data), data.get("usage"))
