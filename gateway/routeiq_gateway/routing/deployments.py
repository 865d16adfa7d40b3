"""Deployments: one configured upstream each, and which path (native, translated or LiteLLM) serves it.

Providers that speak the OpenAI protocol are served by the native pass-through (no per-request LiteLLM cost);
those in TRANSLATED_PROVIDERS by the translation path (providers/translated.py: LiteLLM's transformations on our
own transport); every other provider goes through litellm.acompletion. The choice is made once, when config is
loaded, and shows in x-routeiq-provider-path and the span's routeiq.provider_path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from routeiq_shared.config_schema import ModelEntry, RouterSettings

from routeiq_gateway.request_fields import DEFAULTABLE_PARAMS

# LiteLLM provider prefixes whose wire protocol is OpenAI's own.
NATIVE_PROVIDERS = frozenset({"openai", "hosted_vllm", "custom_openai", "openai_like"})
# Providers whose request and answer are a mapping LiteLLM's transformation classes make (providers/translated.py).
# Not here, on purpose: providers whose requests need signing (bedrock/ SigV4, vertex_ai/ OAuth), which stay on
# litellm.acompletion.
TRANSLATED_PROVIDERS = frozenset({"anthropic", "gemini"})
# Where a translated deployment without api_base is served (as LiteLLM's transformations build the URL).
TRANSLATED_DEFAULT_BASES = {
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
}
# litellm_params (beyond request parameters) the translation path carries out as LiteLLM would; a deployment with
# any other (a custom_llm_provider, vertex settings, …) stays on litellm.acompletion.
TRANSLATED_SETTINGS = frozenset({"drop_params", "headers", "extra_headers", "ssl_verify"})
OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
# Keys of litellm_params that describe the deployment rather than the call.
_ROUTING_KEYS = frozenset(
    {"model", "api_base", "api_key", "timeout", "stream_timeout", "max_retries", "rpm", "tpm", "weight"}
)


@dataclass(frozen=True, slots=True)
class Deployment:
    model_name: str
    litellm_model: str
    provider: str
    native: bool
    upstream_model: str
    api_base: str | None
    api_key: str | None
    timeout: float
    stream_timeout: float
    headers: tuple[tuple[str, str], ...]
    extra_params: tuple[tuple[str, Any], ...]
    # litellm_params that are request parameters (temperature, max_tokens, …; on the native path also extra_body's
    # fields): the request's own value wins, these fill in what it leaves out, as LiteLLM's router does.
    body_defaults: tuple[tuple[str, Any], ...] = ()
    id: str = ""  # stable across reloads: keys the runtime state (runtime.py)
    weight: float | None = None  # simple-shuffle: `weight`, else rpm, else tpm; None = uniform
    rpm: int | None = None
    tpm: int | None = None
    input_cost: float | None = None  # per token, from model_info
    output_cost: float | None = None
    max_input_tokens: int | None = None  # the context window, filled only for enable_pre_call_checks
    ssl_verify: bool | str = True  # litellm_params.ssl_verify: TLS verification on, off, or a CA bundle's path
    translated: bool = False  # served by providers/translated.py (never together with `native`)

    @property
    def path_name(self) -> str:
        return "native" if self.native else "translated" if self.translated else "litellm"

    def url(self, endpoint: str) -> str:
        return f"{(self.api_base or OPENAI_DEFAULT_BASE).rstrip('/')}/{endpoint}"

    def origin_url(self) -> str:
        """A URL on the origin (scheme, host, port) RouteIQ's own client reaches this deployment at."""
        if self.translated and not self.api_base:
            return TRANSLATED_DEFAULT_BASES.get(self.provider, OPENAI_DEFAULT_BASE)
        return self.url("chat/completions")


def split_provider(model: str) -> tuple[str, str]:
    provider, sep, rest = model.partition("/")
    return (provider, rest) if sep else ("openai", model)


def deployment_id(model_name: str, litellm_model: str, api_base: str | None) -> str:
    """What identifies a deployment across config reloads. Never the api_key: ids show in logs and state."""
    raw = "\x00".join((model_name, litellm_model, api_base or ""))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)


def _native_headers(params: Any, extra: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The native path's static request headers; litellm_params' extra_headers / headers as LiteLLM sends them."""
    headers: dict[str, tuple[str, str]] = {"content-type": ("content-type", "application/json")}
    if params.api_key:
        headers["authorization"] = ("authorization", f"Bearer {params.api_key}")
    if params.organization:
        headers["openai-organization"] = ("openai-organization", params.organization)
    for key in ("headers", "extra_headers"):  # extra_headers last: it wins, as in LiteLLM
        value = extra.get(key)
        if isinstance(value, dict):
            for name, item in value.items():
                if str(name).lower() not in ("host", "content-length"):  # framing stays the client's own
                    headers[str(name).lower()] = (str(name), str(item))
    return tuple(headers.values())


def _body_defaults(extra: dict[str, Any], native: bool) -> tuple[tuple[str, Any], ...]:
    defaults = {k: v for k, v in extra.items() if k in DEFAULTABLE_PARAMS}
    body = extra.get("extra_body")
    if native and isinstance(body, dict):
        # LiteLLM merges extra_body into an OpenAI-protocol request body; so does the native path.
        defaults = {**{k: v for k, v in body.items() if isinstance(k, str) and k != "model"}, **defaults}
    return tuple(defaults.items())


def build_deployment(entry: ModelEntry, router: RouterSettings) -> Deployment:
    params = entry.litellm_params
    provider, upstream_model = split_provider(params.model)
    extra = params.model_dump(exclude_none=True)
    native = provider in NATIVE_PROVIDERS
    timeout = params.timeout or router.timeout
    weight = _number(extra.get("weight"))
    if weight is None:
        weight = _number(params.rpm) if params.rpm else _number(params.tpm) if params.tpm else None
    info = entry.model_info
    extra_params = tuple((k, v) for k, v in extra.items() if k not in _ROUTING_KEYS and k != "organization")
    translated = provider in TRANSLATED_PROVIDERS and all(
        k in TRANSLATED_SETTINGS or k in DEFAULTABLE_PARAMS for k, _ in extra_params
    )
    return Deployment(
        model_name=entry.model_name,
        litellm_model=params.model,
        provider=provider,
        native=native,
        upstream_model=upstream_model,
        api_base=params.api_base,
        api_key=params.api_key,
        timeout=timeout,
        stream_timeout=params.stream_timeout or router.stream_timeout or timeout,
        headers=_native_headers(params, extra),
        extra_params=extra_params,
        body_defaults=_body_defaults(extra, native),
        id=deployment_id(entry.model_name, params.model, params.api_base),
        weight=weight,
        rpm=params.rpm,
        tpm=params.tpm,
        ssl_verify=params.ssl_verify if params.ssl_verify is not None else True,
        input_cost=_number(info.get("input_cost_per_token")),
        output_cost=_number(info.get("output_cost_per_token")),
        translated=translated,
    )
