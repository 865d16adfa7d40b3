"""The translation path: providers that do not speak OpenAI's protocol, served without `litellm.acompletion`.

LiteLLM stays the source of truth for each provider's request and answer (its per-provider transformation and
stream chunk parser: translate_anthropic.py, translate_gemini.py), but not for the call itself: the request goes
out on RouteIQ's own HTTP/1.1 client (http1.py: its pool, TLS, egress checks), under the dispatcher's timeouts,
retries, metrics and spans, exactly as on the native path. Which providers take this path is one table,
deployments.TRANSLATED_PROVIDERS; the rest (request signing: bedrock/, vertex_ai/, …) stay on litellm_client.py.

Errors are the native path's (upstream_status.py), which litellm_client.py's mapping matches status for status;
a parameter the provider cannot take is LiteLLM's own UnsupportedParamsError, mapped as on the LiteLLM path.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.providers import Completed
from routeiq_gateway.providers.http1 import DestinationRefused, HeaderInjection, Pool, Target
from routeiq_gateway.providers.litellm_errors import to_gateway_error
from routeiq_gateway.providers.native import answer_object, connection_error, invalid_response, upstream_error
from routeiq_gateway.providers.translate_litellm import Prepared
from routeiq_gateway.providers.translated_stream import TranslatedStream
from routeiq_gateway.routing.deployments import Deployment

MAX_TARGETS = 256  # prepared request heads (they hold API keys): bounded, rebuilt when dropped


class Translation(Protocol):
    provider: str

    def prepare(
        self,
        dep: Deployment,
        messages: list[Any],
        params: dict[str, Any],
        stream: bool,
        extra_headers: dict[str, str],
        drop_params: bool | None,
    ) -> Prepared: ...

    def answer(
        self, dep: Deployment, prepared: Prepared, raw: bytes, headers: tuple[tuple[bytes, bytes], ...]
    ) -> tuple[bytes, dict[str, Any] | None]: ...

    def chunk_parser(self, prepared: Prepared) -> Any: ...


def _translation(provider: str) -> Translation:
    if provider == "anthropic":
        from routeiq_gateway.providers.translate_anthropic import AnthropicTranslation

        return AnthropicTranslation()
    if provider == "gemini":
        from routeiq_gateway.providers.translate_gemini import GeminiTranslation

        return GeminiTranslation()
    raise KeyError(provider)


def _deployment_headers(dep: Deployment) -> dict[str, str]:
    """litellm_params' headers and extra_headers, as LiteLLM merges them into the provider's headers."""
    merged: dict[str, str] = {}
    for key in ("headers", "extra_headers"):
        for name, value in dep.extra_params:
            if name == key and isinstance(value, dict):
                merged.update((str(k), str(v)) for k, v in value.items())
    return merged


def _drop_params(dep: Deployment) -> bool | None:
    for name, value in dep.extra_params:
        if name == "drop_params":
            return bool(value)
    return None


class TranslatedProvider:
    def __init__(self, pool: Pool, litellm: Any) -> None:
        self._pool = pool
        self._litellm = litellm  # the LiteLLMProvider: serves a translated deployment's other endpoints
        self._own_args: frozenset[str] = litellm._own_args  # LiteLLM's call arguments: never a client's to set
        self._translations: dict[str, Translation] = {}
        self._targets: dict[tuple[str, tuple[tuple[str, str], ...], bool | str], Target] = {}

    def _for(self, dep: Deployment) -> Translation:
        translation = self._translations.get(dep.provider)
        if translation is None:
            translation = self._translations[dep.provider] = _translation(dep.provider)
        return translation

    def _target(self, dep: Deployment, url: str, headers: dict[str, str]) -> Target:
        key = (url, tuple(headers.items()), dep.ssl_verify)
        target = self._targets.get(key)
        if target is None:
            try:
                target = Target.build(url, key[1], dep.ssl_verify)
            except (ValueError, HeaderInjection) as exc:
                raise GatewayError(
                    502,
                    f"Deployment of '{dep.model_name}' is misconfigured: {exc}",
                    code="upstream_misconfigured",
                    retryable=True,  # a fallback deployment may be fine
                ) from None
            if len(self._targets) >= MAX_TARGETS:
                self._targets.clear()
            self._targets[key] = target
        return target

    def reloaded(self) -> None:
        """After a reload: forget prepared request heads (they hold API keys of deployments that may be gone)."""
        self._targets = {}
        for translation in self._translations.values():
            judge = getattr(translation, "judge", None)
            if judge is not None:
                judge.forget_requests()

    def prepare(self, dep: Deployment, body: dict[str, Any], stream: bool) -> Prepared:
        own = self._own_args
        params: dict[str, Any] = dict(dep.body_defaults)
        params.update((k, v) for k, v in body.items() if k not in own)
        params.pop("model", None)
        params.pop("stream", None)
        messages = params.pop("messages")
        try:
            return self._for(dep).prepare(dep, messages, params, stream, _deployment_headers(dep), _drop_params(dep))
        except GatewayError:
            raise
        except Exception as exc:  # noqa: BLE001 — LiteLLM's transformations raise many classes; one mapping
            raise to_gateway_error(exc, dep) from None

    async def call(
        self, dep: Deployment, endpoint: str, body: dict[str, Any], stream: bool, traceparent: str | None
    ) -> Completed | TranslatedStream:
        if endpoint != "chat/completions":
            result: Completed | TranslatedStream = await self._litellm.call(dep, endpoint, body, stream, traceparent)
            return result  # app.py names this path litellm (surface.served_path)
        prepared = self.prepare(dep, body, stream)
        target = self._target(dep, prepared.url, prepared.headers)
        extra_head = b"traceparent: " + traceparent.encode() + b"\r\n" if traceparent else b""
        try:
            async with asyncio.timeout(dep.timeout):
                resp = await self._pool.post(target, prepared.payload, extra_head)
                if stream and resp.status == 200 and resp.content_type.startswith("text/event-stream"):
                    options = body.get("stream_options")
                    include_usage = isinstance(options, dict) and options.get("include_usage") is True
                    parse = self._for(dep).chunk_parser(prepared)
                    return TranslatedStream(resp, parse, dep, include_usage, dep.stream_timeout)
                raw = await resp.read()
        except (ConnectionError, TimeoutError, DestinationRefused) as exc:
            raise connection_error(exc, dep) from None
        if resp.status != 200:
            raise upstream_error(resp.status, raw, resp.retry_after, dep, resp.headers)
        if stream:
            raise invalid_response("a JSON body where an event stream was asked for")
        answer_object(raw)  # a clear 502 for an answer that is not a JSON object, before LiteLLM reads it
        try:
            payload, usage = self._for(dep).answer(dep, prepared, raw, resp.headers)
        except GatewayError:
            raise
        except Exception as exc:  # noqa: BLE001 — an answer LiteLLM cannot read would be read the same way again
            raise invalid_response(f"the answer could not be read ({type(exc).__name__})") from None
        return Completed(payload, usage, headers=resp.headers)
