"""gemini/ deployments (Google AI Studio, API key) on the translation path: OpenAI chat ⇄ generateContent with
LiteLLM's VertexGeminiConfig and its Gemini stream chunk parser, called step by step as LiteLLM's VertexLLM calls
them for `custom_llm_provider="gemini"` (vertex_and_google_ai_studio_gemini.py: async_completion /
async_streaming of the pinned LiteLLM 1.97): the parameters mapped by get_optional_params; `stream` taken out;
_get_token_and_url for the URL and the key header; validate_environment for the headers; the request body by
transformation._transform_request_body; transform_response / ModelResponseIterator.chunk_parser for the answer.

The commonest shapes (plain text turns, a few sampling parameters; a text answer; text events) also have
RouteIQ's own mapping (gemini_fast.py), used shape by shape only where LiteLLM's steps gave the same
(translate_litellm.Judge), as for anthropic/.

One LiteLLM step is left out: its context caching (for messages marked `cache_control` it first creates a
cachedContent upstream, a call of its own). Here such messages are sent as they are, without that call; the
identity suite does not cover them. Vertex AI (vertex_ai/: OAuth tokens) is not here: it stays on
litellm.acompletion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from routeiq_gateway.providers import gemini_fast as fast
from routeiq_gateway.providers.plain_chat import plain_chat
from routeiq_gateway.providers.translate_litellm import (
    Judge,
    NoLogging,
    Prepared,
    copy_messages,
    model_response_json,
    optional_params,
    raw_response,
    request_shape,
)
from routeiq_gateway.routing.deployments import Deployment


class GeminiTranslation:
    provider = "gemini"

    def __init__(self) -> None:
        from litellm.llms.vertex_ai.gemini.transformation import _transform_request_body
        from litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini import (
            ModelResponseIterator,
            VertexGeminiConfig,
            VertexLLM,
        )

        self._config = VertexGeminiConfig()
        self._llm = VertexLLM()
        self._body = _transform_request_body
        self._iterator = ModelResponseIterator
        self.judge = Judge()

    def prepare(
        self,
        dep: Deployment,
        messages: list[Any],
        params: dict[str, Any],
        stream: bool,
        extra_headers: dict[str, str],
        drop_params: bool | None,
    ) -> Prepared:
        chat = plain_chat(messages) if fast.FAST_PARAMS.issuperset(params) else None
        if chat is None:
            return self._prepare(dep, messages, params, stream, extra_headers, drop_params)
        shape = request_shape(dep, extra_headers, drop_params, params, len(chat.system), stream)
        data = fast.request_body(chat, params)
        return self.judge.request(
            shape, data, messages, lambda: self._prepare(dep, messages, params, stream, extra_headers, drop_params)
        )

    def _prepare(
        self,
        dep: Deployment,
        messages: list[Any],
        params: dict[str, Any],
        stream: bool,
        extra_headers: dict[str, str],
        drop_params: bool | None,
    ) -> Prepared:
        model = dep.upstream_model
        optional = optional_params("gemini", model, messages, params, stream, drop_params)
        optional.pop("stream", None)
        auth_header, url = self._llm._get_token_and_url(
            model=model,
            auth_header=None,
            gemini_api_key=dep.api_key,
            vertex_project=None,
            vertex_location=None,
            vertex_credentials=None,
            stream=stream,
            custom_llm_provider="gemini",
            api_base=dep.api_base,
            should_use_v1beta1_features=self._llm.is_using_v1beta1_features(optional_params=optional),
            use_psc_endpoint_format=bool(optional.get("use_psc_endpoint_format", False)),
        )
        msgs = copy_messages(messages)
        litellm_params: dict[str, Any] = {}
        headers = self._config.validate_environment(
            api_key=auth_header,
            headers=dict(extra_headers) or None,
            model=model,
            messages=msgs,
            optional_params=optional,
            litellm_params=litellm_params,
        )
        data = dict(
            self._body(
                messages=msgs,
                model=model,
                optional_params=optional,
                custom_llm_provider="gemini",
                litellm_params=litellm_params,
                cached_content=None,
            )
        )
        return Prepared(
            url=url,
            headers={str(k): str(v) for k, v in headers.items()},
            payload=orjson.dumps(data),
            messages=msgs,
            optional_params=optional,
            litellm_params=litellm_params,
            request_data=data,
        )

    def answer(
        self, dep: Deployment, prepared: Prepared, raw: bytes, headers: tuple[tuple[bytes, bytes], ...]
    ) -> tuple[bytes, dict[str, Any] | None]:
        data = orjson.loads(raw)
        shape = fast.answer_shape(data)
        if shape is None:
            return self._answer(dep, prepared, raw, headers)
        model = dep.upstream_model
        return self.judge.answer(
            (dep.id, *shape), lambda: fast.answer(data, model), lambda: self._answer(dep, prepared, raw, headers)
        )

    def _answer(
        self, dep: Deployment, prepared: Prepared, raw: bytes, headers: tuple[tuple[bytes, bytes], ...]
    ) -> tuple[bytes, dict[str, Any] | None]:
        from litellm.types.utils import ModelResponse

        result = self._config.transform_response(
            model=dep.upstream_model,
            raw_response=raw_response(prepared, raw, headers),
            model_response=ModelResponse(),
            logging_obj=NoLogging(prepared.optional_params),  # type: ignore[arg-type]  # post_call, optional_params
            api_key="",
            request_data=prepared.request_data,
            messages=prepared.messages,
            optional_params=prepared.optional_params,
            litellm_params=prepared.litellm_params,
            encoding=None,
        )
        return model_response_json(result)

    def chunk_parser(self, prepared: Prepared) -> Callable[[dict[str, Any]], Any]:
        logging = NoLogging(prepared.optional_params)
        iterator = self._iterator(streaming_response=None, sync_stream=False, logging_obj=logging)  # type: ignore[arg-type]
        parse: Callable[[dict[str, Any]], Any] = iterator.chunk_parser
        judge, key = self.judge, prepared.url

        def parse_judged(event: dict[str, Any]) -> Any:
            found = fast.chunk_shape(event)
            if found is None:
                return parse(event)
            shape, text = found
            return judge.chunk(
                (key, *shape), lambda: fast.chunk(event, text), lambda: parse(event).model_dump(exclude_none=True)
            )

        return parse_judged
