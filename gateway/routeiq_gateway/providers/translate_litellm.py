"""LiteLLM's per-provider transformations, called one by one instead of through `litellm.acompletion`.

These are the LiteLLM interfaces the translation path relies on (tests/unit/test_litellm_interfaces.py fails
loudly when an upgrade changes them; gateway/pyproject.toml pins litellm to the minor version they were read in):

  litellm.utils.get_optional_params(model, custom_llm_provider, messages, drop_params, stream, **openai_params)
      the OpenAI parameters mapped to the provider's (its config's map_openai_params), as acompletion does
  <ProviderConfig>.validate_environment(headers, model, messages, optional_params, litellm_params, api_key, api_base)
  <ProviderConfig>.transform_request(model, messages, optional_params, litellm_params, headers)
  <ProviderConfig>.transform_response(model, raw_response, model_response, logging_obj, request_data, messages,
                                      optional_params, litellm_params, encoding, api_key, json_mode)
  <provider>'s ModelResponseIterator(streaming_response, sync_stream, json_mode, ...).chunk_parser(chunk)
  anthropic/: AnthropicConfig, anthropic.chat.handler.ModelResponseIterator, update_request_with_filtered_beta
  gemini/: VertexLLM._get_token_and_url / is_using_v1beta1_features, VertexGeminiConfig,
           vertex_ai.gemini.transformation._transform_request_body, its ModelResponseIterator (which reads
           `optional_params` off the logging object it is given)

LiteLLM is imported only when the first translated deployment is called (it costs seconds at start-up).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import orjson


class NoLogging:
    """What transform_response logs into (`post_call`): nothing; our own logs and spans tell the story. Some
    transformations also read the call's parameters off it (`optional_params`, Gemini's), as off LiteLLM's."""

    model_call_details: dict[str, Any] = {}  # read, never written

    def __init__(self, optional_params: dict[str, Any] | None = None) -> None:
        self.optional_params = optional_params if optional_params is not None else {}

    def post_call(self, *args: Any, **kwargs: Any) -> None:
        return None

    def pre_call(self, *args: Any, **kwargs: Any) -> None:
        return None


NO_LOGGING = NoLogging()


@dataclass(slots=True)
class Prepared:
    """One upstream request built from a client's chat request, and what reading its answer needs."""

    url: str
    headers: dict[str, str]
    payload: bytes
    messages: list[Any]
    optional_params: dict[str, Any]
    litellm_params: dict[str, Any] = field(default_factory=dict)
    request_data: dict[str, Any] = field(default_factory=dict)
    json_mode: bool = False


def optional_params(
    provider: str, model: str, messages: list[Any], params: dict[str, Any], stream: bool, drop_params: bool | None
) -> dict[str, Any]:
    """The provider's parameters for the client's OpenAI ones, as acompletion maps them (a fresh dict)."""
    from litellm.utils import get_optional_params

    return dict(
        get_optional_params(
            model=model,
            custom_llm_provider=provider,
            messages=messages,
            drop_params=drop_params,
            stream=stream or None,
            **params,
        )
    )


def model_response_json(response: Any) -> tuple[bytes, dict[str, Any] | None]:
    """A LiteLLM ModelResponse as the client's JSON (as litellm_client dumps it), and its usage."""
    data = response.model_dump(exclude_none=True)
    return orjson.dumps(data), data.get("usage")


def copy_messages(messages: list[Any]) -> list[Any]:
    # LiteLLM's transformations edit the messages they are given (acompletion hands them a deep copy too).
    return copy.deepcopy(messages)
