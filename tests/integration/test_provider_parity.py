"""One behaviour on both provider paths (issue 10, Build 3), through the real gateway and the official openai SDK.

Every scenario runs twice: on an `openai/…` deployment (the native pass-through) and on an `anthropic/…` one
(LiteLLM, against the fake upstream's Anthropic Messages endpoint). What reached the upstream is read from the
fake upstream's request log.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, VolumeDirs, launch_gateway

MASTER = "sk-master-parity"
UPSTREAM_KEY = "sk-upstream-parity"
USER = [{"role": "user", "content": "Say something"}]
DEMO = "This is a demo response from RouteIQ's fake provider."
# Deployment defaults set in litellm_params: they apply when the request leaves the field out.
DEFAULTS = {"temperature": 0.25, "max_tokens": 17, "extra_headers": {"x-team": "blue"}}
# model group → (path, the model name its requests carry upstream, the upstream path)
GROUPS = {
    "native": ("native", "fake-native", "/v1/chat/completions"),
    "litellm": ("litellm", "claude-3-haiku-20240307", "/v1/messages"),
    "native-defaults": ("native", "fake-native-defaults", "/v1/chat/completions"),
    "litellm-defaults": ("litellm", "claude-defaults", "/v1/messages"),
    "native-drop": ("native", "fake-native-drop", "/v1/chat/completions"),
    "litellm-drop": ("litellm", "claude-drop", "/v1/messages"),
}
BOTH = pytest.mark.parametrize("group", ["native", "litellm"])
PASSED_HEADERS = {
    "x-request-id": "req_abc123",
    "openai-processing-ms": "42",
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-remaining-requests": "499",
    "x-ratelimit-reset-tokens": "6ms",
}


def _deployment(name: str, upstream: FakeUpstream, **extra: Any) -> dict[str, Any]:
    path, model, _ = GROUPS[name]
    base = upstream.base_url if path == "native" else upstream.root_url
    prefix = "openai" if path == "native" else "anthropic"
    params = {"model": f"{prefix}/{model}", "api_base": base, "api_key": UPSTREAM_KEY, **extra}
    if path == "litellm":
        # anthropic/ is on the translation path (issue 12); a setting only litellm.acompletion takes keeps these
        # deployments on LiteLLM, the path this module compares with the native one.
        params["num_retries"] = 0
    return {"model_name": name, "litellm_params": params}


def parity_config(upstream: FakeUpstream) -> dict[str, Any]:
    return {
        "model_list": [
            _deployment("native", upstream),
            _deployment("litellm", upstream),
            _deployment("native-defaults", upstream, **DEFAULTS),
            _deployment("litellm-defaults", upstream, **DEFAULTS),
            _deployment("native-drop", upstream, drop_params=True),
            _deployment("litellm-drop", upstream, drop_params=True),
        ],
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER},
    }


@pytest.fixture(scope="module")
def gw(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHandle]:
    handle = launch_gateway(VolumeDirs(tmp_path_factory.mktemp("gw-parity")), parity_config(fake_upstream))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def client(gw: GatewayHandle, fresh_upstream: FakeUpstream) -> openai.OpenAI:
    return gw.openai_client(api_key=MASTER)


def sent_body(upstream: FakeUpstream, group: str) -> dict[str, Any]:
    (sent,) = upstream.requests(GROUPS[group][2])
    body: dict[str, Any] = sent["body"]
    return body


# --- litellm_params defaults -------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["native-defaults", "litellm-defaults"])
def test_deployment_defaults_apply_on_both_paths(
    client: openai.OpenAI, fresh_upstream: FakeUpstream, group: str
) -> None:
    raw = client.chat.completions.with_raw_response.create(model=group, messages=USER)
    assert raw.headers["x-routeiq-provider-path"] == GROUPS[group][0]
    assert raw.parse().choices[0].message.content == DEMO
    (sent,) = fresh_upstream.requests(GROUPS[group][2])
    assert sent["body"]["temperature"] == DEFAULTS["temperature"]
    assert sent["body"]["max_tokens"] == DEFAULTS["max_tokens"]
    assert sent["headers"]["x-team"] == "blue"
    assert "extra_headers" not in sent["body"]


@pytest.mark.parametrize("group", ["native-defaults", "litellm-defaults"])
def test_the_clients_own_value_wins_over_a_default(
    client: openai.OpenAI, fresh_upstream: FakeUpstream, group: str
) -> None:
    client.chat.completions.create(model=group, messages=USER, max_tokens=5, temperature=0.9)
    body = sent_body(fresh_upstream, group)
    assert body["max_tokens"] == 5
    assert body["temperature"] == 0.9


# --- extra_body ----------------------------------------------------------------------------------------------


@BOTH
def test_extra_body_fields_reach_the_upstream(client: openai.OpenAI, fresh_upstream: FakeUpstream, group: str) -> None:
    extra = {"routing_hint": "eu-only", "guided_choice": ["yes", "no"]}
    client.chat.completions.create(model=group, messages=USER, extra_body=extra)
    body = sent_body(fresh_upstream, group)
    assert body["routing_hint"] == "eu-only"
    assert body["guided_choice"] == ["yes", "no"]


@BOTH
@pytest.mark.parametrize(
    "hostile",
    [
        {"api_base": "http://127.0.0.1:9/v1"},
        {"base_url": "http://127.0.0.1:9"},
        {"api_key": "attacker"},
        {"extra_headers": {"x-injected": "1"}},
        {"headers": {"authorization": "Bearer attacker"}},
    ],
)
def test_fields_that_would_redirect_the_call_are_refused_by_name(
    client: openai.OpenAI, fresh_upstream: FakeUpstream, group: str, hostile: dict[str, Any]
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=group, messages=USER, extra_body=hostile)
    (name,) = hostile
    assert info.value.status_code == 400
    assert info.value.body["param"] == name
    assert info.value.body["type"] == "invalid_request_error"
    assert name in info.value.body["message"]
    assert fresh_upstream.requests() == []


def test_every_redirecting_field_is_named_in_one_refusal(client: openai.OpenAI, fresh_upstream: FakeUpstream) -> None:
    hostile = {"api_key": "attacker", "api_base": "http://127.0.0.1:9", "headers": {}}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="litellm", messages=USER, extra_body=hostile)
    for name in hostile:
        assert name in info.value.body["message"]
    assert fresh_upstream.requests() == []


# --- drop_params ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["native-drop", "litellm-drop"])
def test_n_logprobs_seed_obey_drop_params(client: openai.OpenAI, fresh_upstream: FakeUpstream, group: str) -> None:
    reply = client.chat.completions.create(model=group, messages=USER, n=1, logprobs=True, seed=7)
    assert reply.choices[0].message.content == DEMO
    body = sent_body(fresh_upstream, group)
    if GROUPS[group][0] == "native":
        # OpenAI's protocol has all three: nothing is unsupported, so nothing is dropped.
        assert (body["n"], body["logprobs"], body["seed"]) == (1, True, 7)
    else:
        # Anthropic's Messages API has none of them: dropped, as drop_params asks.
        assert not {"n", "logprobs", "seed"} & set(body)


@pytest.mark.parametrize("param", ["n", "logprobs", "seed"])
def test_without_drop_params_an_unsupported_param_is_a_400_naming_it(
    client: openai.OpenAI, fresh_upstream: FakeUpstream, param: str
) -> None:
    value: Any = {"n": 2, "logprobs": True, "seed": 7}[param]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="litellm", messages=USER, extra_body={param: value})
    assert info.value.body["param"] == param
    assert "drop_params" in info.value.body["message"]
    assert fresh_upstream.requests() == []


# --- upstream answers told as they were ----------------------------------------------------------------------


@BOTH
def test_retry_after_on_429_passes_through(gw: GatewayHandle, fresh_upstream: FakeUpstream, group: str) -> None:
    fresh_upstream.add_rule(model=GROUPS[group][1], status=429, retry_after="7", times=1)
    client = gw.openai_client(api_key=MASTER, max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=group, messages=USER)
    assert info.value.response.headers["retry-after"] == "7"


@BOTH
def test_the_usage_chunk_of_a_stream_has_no_choices(client: openai.OpenAI, group: str) -> None:
    chunks = list(
        client.chat.completions.create(model=group, messages=USER, stream=True, stream_options={"include_usage": True})
    )
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1
    assert with_usage[0] is chunks[-1]
    assert with_usage[0].choices == []
    assert with_usage[0].usage is not None and with_usage[0].usage.completion_tokens > 0
    assert all(c.choices for c in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == DEMO


@BOTH
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_request_id_and_rate_limit_headers_reach_the_client(
    client: openai.OpenAI, fresh_upstream: FakeUpstream, group: str, stream: bool
) -> None:
    fresh_upstream.add_rule(model=GROUPS[group][1], headers=PASSED_HEADERS, times=1)
    if stream:
        with client.chat.completions.with_streaming_response.create(model=group, messages=USER, stream=True) as raw:
            headers = raw.headers
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        assert text == DEMO
    else:
        raw_reply = client.chat.completions.with_raw_response.create(model=group, messages=USER)
        headers = raw_reply.headers
        assert raw_reply.parse().choices[0].message.content == DEMO
    for name, value in PASSED_HEADERS.items():
        assert headers.get(name) == value, name


@BOTH
def test_an_unmapped_upstream_status_says_what_the_upstream_said(
    gw: GatewayHandle, fresh_upstream: FakeUpstream, group: str
) -> None:
    fresh_upstream.add_rule(model=GROUPS[group][1], status=418)
    resp = httpx.post(
        gw.url("/v1/chat/completions"),
        json={"model": group, "messages": USER},
        headers={"authorization": f"Bearer {MASTER}"},
        timeout=10,
    )
    assert resp.status_code == 502, resp.text
    err = resp.json()["error"]
    assert "connection failed" not in err["message"].lower()
    assert "418" in err["message"]
    assert "injected by a test rule" in err["message"]  # the upstream's own words
    assert err["code"] == "upstream_error"


@BOTH
def test_an_upstream_422_reaches_the_client_as_a_400(
    client: openai.OpenAI, fresh_upstream: FakeUpstream, group: str
) -> None:
    fresh_upstream.add_rule(model=GROUPS[group][1], status=422)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=group, messages=USER)
    assert info.value.status_code == 400
    assert info.value.body["type"] == "invalid_request_error"


# --- invalid parameters --------------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logprobs", "yes"),
        ("top_logprobs", -1),
        ("top_logprobs", "3"),
        ("n", 0),
        ("parallel_tool_calls", "no"),
        ("tool_choice", 3),
        ("stop", [1, 2]),
        ("response_format", "json"),
        ("logit_bias", [1]),
    ],
)
def test_invalid_params_are_400_naming_the_param(
    client: openai.OpenAI, fresh_upstream: FakeUpstream, group: str, field: str, value: Any
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=group, messages=USER, extra_body={field: value})
    assert info.value.status_code == 400
    assert info.value.body["type"] == "invalid_request_error"
    assert info.value.body["param"] == field
    assert fresh_upstream.requests() == []
