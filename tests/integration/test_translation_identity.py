"""The translation path answers as litellm.acompletion does (issue 12, Build 3).

Every request goes twice to the same fake upstream process: through LiteLLMProvider (litellm.acompletion) and
through TranslatedProvider (LiteLLM's transformations on RouteIQ's own HTTP client). The fake upstream's request
log gives what reached it; both must have sent the same body and headers and told the client the same answer,
once generated ids and timestamps are normalised.
"""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import orjson
import pytest
from harness.fake_upstream_control import FakeUpstream
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.providers import Completed
from routeiq_gateway.providers.http1 import Pool
from routeiq_gateway.providers.litellm_client import LiteLLMProvider
from routeiq_gateway.providers.translated import TranslatedProvider
from routeiq_gateway.routing.deployments import Deployment, build_deployment
from routeiq_shared.config_schema import ModelEntry, RouterSettings
from routeiq_shared.egress import EgressPolicy

KEY = "sk-ant-identity"
# Headers that depend on the HTTP client, not on the translation.
TRANSPORT_HEADERS = {"host", "content-length", "user-agent", "accept-encoding", "connection", "traceparent"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
PIXEL = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
    )
).decode()
USER = [{"role": "user", "content": "What is the weather in Paris?"}]

CASES: dict[str, dict[str, Any]] = {
    "plain": {"messages": USER},
    "system": {"messages": [{"role": "system", "content": "Answer briefly."}, *USER], "temperature": 0.3},
    "conversation": {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi, how can I help?"},
            *USER,
        ],
        "top_p": 0.9,
    },
    "tools": {
        "messages": USER,
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    },
    "tools_required": {"messages": USER, "tools": [WEATHER_TOOL], "tool_choice": "required"},
    "tool_result": {
        "messages": [
            *USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
        ],
        "tools": [WEATHER_TOOL],
    },
    "json_object": {"messages": USER, "response_format": {"type": "json_object"}},
    "json_schema": {
        "messages": USER,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "weather",
                "schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                    "required": ["city"],
                },
            },
        },
    },
    "image": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                ],
            }
        ]
    },
    "stop": {"messages": USER, "stop": ["fake"]},
    "stop_string": {"messages": USER, "stop": "demo"},
    "max_tokens": {"messages": USER, "max_tokens": 7},
    "max_completion_tokens": {"messages": USER, "max_completion_tokens": 9},
    "user_metadata": {"messages": USER, "user": "user-42"},
}
STREAM_CASES = {
    "plain": CASES["plain"],
    "system": CASES["system"],
    "tools": CASES["tools"],  # tool-call deltas (input_json_delta)
    "json_schema": CASES["json_schema"],
    "stop": CASES["stop"],
    "usage": {**CASES["plain"], "stream_options": {"include_usage": True}},
    "tools_usage": {**CASES["tools"], "stream_options": {"include_usage": True}},
}


# provider → the deployment's model (both take the fake upstream's root as api_base)
PROVIDERS = {"anthropic": "anthropic/claude-3-haiku-20240307", "gemini": "gemini/gemini-2.0-flash"}
EACH_PROVIDER = pytest.mark.parametrize("provider", sorted(PROVIDERS))


def deployment(upstream: FakeUpstream, provider: str = "anthropic", **params: Any) -> Deployment:
    litellm_params = {"model": PROVIDERS[provider], "api_base": upstream.root_url, "api_key": KEY}
    entry = ModelEntry.model_validate({"model_name": "claude", "litellm_params": {**litellm_params, **params}})
    return build_deployment(entry, RouterSettings())


@pytest.fixture(scope="module")
def litellm_provider() -> LiteLLMProvider:
    return LiteLLMProvider(EgressPolicy.from_env({"ROUTEIQ_EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8"}, []))


_ID = re.compile(r"chatcmpl-[0-9a-f-]{36}|msg_fake\d+|toolu_msg_fake\d+|call_[0-9a-f]{20,40}")  # generated per call


def normalised(answer: Any) -> Any:
    """Generated ids and timestamps replaced: they differ between any two calls."""
    text = _ID.sub("<id>", orjson.dumps(answer).decode())
    data = orjson.loads(text)
    items = data if isinstance(data, list) else [data]
    for item in items:
        if isinstance(item, dict) and "created" in item:
            item["created"] = "<created>"
    return data


