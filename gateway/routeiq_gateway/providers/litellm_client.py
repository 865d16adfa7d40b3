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
from routeiq_gateway.providers.litellm_errors import to_gateway_error
from routeiq_gateway.providers.litellm_logging import quiet_litellm
from routeiq_gateway.providers.relayed_headers import from_litellm_additional
from routeiq_gateway.request_fields import OPENAI_PARAMS
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

# The client's request fields that reach LiteLLM: OpenAI's parameters, and every field LiteLLM does not take as
# an argument of its own (it hands those to the provider: top-level body fields, or extra_body for
# OpenAI-compatible providers), as extra_body's fields reach the upstream on the native path. A field that is one of
# LiteLLM's own arguments (metadata, mock_response, fallbacks, …) would steer LiteLLM itself, so it is left out;
# the ones that would redirect the call or its credentials are refused before this (request_fields.py).
_NOT_LITELLM_ARGS = frozenset({"extra_body"})


def _litellm_own_args(litellm: Any) -> frozenset[str]:
    import inspect

    names: set[str] = set(inspect.signature(litellm.acompletion).parameters)
    names |= set(inspect.signature(litellm.completion).parameters)
    try:
        from litellm.types.utils import all_litellm_params

        names |= set(all_litellm_params)
    except ImportError:  # an older LiteLLM: its signatures still name the arguments that matter
        pass
    return frozenset(names - OPENAI_PARAMS) | _NOT_LITELLM_ARGS


_to_gateway_error = to_gateway_error  # the name the unit tests know


def _dump(obj: Any) -> dict[str, Any]:
    return obj.model_dump(exclude_none=True) if hasattr(obj, "model_dump") else dict(obj)


def _headers_of(result: Any) -> tuple[tuple[bytes, bytes], ...]:
    hidden = getattr(result, "_hidden_params", None)
    return from_litellm_additional(hidden.get("additional_headers")) if isinstance(hidden, dict) else ()


def _is_empty_choice(choice: Any) -> bool:
    return isinstance(choice, dict) and not choice.get("delta") and choice.get("finish_reason") is None


class LiteLLMStream:
    """LiteLLM's chunks as OpenAI's events. The usage travels as OpenAI sends it: alone, in a last chunk whose
    `choices` is empty, and only when the request asked for it (stream_options.include_usage)."""

    __slots__ = ("_dep", "_include_usage", "_it", "headers", "usage")

    def __init__(self, it: Any, dep: Deployment | None = None, include_usage: bool = False) -> None:
        self._it = it
        self._dep = dep
        self._include_usage = include_usage
        self.usage: dict[str, Any] | None = None
        self.headers = _headers_of(it)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._it:
                data = _dump(chunk)
                usage = data.pop("usage", None)
                if usage:
                    self.usage = usage
                choices = data.get("choices")
                if not choices or all(_is_empty_choice(c) for c in choices):
                    if usage and self._include_usage:
                        yield json_event({**data, "choices": [], "usage": usage})
                    continue  # nothing for the client but the usage
                yield json_event(data)
                if usage and self._include_usage:
                    yield json_event({**data, "choices": [], "usage": usage})
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


def with_deployment(kwargs: dict[str, Any], dep: Deployment, stream: bool, traceparent: str | None) -> None:
    """What every LiteLLM call takes from the deployment alone: its model, timeout and credentials, and the
    traceparent naming our span (added to the deployment's own extra_headers)."""
    kwargs.update(model=dep.litellm_model, timeout=dep.stream_timeout if stream else dep.timeout)
    if dep.api_base:
        kwargs["api_base"] = dep.api_base
    if dep.api_key:
        kwargs["api_key"] = dep.api_key
    if traceparent:
        kwargs["extra_headers"] = {**kwargs.get("extra_headers", {}), "traceparent": traceparent}


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
        self._own_args = _litellm_own_args(litellm)
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
        # The deployment's request parameters are defaults under the client's; its other settings (credentials,
        # drop_params, extra_headers, …) are the deployment's alone.
        own = self._own_args
        kwargs: dict[str, Any] = dict(dep.body_defaults)
        kwargs.update((k, v) for k, v in body.items() if k not in own)
        kwargs.update((k, v) for k, v in dep.extra_params if k not in OPENAI_PARAMS)
        with_deployment(kwargs, dep, stream, traceparent)
        kwargs["num_retries"] = 0  # RouteIQ retries and falls back itself (dispatcher.py)
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
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return LiteLLMStream(result, dep, include_usage)
        data = _dump(result)
        return Completed(orjson.dumps(data), data.get("usage"), headers=_headers_of(result))
