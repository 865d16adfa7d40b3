"""The endpoints beyond chat, completions and embeddings, on both provider paths.

  responses, moderations, images/generations, rerank   native: the OpenAI-protocol pass-through (native.py), as
                                                       chat is; LiteLLM: litellm.aresponses / amoderation /
                                                       aimage_generation / arerank
  audio/speech                                         native: the upstream's audio bytes and content type as
                                                       they are; LiteLLM: litellm.aspeech
  audio/transcriptions                                 native: the multipart form again with `model` rewritten;
                                                       LiteLLM: litellm.atranscription
  messages (Anthropic's Messages API)                  anthropic/ deployments: native pass-through to
                                                       {api_base}/v1/messages; every other deployment: LiteLLM's
                                                       translation (litellm.anthropic_interface.messages)

Streams come back in the protocol the client spoke (OpenAI's Responses events, Anthropic's message events), and
their usage is read in passing, told in chat's terms (prompt_tokens, completion_tokens) for metrics and records.
Chat's own path never comes through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import orjson

from routeiq_gateway.http.anthropic_errors import anthropic_error_event
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.http.multipart import Upload, encode_form
from routeiq_gateway.http.sse import event as sse_event
from routeiq_gateway.providers import Completed, Streaming
from routeiq_gateway.providers.http1 import DestinationRefused, HeaderInjection, Target
from routeiq_gateway.providers.native import (
    NativeProvider,
    NativeStream,
    answer_object,
    connection_error,
    invalid_response,
    upstream_error,
)
from routeiq_gateway.routing.deployments import Deployment

ANTHROPIC_DEFAULT_BASE = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
_JSON = b"application/json"

# What a client may set per endpoint on the LiteLLM path; the rest is dropped there, as chat's CLIENT_PARAMS are:
# LiteLLM takes api_base, api_key, headers … as call arguments, and a client must never redirect our provider key.
LITELLM_PARAMS: dict[str, frozenset[str]] = {
    "responses": frozenset(
        {
            "input", "instructions", "max_output_tokens", "metadata", "parallel_tool_calls", "previous_response_id",
            "reasoning", "store", "stream", "temperature", "text", "tool_choice", "tools", "top_p", "truncation",
            "user", "include", "service_tier", "prompt", "background",
        }
    ),
    "messages": frozenset(
        {
            "messages", "max_tokens", "metadata", "stop_sequences", "stream", "system", "temperature", "thinking",
            "tool_choice", "tools", "top_k", "top_p",
        }
    ),
    "moderations": frozenset({"input"}),
    "images/generations": frozenset(
        {"prompt", "n", "size", "quality", "response_format", "style", "user", "background", "output_format"}
    ),
    "audio/speech": frozenset({"input", "voice", "response_format", "speed", "instructions"}),
    "audio/transcriptions": frozenset({"language", "prompt", "response_format", "temperature"}),
    "rerank": frozenset({"query", "documents", "top_n", "return_documents", "rank_fields", "max_chunks_per_doc"}),
}  # fmt: skip
SURFACE_ENDPOINTS = frozenset(LITELLM_PARAMS)


def chat_usage(usage: Any) -> dict[str, Any] | None:
    """Responses' and Anthropic's usage (input_tokens/output_tokens) in chat's terms; chat's own as it is."""
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        return usage
    prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
    if not isinstance(prompt, int) and not isinstance(completion, int):
        return None
    prompt = prompt if isinstance(prompt, int) else 0
    completion = completion if isinstance(completion, int) else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class UsageTap:
    """Relays an SSE stream of whole events (or lines) and reads its usage as it passes: `response.completed`
    (Responses) or message_start + message_delta (Anthropic). Stream errors are told in the client's protocol."""

    __slots__ = ("_anthropic", "_inner", "_input", "_output", "headers", "usage")

    def __init__(self, inner: AsyncIterable[bytes], anthropic: bool) -> None:
        self._inner = inner
        self.headers: tuple[tuple[bytes, bytes], ...] = getattr(inner, "headers", ())  # relayed as on Completed
        self._anthropic = anthropic
        self._input: int | None = None
        self._output: int | None = None
        self.usage: dict[str, Any] | None = None

    def error_event(self, exc: GatewayError) -> bytes:
        return anthropic_error_event(exc) if self._anthropic else sse_event(exc.body())

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            if b'"usage"' in chunk:
                for line in chunk.split(b"\n"):
                    if line.startswith(b"data:") and b'"usage"' in line:
                        self._take(line[5:])
            yield chunk

    def _take(self, payload: bytes) -> None:
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind == "message_start" and isinstance(data.get("message"), dict):
            usage = data["message"].get("usage")
        elif kind in ("response.completed", "response.incomplete") and isinstance(data.get("response"), dict):
            usage = data["response"].get("usage")
        else:
            usage = data.get("usage")
        if not isinstance(usage, dict):
            return
        if isinstance(usage.get("input_tokens"), int):
            self._input = usage["input_tokens"]
        if isinstance(usage.get("output_tokens"), int):
            self._output = usage["output_tokens"]
        self.usage = chat_usage({"input_tokens": self._input or 0, "output_tokens": self._output or 0})

    async def aclose(self) -> None:
        close = getattr(self._inner, "aclose", None)
        if close is not None:
            await close()