async def _answer(result: Any) -> Any:
    if isinstance(result, Completed):
        return orjson.loads(result.body), result.usage
    events = []
    try:
        async for chunk in result:
            for line in chunk.split(b"\n"):
                if line.startswith(b"data: "):
                    events.append(line[6:].decode())
    finally:
        await result.aclose()
    assert events[-1] == "[DONE]"
    return [orjson.loads(e) for e in events[:-1]], result.usage


def _sent(upstream: FakeUpstream) -> dict[str, Any]:
    [request] = upstream.requests()
    upstream.clear_requests()
    headers = {k: v for k, v in request["headers"].items() if k not in TRANSPORT_HEADERS}
    if headers.get("accept") == "*/*":  # httpx's default when the provider names none: the client's, not LiteLLM's
        del headers["accept"]
    return {"body": request["body"], "headers": headers}


def both(
    upstream: FakeUpstream,
    litellm_provider: LiteLLMProvider,
    body: dict[str, Any],
    stream: bool,
    provider: str = "anthropic",
    **params: Any,
) -> list[tuple[str, dict[str, Any], Any, Any]]:
    """(path, what reached the upstream, the client's answer, the usage counted): litellm.acompletion, then the
    translation path twice on one provider (the first call of a shape is judged by LiteLLM's own steps, the
    second is served by whichever mapping that judgement chose)."""
    dep = deployment(upstream, provider, **params)
    assert dep.path_name == "translated"
    request = {"model": "claude", **body, **({"stream": True} if stream else {})}

    async def run(path: Any) -> tuple[Any, Any]:
        return await _answer(await path.call(dep, "chat/completions", request, stream, None))

    results = []
    upstream.clear_requests()
    answer, usage = asyncio.run(run(litellm_provider))
    results.append(("litellm", _sent(upstream), answer, usage))

    async def translated() -> list[tuple[Any, Any, Any]]:
        pool = Pool(EgressPolicy.from_env({"ROUTEIQ_EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8"}, []))
        translated = TranslatedProvider(pool, litellm_provider)
        out = []
        try:
            for _ in range(2):
                answer, usage = await run(translated)
                out.append((_sent(upstream), answer, usage))
        finally:
            pool.close()
        LAST_SHAPES.clear()
        for translation in translated._translations.values():
            judge = getattr(translation, "judge", None)
            if judge is not None:
                LAST_SHAPES.update(judge.requests)
                LAST_SHAPES.update(judge.answers)
                LAST_SHAPES.update(judge.chunks)
        return out

    for name, (sent, answer, usage) in zip(("translated-judged", "translated"), asyncio.run(translated()), strict=True):
        results.append((name, sent, answer, usage))
    return results


LAST_SHAPES: dict[Any, Any] = {}  # the last translated run's verdicts on the own mapping, by shape
# Cases whose request and answer the own mapping (anthropic_fast.py) must carry: else the speed is gone unnoticed.
FAST_CASES = {"plain", "system", "conversation", "max_tokens", "max_completion_tokens", "usage"}


def assert_identical(results: list[tuple[str, dict[str, Any], Any, Any]]) -> None:
    (_, sent_l, answer_l, usage_l), *translated = results
    for _, sent_t, answer_t, usage_t in translated:
        assert sent_t == sent_l
        assert normalised(answer_t) == normalised(answer_l)
        # The usage counted for metrics (not sent to the client): LiteLLM's stream sometimes loses it (JSON
        # mode); where it has one, both agree.
        assert usage_t is not None
        assert usage_l is None or usage_t == usage_l


@EACH_PROVIDER
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_request_and_answer(
    fresh_upstream: FakeUpstream, litellm_provider: LiteLLMProvider, case: str, provider: str
) -> None:
    results = both(fresh_upstream, litellm_provider, CASES[case], False, provider)
    assert_identical(results)
    if case in FAST_CASES:
        assert LAST_SHAPES and all(v not in (None, False) for v in LAST_SHAPES.values()), LAST_SHAPES
    answer = results[1][2]
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["role"] == "assistant"


