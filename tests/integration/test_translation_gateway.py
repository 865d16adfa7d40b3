"""The translation path through the running gateway, with the official openai SDK as the client (issue 12).

Each provider has two groups on the same fake upstream: one on the translation path, one kept on
litellm.acompletion by a setting only LiteLLM takes (`num_retries`). The same SDK calls to both must reach the
upstream alike and come back alike (generated ids and timestamps aside), with x-routeiq-provider-path naming
the path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, VolumeDirs, launch_gateway

MASTER = "sk-master-translate"
KEY = "sk-upstream-translate"
MODELS = {"anthropic": "anthropic/claude-3-haiku-20240307", "gemini": "gemini/gemini-2.0-flash"}
USER = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Weather in Paris?"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
    },
}
FORCED = {"type": "function", "function": {"name": "get_weather"}}
_ID = re.compile(r"chatcmpl-[0-9a-f-]{36}|msg_fake\d+|toolu_msg_fake\d+|call_[0-9a-f]{20,40}")
TRANSPORT_HEADERS = {"host", "content-length", "user-agent", "accept-encoding", "connection", "traceparent"}


def config(upstream: FakeUpstream) -> dict[str, Any]:
    model_list = []
    for provider, model in MODELS.items():
        params = {"model": model, "api_base": upstream.root_url, "api_key": KEY}
        model_list.append({"model_name": provider, "litellm_params": params})
        model_list.append({"model_name": f"{provider}-litellm", "litellm_params": {**params, "num_retries": 0}})
    return {"model_list": model_list, "general_settings": {"master_key": MASTER}}


@pytest.fixture(scope="module")
def gw(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHandle]:
    handle = launch_gateway(VolumeDirs(tmp_path_factory.mktemp("gw-translate")), config(fake_upstream))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def client(gw: GatewayHandle, fresh_upstream: FakeUpstream) -> openai.OpenAI:
    return gw.openai_client(api_key=MASTER, max_retries=0)


def normalised(obj: Any) -> Any:
    data = orjson.loads(_ID.sub("<id>", orjson.dumps(obj).decode()))
    for item in data if isinstance(data, list) else [data]:
        item.pop("created", None)
    return data


def sent(upstream: FakeUpstream) -> dict[str, Any]:
    [request] = upstream.requests()
    upstream.clear_requests()
    headers = {k: v for k, v in request["headers"].items() if k not in TRANSPORT_HEADERS}
    if headers.get("accept") == "*/*":  # httpx's default (LiteLLM's client), not part of the translation
        del headers["accept"]
    return {"path": request["path"], "body": request["body"], "headers": headers}


def call(client: openai.OpenAI, group: str, stream: bool, **kwargs: Any) -> tuple[str, Any]:
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model=group, messages=USER, stream=True, **kwargs
        ) as raw:
            path = raw.headers["x-routeiq-provider-path"]
            chunks = [c.model_dump(exclude_none=True) for c in raw.parse()]
        return path, chunks
    raw = client.chat.completions.with_raw_response.create(model=group, messages=USER, **kwargs)
    return raw.headers["x-routeiq-provider-path"], raw.parse().model_dump(exclude_none=True)


SCENARIOS = {
    "plain": (False, {"max_tokens": 30}),
    "tools": (False, {"tools": [TOOL], "tool_choice": FORCED}),
    "stream": (True, {"stream_options": {"include_usage": True}}),
    "stream_tools": (True, {"tools": [TOOL], "tool_choice": FORCED}),
}


@pytest.mark.parametrize("provider", sorted(MODELS))
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_sdk_sees_the_same_answer_on_both_paths(
    client: openai.OpenAI, fresh_upstream: FakeUpstream, provider: str, scenario: str
) -> None:
    stream, kwargs = SCENARIOS[scenario]
    fresh_upstream.clear_requests()
    path_l, answer_l = call(client, f"{provider}-litellm", stream, **kwargs)
    sent_l = sent(fresh_upstream)
    path_t, answer_t = call(client, provider, stream, **kwargs)
    sent_t = sent(fresh_upstream)
    assert (path_l, path_t) == ("litellm", "translated")
    assert sent_t == sent_l
    assert normalised(answer_t) == normalised(answer_l)
    if not stream:
        assert answer_t["usage"]["total_tokens"] > 0
    elif "stream_options" in kwargs:
        assert answer_t[-1]["usage"]["total_tokens"] > 0