class _LiteLLMEvents:
    """LiteLLM's stream (Responses events as objects, or Anthropic SSE bytes) as SSE bytes, its errors mapped."""

    __slots__ = ("_dep", "_it")

    def __init__(self, it: Any, dep: Deployment) -> None:
        self._it = it
        self._dep = dep

    async def __aiter__(self) -> AsyncIterator[bytes]:
        from routeiq_gateway.providers.litellm_client import _dump, _to_gateway_error

        try:
            async for item in self._it:
                if isinstance(item, bytes | str):
                    yield item.encode() if isinstance(item, str) else item
                    continue
                data = _dump(item)
                kind = data.get("type")
                name = getattr(kind, "value", kind)
                yield (b"event: " + str(name).encode() + b"\n" if name else b"") + sse_event(orjson.dumps(data))
        except GatewayError:
            raise
        except Exception as exc:  # noqa: BLE001 — LiteLLM raises provider errors of many classes; all map to one shape
            raise _to_gateway_error(exc, self._dep) from None

    async def aclose(self) -> None:
        close = getattr(self._it, "aclose", None)
        if close is not None:
            await close()


def served_path(dep: Deployment, endpoint: str) -> str:
    """Which path served `endpoint` for `dep`: Messages to an anthropic/ deployment is native pass-through, and
    to any other deployment LiteLLM's translation; the translation path serves chat only (the rest of a translated
    deployment's endpoints go through LiteLLM); every other endpoint follows the deployment's own path."""
    if endpoint == "messages":
        return "native" if dep.provider == "anthropic" else "litellm"
    if dep.translated and endpoint != "chat/completions":
        return "litellm"
    return dep.path_name


def anthropic_url(api_base: str | None) -> str:
    """As LiteLLM reads an anthropic/ api_base: the root (…/v1/messages is appended), …/v1, or the full URL."""
    base = (api_base or ANTHROPIC_DEFAULT_BASE).rstrip("/")
    if base.endswith("/v1/messages"):
        return base
    return base + ("/messages" if base.endswith("/v1") else "/v1/messages")


def _misconfigured(dep: Deployment, exc: Exception) -> GatewayError:
    return GatewayError(
        502, f"Deployment of '{dep.model_name}' is misconfigured: {exc}", code="upstream_misconfigured", retryable=True
    )