@EACH_PROVIDER
@pytest.mark.parametrize("case", sorted(STREAM_CASES))
def test_same_stream(fresh_upstream: FakeUpstream, litellm_provider: LiteLLMProvider, case: str, provider: str) -> None:
    results = both(fresh_upstream, litellm_provider, STREAM_CASES[case], True, provider)
    assert_identical(results)
    if case in FAST_CASES:
        assert LAST_SHAPES and all(v not in (None, False) for v in LAST_SHAPES.values()), LAST_SHAPES
    chunks = results[1][2]
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    if "tools" in case:
        calls = [
            c["choices"][0]["delta"]["tool_calls"][0]
            for c in chunks
            if c["choices"] and c["choices"][0]["delta"].get("tool_calls")
        ]
        assert orjson.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Paris", "days": 3}
    has_usage = [c for c in chunks if c.get("usage")]
    assert bool(has_usage) == ("usage" in case)
    assert results[1][3] is not None and results[1][3]["completion_tokens"] > 0  # counted either way


def test_deployment_settings_reach_the_upstream_alike(
    fresh_upstream: FakeUpstream, litellm_provider: LiteLLMProvider
) -> None:
    settings = {"temperature": 0.2, "max_tokens": 33, "extra_headers": {"x-team": "blue"}, "drop_params": True}
    results = both(fresh_upstream, litellm_provider, {**CASES["plain"], "seed": 7}, False, "anthropic", **settings)
    assert_identical(results)
    sent = results[1][1]
    assert sent["headers"]["x-team"] == "blue" and sent["headers"]["x-api-key"] == KEY
    assert sent["body"]["temperature"] == 0.2 and sent["body"]["max_tokens"] == 33 and "seed" not in sent["body"]


def _error(provider: Any, dep: Deployment, stream: bool) -> GatewayError:
    async def run() -> GatewayError:
        body = {"model": "claude", **CASES["plain"], **({"stream": True} if stream else {})}
        try:
            result = await provider.call(dep, "chat/completions", body, stream, None)
            await _answer(result)
        except GatewayError as exc:
            return exc
        raise AssertionError("no error")

    return asyncio.run(run())


@EACH_PROVIDER
@pytest.mark.parametrize(
    ("status", "stream"), [(400, False), (401, False), (404, True), (429, False), (500, False), (529, True)]
)
def test_upstream_errors_map_alike(
    fresh_upstream: FakeUpstream, litellm_provider: LiteLLMProvider, status: int, stream: bool, provider: str
) -> None:
    dep = deployment(fresh_upstream, provider)
    fresh_upstream.add_rule(status=status, retry_after="3", times=1)
    via_litellm = _error(litellm_provider, dep, stream)
    fresh_upstream.add_rule(status=status, retry_after="3", times=1)
    pool = Pool(EgressPolicy.from_env({"ROUTEIQ_EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8"}, []))
    via_translation = _error(TranslatedProvider(pool, litellm_provider), dep, stream)
    assert (via_translation.status, via_translation.code, via_translation.retryable) == (
        via_litellm.status,
        via_litellm.code,
        via_litellm.retryable,
    )
    upstream_words = f"Fake upstream returned {status} (injected by a test rule)"
    if stream:
        # LiteLLM's streaming call quotes the error body as a bytes literal (and calls a 529 a 500); the upstream's
        # own words are in both, and only they on the translation path.
        assert upstream_words in str(via_litellm) and str(via_translation).endswith(upstream_words)
    else:
        assert str(via_translation) == str(via_litellm)
    assert dict(via_translation.headers).get(b"retry-after") == dict(via_litellm.headers).get(b"retry-after")


def test_unsupported_parameter_is_refused_alike(
    fresh_upstream: FakeUpstream, litellm_provider: LiteLLMProvider
) -> None:
    dep = deployment(fresh_upstream)
    body = {"model": "claude", **CASES["plain"], "logit_bias": {"50256": -100}}

    async def run(provider: Any) -> GatewayError:
        try:
            await provider.call(dep, "chat/completions", body, False, None)
        except GatewayError as exc:
            return exc
        raise AssertionError("no error")

    pool = Pool(EgressPolicy.from_env({"ROUTEIQ_EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8"}, []))
    via_litellm = asyncio.run(run(litellm_provider))
    via_translation = asyncio.run(run(TranslatedProvider(pool, litellm_provider)))
    assert (via_translation.status, via_translation.code, str(via_translation)) == (
        via_litellm.status,
        via_litellm.code,
        str(via_litellm),
    )
    assert via_translation.status == 400 and fresh_upstream.requests("/v1/messages") == []
