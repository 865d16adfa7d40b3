"""anthropic/ deployments on the translation path: OpenAI chat ⇄ Anthropic Messages with LiteLLM's AnthropicConfig
and its stream chunk parser, called step by step as LiteLLM's anthropic handler calls them (handler.completion).

The steps follow litellm/llms/anthropic/chat/handler.py of the pinned LiteLLM (1.97): the parameters mapped by
get_optional_params; `stream`, `json_mode` and `is_vertex_request` taken out of them; validate_environment for the
headers; transform_request for the body; update_request_with_filtered_beta; `stream: true` set for a stream.

Those LiteLLM steps cost about 1 ms of CPU per request (profile in bench/README.md), three times the budget of a
3,000 req/s path. So the commonest shapes (text messages, a few sampling parameters; a text answer; text deltas)
also have RouteIQ's own mapping (anthropic_fast.py), and LiteLLM stays the judge of it (translate_litellm.Judge:
the own mapping serves a shape only after it gave, for that shape's first request, exactly what LiteLLM's steps
gave).
tests/integration/test_translation_identity.py holds both against litellm.acompletion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from routeiq_gateway.providers import anthropic_fast as fast
from routeiq_gateway.providers.plain_chat import plain_chat
from routeiq_gateway.providers.translate_litellm import (
    NO_LOGGING,
    Judge,
    Prepared,
    copy_messages,
    model_response_json,
    optional_params,
    raw_response,
    request_shape,
)
from routeiq_gateway.routing.deployments import Deployment

DEFAULT_URL = "https://api.anthropic.com/v1/messages"


def messages_url(api_base: str | None) -> str:
    """As LiteLLM's anthropic route builds it (main._complete_anthropic): `/v1/messages` appended unless there."""
    base = api_base or DEFAULT_URL
    return base if base.endswith("/v1/messages") else base + "/v1/messages"


class AnthropicTranslation:
    provider = "anthropic"

    def __init__(self) -> None:
        from litellm.anthropic_beta_headers_manager import update_request_with_filtered_beta
        from litellm.llms.anthropic.chat.handler import ModelResponseIterator
        from litellm.llms.anthropic.chat.transformation import ANTHROPIC_TOOL_NAME_REVERSE_MAP_KEY, AnthropicConfig

        self._config = AnthropicConfig()
        self._filtered_beta = update_request_with_filtered_beta
        self._iterator = ModelResponseIterator
        self._reverse_map_key = ANTHROPIC_TOOL_NAME_REVERSE_MAP_KEY
        self.judge = Judge()
        self._default_max_tokens: dict[str, int] = {}

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
        model = dep.upstream_model
        default = self._default_max_tokens.get(model)
        if default is None:
            default = self._default_max_tokens[model] = int(self._config.get_max_tokens_for_model(model))
        data = fast.request_body(model, chat, params, stream, default)
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
        url = messages_url(dep.api_base)
        optional = optional_params("anthropic", model, messages, params, stream, drop_params)
        optional.pop("stream", None)
        json_mode = bool(optional.pop("json_mode", False))
        optional.pop("is_vertex_request", None)
        optional.pop("vertex_count_tokens_location", None)
        msgs = copy_messages(messages)
        litellm_params: dict[str, Any] = {}
        headers = self._config.validate_environment(
            api_key=dep.api_key,
            headers=dict(extra_headers),
            model=model,
            messages=msgs,
            optional_params={**optional, "is_vertex_request": False},
            litellm_params=litellm_params,
            api_base=url,
        )
        data = self._config.transform_request(
            model=model,
            messages=msgs,
            optional_params={**optional, "is_vertex_request": False},
            litellm_params=litellm_params,
            headers=headers,
        )
        headers, data = self._filtered_beta(headers=headers, request_data=data, provider="anthropic")
        if stream:
            data["stream"] = True
        return Prepared(
            url=url,
            headers=headers,
            payload=orjson.dumps(data),
            messages=msgs,
            optional_params=optional,
            litellm_params=litellm_params,
            request_data=data,
            json_mode=json_mode,
        )

    def answer(
        self, dep: Deployment, prepared: Prepared, raw: bytes, headers: tuple[tuple[bytes, bytes], ...]
    ) -> tuple[bytes, dict[str, Any] | None]:
        data = orjson.loads(raw)
        shape = fast.answer_shape(data) if not prepared.json_mode else None
        if shape is None:
            return self._answer(dep, prepared, raw, headers)
        return self.judge.answer(
            (dep.id, *shape), lambda: fast.answer(data), lambda: self._answer(dep, prepared, raw, headers)
        )

    def _answer(
        self, dep: Deployment, prepared: Prepared, raw: bytes, headers: tuple[tuple[bytes, bytes], ...]
    ) -> tuple[bytes, dict[str, Any] | None]:
        from litellm.types.utils import ModelResponse

        result = self._config.transform_response(
            model=dep.upstream_model,
            raw_response=raw_response(prepared, raw, headers),
            model_response=ModelResponse(),
            logging_obj=NO_LOGGING,  # type: ignore[arg-type]  # only its post_call is called
            request_data=prepared.request_data,
            messages=prepared.messages,
            optional_params=prepared.optional_params,
            litellm_params=prepared.litellm_params,
            encoding=None,
            api_key=dep.api_key,
            json_mode=prepared.json_mode,
        )
        return model_response_json(result)

    def chunk_parser(self, prepared: Prepared) -> Callable[[dict[str, Any]], Any]:
        reverse = prepared.litellm_params.get(self._reverse_map_key)
        iterator = self._iterator(
            streaming_response=None,
            sync_stream=False,
            json_mode=prepared.json_mode,
            speed=prepared.optional_params.get("speed"),
            tool_name_reverse_map=reverse if isinstance(reverse, dict) else None,
        )
        parse: Callable[[dict[str, Any]], Any] = iterator.chunk_parser
        if prepared.json_mode:
            return parse
        judge, key = self.judge, prepared.url

        def parse_text_fast(chunk: dict[str, Any]) -> Any:
            # The events of a text block, and those that say nothing: what the parser makes of them (a text delta,
            # or "" for nothing to say: StreamFinisher.text), without its pydantic objects. Its state is kept as
            # its own handling of the event would leave it (handler.py, chunk_parser); every other event is its.
            kind = chunk.get("type")
            if kind == "content_block_delta":
                if iterator.current_content_block_type == "text":
                    delta = fast.text_delta(chunk)
                    if delta is not None:
                        return delta
            elif kind in ("ping", "message_stop"):
                return ""
            elif kind == "content_block_start":
                if fast.empty_text_block(chunk):
                    iterator.content_blocks = []
                    iterator.current_content_block_type = "text"
                    return ""
            elif kind == "content_block_stop" and iterator.current_content_block_type == "text":
                iterator.is_response_format_tool = False
                iterator.current_content_block_type = None
                return ""
            elif kind in ("message_start", "message_delta") and not iterator.reasoning_content_chunks:
                own = fast.message_event(chunk, iterator.response_id)
                if own is not None:  # judged: the parser's own chunk the first time, per shape
                    shape, mine = own
                    return judge.chunk((key, *shape), lambda: mine, lambda: parse(chunk).model_dump(exclude_none=True))
            return parse(chunk)

        return parse_text_fast