class SurfaceProvider:
    """Serves SURFACE_ENDPOINTS for the dispatcher (the Provider protocol), on the deployment's own path."""

    def __init__(self, dispatcher: Any) -> None:
        self._dispatcher = dispatcher  # its .native and .litellm, read at call time (reloads may load LiteLLM)
        self._anthropic_targets: dict[tuple[str, str | None, bool | str], Target] = {}
        self._loading: asyncio.Lock | None = None

    async def call(
        self, dep: Deployment, endpoint: str, body: dict[str, Any], stream: bool, traceparent: str | None
    ) -> Completed | Streaming:
        if endpoint == "messages":
            if dep.provider == "anthropic":
                return await self._anthropic_native(dep, body, stream, traceparent)
            return await self._litellm_call(dep, endpoint, body, stream, traceparent)
        if not dep.native:
            return await self._litellm_call(dep, endpoint, body, stream, traceparent)
        native: NativeProvider = self._dispatcher.native
        if endpoint == "audio/speech":
            payload = orjson.dumps({**body, "model": dep.upstream_model})
            return await self._post_raw(dep, native._target(dep, endpoint), payload, b"", traceparent)
        if endpoint == "audio/transcriptions":
            payload, content_type = encode_form({**body, "model": dep.upstream_model})
            headers = tuple(h for h in dep.headers if h[0] != "content-type")
            try:
                target = Target.build(dep.url(endpoint), headers, dep.ssl_verify)
            except (ValueError, HeaderInjection) as exc:
                raise _misconfigured(dep, exc) from None
            return await self._post_raw(dep, target, payload, b"content-type: " + content_type + b"\r\n", traceparent)
        result = await native.call(dep, endpoint, body, stream, traceparent)
        if isinstance(result, Completed):
            if endpoint == "responses":
                return Completed(result.body, chat_usage(result.usage), result.content_type, result.headers)
            return result
        return UsageTap(result, anthropic=False) if isinstance(result, NativeStream) else result

    async def _post_raw(
        self, dep: Deployment, target: Target, payload: bytes, head: bytes, traceparent: str | None
    ) -> Completed:
        """One non-streamed call whose answer is passed on as it is, with its content type (audio, text, JSON)."""
        pool = self._dispatcher.native._pool
        if traceparent:
            head += b"traceparent: " + traceparent.encode() + b"\r\n"
        try:
            async with asyncio.timeout(dep.timeout):
                resp = await pool.post(target, payload, head)
                raw = await resp.read()
        except (ConnectionError, TimeoutError, DestinationRefused) as exc:
            raise connection_error(exc, dep) from None
        if resp.status != 200:
            raise upstream_error(resp.status, raw, resp.retry_after, dep)
        usage = None
        if resp.content_type.startswith("application/json"):
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise invalid_response("not JSON") from None
            usage = chat_usage(data.get("usage")) if isinstance(data, dict) else None
        return Completed(raw, usage, (resp.content_type or "application/octet-stream").encode("latin-1"))

    def _anthropic_target(self, dep: Deployment) -> Target:
        key = (anthropic_url(dep.api_base), dep.api_key, dep.ssl_verify)
        target = self._anthropic_targets.get(key)
        if target is None:
            headers = [("content-type", "application/json"), ("anthropic-version", ANTHROPIC_VERSION)]
            if dep.api_key:
                headers.append(("x-api-key", dep.api_key))
            try:
                target = Target.build(key[0], tuple(headers), dep.ssl_verify)
            except (ValueError, HeaderInjection) as exc:
                raise _misconfigured(dep, exc) from None
            if len(self._anthropic_targets) >= 64:  # they hold API keys: never more than a config's worth
                self._anthropic_targets.clear()
            self._anthropic_targets[key] = target
        return target

    async def _anthropic_native(
        self, dep: Deployment, body: dict[str, Any], stream: bool, traceparent: str | None
    ) -> Completed | Streaming:
        target = self._anthropic_target(dep)
        payload = orjson.dumps({**body, "model": dep.upstream_model})
        head = b"traceparent: " + traceparent.encode() + b"\r\n" if traceparent else b""
        pool = self._dispatcher.native._pool
        try:
            async with asyncio.timeout(dep.timeout):
                resp = await pool.post(target, payload, head)
                if stream and resp.status == 200 and resp.content_type.startswith("text/event-stream"):
                    return UsageTap(NativeStream(resp, dep.stream_timeout, dep), anthropic=True)
                raw = await resp.read()
        except (ConnectionError, TimeoutError, DestinationRefused) as exc:
            raise connection_error(exc, dep) from None
        if resp.status != 200:
            raise upstream_error(resp.status, raw, resp.retry_after, dep)
        data = answer_object(raw)
        if stream:
            raise invalid_response("a JSON body where an event stream was asked for")
        return Completed(raw, chat_usage(data.get("usage")))

    async def _litellm(self) -> Any:
        """The LiteLLM provider; loaded on first need (off the event loop) when no deployment needed it before:
        /v1/messages to an OpenAI deployment translates through LiteLLM even in an all-native config."""
        provider = self._dispatcher.litellm
        if provider is not None:
            return provider
        if self._loading is None:
            self._loading = asyncio.Lock()
        async with self._loading:
            if self._dispatcher.litellm is None:
                from routeiq_gateway.providers.litellm_client import LiteLLMProvider

                policy = self._dispatcher.native._pool.policy
                self._dispatcher.litellm = await asyncio.to_thread(LiteLLMProvider, policy)
        return self._dispatcher.litellm

    async def _litellm_call(
        self, dep: Deployment, endpoint: str, body: dict[str, Any], stream: bool, traceparent: str | None
    ) -> Completed | Streaming:
        from routeiq_gateway.providers.litellm_client import _check_headers, _dump, _to_gateway_error, with_deployment

        provider = await self._litellm()
        _check_headers(dep)
        await provider._check_egress(dep)
        litellm = provider._litellm
        allowed = LITELLM_PARAMS[endpoint]
        kwargs: dict[str, Any] = {k: v for k, v in body.items() if k in allowed}
        kwargs.update(dep.extra_params)
        with_deployment(kwargs, dep, stream, traceparent)
        if endpoint == "audio/transcriptions":
            upload = body["file"]
            assert isinstance(upload, Upload)  # checked at the edge (endpoint_checks.py)
            kwargs["file"] = (upload.filename, upload.data, upload.content_type)
        if endpoint == "messages":
            from litellm.anthropic_interface import messages as anthropic_messages

            fn = anthropic_messages.acreate
        else:
            fn = {
                "responses": litellm.aresponses,
                "moderations": litellm.amoderation,
                "images/generations": litellm.aimage_generation,
                "audio/speech": litellm.aspeech,
                "audio/transcriptions": litellm.atranscription,
                "rerank": litellm.arerank,
            }[endpoint]
        try:
            result: Any = await fn(**kwargs)
        except Exception as exc:  # noqa: BLE001 — every provider error becomes one GatewayError (litellm_client.py)
            raise _to_gateway_error(exc, dep) from None
        if stream:
            return UsageTap(_LiteLLMEvents(result, dep), anthropic=endpoint == "messages")
        if endpoint == "audio/speech":
            response = getattr(result, "response", None)
            content_type = getattr(response, "headers", {}).get("content-type", "audio/mpeg")
            return Completed(result.content, None, content_type.encode("latin-1"))
        data = result if isinstance(result, dict) else _dump(result)
        return Completed(orjson.dumps(data), chat_usage(data.get("usage")))
