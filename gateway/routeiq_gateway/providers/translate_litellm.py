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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from routeiq_gateway.routing.deployments import Deployment


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
MAX_SHAPES = 4096  # verdicts a Judge keeps per kind


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


def raw_response(prepared: Prepared, raw: bytes, headers: tuple[tuple[bytes, bytes], ...]) -> Any:
    """The upstream's 200 answer as the httpx.Response LiteLLM's transform_response reads."""
    import httpx

    return httpx.Response(
        200,
        content=raw,
        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
        request=httpx.Request("POST", prepared.url),
    )


def copy_messages(messages: list[Any]) -> list[Any]:
    # LiteLLM's transformations edit the messages they are given (acompletion hands them a deep copy too).
    return copy.deepcopy(messages)


def same_answer(litellm: dict[str, Any], mine: dict[str, Any]) -> bool:
    """Equal but for what differs between any two calls (the generated id, the clock)."""
    ignore = ("id", "created")
    return {k: v for k, v in litellm.items() if k not in ignore} == {k: v for k, v in mine.items() if k not in ignore}


def request_shape(
    dep: Deployment,
    extra_headers: dict[str, str],
    drop_params: bool | None,
    params: dict[str, Any],
    systems: int,
    stream: bool,
) -> tuple[Any, ...]:
    """A request's shape for Judge.request: everything LiteLLM's request depends on but the values the own mapping
    copies. The judged heads hold the deployment's key and headers, so a reload that changes them (same
    deployment id) is judged anew."""
    return (dep.id, dep.api_key, tuple(extra_headers.items()), drop_params, frozenset(params), systems, stream)


class Judge:
    """LiteLLM's steps judging RouteIQ's own mapping of a provider, shape by shape, per deployment.

    The first request (and the first answer) of a shape goes through both; the own mapping serves that shape
    from then on only if it gave exactly what LiteLLM's steps gave (ids and timestamps aside), else LiteLLM's
    steps serve it for good. A shape is what the own mapping's output depends on besides the values it copies.
    """

    __slots__ = ("answers", "chunks", "requests")

    def __init__(self) -> None:
        self.chunks: dict[tuple[Any, ...], bool] = {}
        # shape → (url, headers) LiteLLM sent for it when the bodies agreed, or None (they did not)
        self.requests: dict[tuple[Any, ...], tuple[str, dict[str, str]] | None] = {}
        self.answers: dict[tuple[Any, ...], bool] = {}

    def forget_requests(self) -> None:
        """After a reload: the judged heads hold API keys of deployments that may be gone."""
        self.requests = {}

    def request(
        self, shape: tuple[Any, ...], data: dict[str, Any], messages: list[Any], litellm: Callable[[], Prepared]
    ) -> Prepared:
        if shape not in self.requests:
            if len(self.requests) >= MAX_SHAPES:
                self.requests = {}  # bounded: a client varying its shapes only costs re-judging
            judged = litellm()
            self.requests[shape] = (judged.url, judged.headers) if judged.request_data == data else None
            return judged
        verdict = self.requests[shape]
        if verdict is None:
            return litellm()
        url, headers = verdict
        return Prepared(url, headers, orjson.dumps(data), messages, {}, request_data=data)

    def answer(
        self,
        shape: tuple[Any, ...],
        mine: Callable[[], dict[str, Any]],
        litellm: Callable[[], tuple[bytes, dict[str, Any] | None]],
    ) -> tuple[bytes, dict[str, Any] | None]:
        verdict = self.answers.get(shape)
        if verdict is None:
            if len(self.answers) >= MAX_SHAPES:
                self.answers = {}
            body, usage = litellm()
            self.answers[shape] = same_answer(orjson.loads(body), mine())
            return body, usage
        if not verdict:
            return litellm()
        own = mine()
        return orjson.dumps(own), own.get("usage")

    def chunk(
        self, shape: tuple[Any, ...], mine: Callable[[], dict[str, Any]], litellm: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """One stream event read as the chunk parser reads it (its dict, None left out)."""
        verdict = self.chunks.get(shape)
        if verdict is None:
            if len(self.chunks) >= MAX_SHAPES:
                self.chunks = {}
            theirs = litellm()
            self.chunks[shape] = same_answer(theirs, mine())
            return theirs
        return mine() if verdict else litellm()
