"""The pieces that make both provider paths behave alike (issue 10, Build 3), each on its own.

tests/integration/test_provider_parity.py runs the same behaviours end to end through the real gateway.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httptools
import orjson
import pytest
from routeiq_gateway.admission.validate import check_chat, check_completion
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.providers import http1
from routeiq_gateway.providers.litellm_client import LiteLLMStream
from routeiq_gateway.providers.litellm_errors import to_gateway_error
from routeiq_gateway.providers.relayed_headers import from_litellm_additional, from_provider_headers
from routeiq_gateway.providers.upstream_status import status_error
from routeiq_gateway.request_fields import redirecting_fields
from routeiq_gateway.routing.deployments import Deployment
from routeiq_gateway.state import build_state
from routeiq_shared.config_schema import load_config

USER = [{"role": "user", "content": "hi"}]
pytestmark = [pytest.mark.timeout(20), pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def built(params: dict[str, Any]) -> Deployment:
    cfg = {"model_list": [{"model_name": "g", "litellm_params": {"api_base": "http://127.0.0.1:9", **params}}]}
    return build_state(load_config(orjson.dumps(cfg), None, {}), created=0).groups["g"][0]


# -- request fields ---------------------------------------------------------------------------------------------


def test_an_ordinary_body_has_no_redirecting_field() -> None:
    body = {"model": "m", "messages": USER, "temperature": 0.1, "metadata": {}, "guided_choice": ["a"]}
    assert redirecting_fields(body) == []


def test_redirecting_fields_are_found_by_name_and_prefix_in_the_order_sent() -> None:
    body = {"model": "m", "api_key": "x", "messages": USER, "aws_secret_access_key": "s", "headers": {}}
    assert redirecting_fields(body) == ["api_key", "aws_secret_access_key", "headers"]
    with pytest.raises(GatewayError) as info:
        check_chat(body)
    assert info.value.status == 400 and info.value.param == "api_key"
    assert all(name in info.value.message for name in ("api_key", "aws_secret_access_key", "headers"))


def test_logprobs_is_a_boolean_in_chat_and_an_integer_in_completions() -> None:
    check_chat({"model": "m", "messages": USER, "logprobs": True, "top_logprobs": 3})
    check_completion({"model": "m", "prompt": "p", "logprobs": 2, "echo": True})
    with pytest.raises(GatewayError) as info:
        check_chat({"model": "m", "messages": USER, "logprobs": 2})
    assert info.value.param == "logprobs"
    with pytest.raises(GatewayError) as info:
        check_completion({"model": "m", "prompt": "p", "logprobs": True})
    assert info.value.param == "logprobs"


# -- deployment defaults ----------------------------------------------------------------------------------------


def test_native_deployment_sends_extra_headers_and_defaults_extra_body_fields() -> None:
    dep = built(
        {
            "model": "openai/m",
            "api_key": "sk-k",
            "temperature": 0.2,
            "extra_headers": {"X-Team": "blue", "Host": "evil", "content-length": "1"},
            "extra_body": {"guided_choice": ["a"], "temperature": 0.9},
        }
    )
    headers = dict(dep.headers)
    assert headers["X-Team"] == "blue" and headers["authorization"] == "Bearer sk-k"
    assert "Host" not in headers and "content-length" not in headers  # framing is the client's own
    # a top-level litellm_params value wins over the same key in extra_body
    assert dict(dep.body_defaults) == {"guided_choice": ["a"], "temperature": 0.2}


def test_litellm_deployment_defaults_only_request_parameters() -> None:
    dep = built({"model": "anthropic/c", "api_key": "k", "max_tokens": 9, "extra_body": {"x": 1}, "drop_params": True})
    assert dict(dep.body_defaults) == {"max_tokens": 9}  # extra_body stays LiteLLM's to place per provider


# -- one status table -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "client_status", "code"),
    [
        (400, 400, "upstream_rejected"),
        (404, 404, "upstream_rejected"),
        (422, 400, "upstream_rejected"),
        (418, 502, "upstream_error"),
        (402, 502, "upstream_error"),
        (401, 502, "upstream_auth"),
        (503, 502, "upstream_error"),
        (302, 502, "upstream_unexpected_status"),
    ],
)
def test_the_status_table(status: int, client_status: int, code: str) -> None:
    err = status_error(status, "the upstream's words", param="temperature")
    assert (err.status, err.code) == (client_status, code)
    if client_status == 400:
        assert err.param == "temperature"
    if status == 418:
        assert "418" in err.message and "the upstream's words" in err.message and not err.retryable


def test_a_429_carries_retry_after_and_the_relayed_headers() -> None:
    err = status_error(429, "slow down", "7", ((b"x-ratelimit-remaining-requests", b"0"),))
    assert dict(err.headers) == {b"retry-after": b"7", b"x-ratelimit-remaining-requests": b"0"}


# -- LiteLLM's exceptions read back -----------------------------------------------------------------------------


class AnthropicError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(body)
        self.status_code = status
        self.message = body


class APIConnectionError(Exception):  # LiteLLM's wrapper: its own 500 is not the upstream's answer
    status_code = 500


def wrapped(status: int, body: dict[str, Any]) -> Exception:
    try:
        try:
            raise AnthropicError(status, orjson.dumps(body).decode())
        except AnthropicError as inner:
            raise APIConnectionError("litellm.APIConnectionError: AnthropicException - …") from inner
    except APIConnectionError as outer:
        return outer


def test_a_wrapped_418_is_the_upstreams_answer_not_a_connection_failure() -> None:
    err = to_gateway_error(wrapped(418, {"type": "error", "error": {"type": "x", "message": "I am a teapot"}}))
    assert (err.status, err.code) == (502, "upstream_error")
    assert err.message == "Upstream answered 418: I am a teapot"


def test_a_wrapped_422_is_a_400() -> None:
    err = to_gateway_error(wrapped(422, {"error": {"message": "bad field"}}))
    assert (err.status, err.message) == (400, "bad field")


def test_an_unsupported_param_is_a_400_naming_it() -> None:
    class UnsupportedParamsError(Exception):
        status_code = 400
        message = (
            "litellm.UnsupportedParamsError: anthropic does not support parameters: ['seed', 'n'], for model=c. "
            "To drop these, set `litellm.drop_params=True`"
        )

    err = to_gateway_error(UnsupportedParamsError())
    assert (err.status, err.param, err.code) == (400, "seed", "unsupported_params")
    assert "'seed', 'n'" in err.message and "drop_params: true" in err.message


def test_a_rate_limit_keeps_retry_after_from_the_providers_headers() -> None:
    class RateLimitError(Exception):
        status_code = 429
        message = "litellm.RateLimitError: slow down"
        litellm_response_headers = {"retry-after": "3", "x-request-id": "r1", "server": "s"}

    err = to_gateway_error(RateLimitError())
    assert err.status == 429
    assert dict(err.headers) == {b"retry-after": b"3", b"x-request-id": b"r1"}


# -- relayed headers --------------------------------------------------------------------------------------------


def test_litellm_additional_headers_prefer_the_providers_own_values() -> None:
    additional = {
        "llm_provider-x-request-id": "r1",
        "llm_provider-x-ratelimit-limit-requests": "50",
        "x-ratelimit-limit-requests": "49",  # LiteLLM's mapping: the provider's own value wins
        "x-ratelimit-remaining-tokens": "10",  # mapped from anthropic-ratelimit-*: kept
        "llm_provider-server": "s",
        "llm_provider-x-request-id-evil": "a\r\nb",
    }
    assert dict(from_litellm_additional(additional)) == {
        b"x-request-id": b"r1",
        b"x-ratelimit-limit-requests": b"50",
        b"x-ratelimit-remaining-tokens": b"10",
    }
    assert from_provider_headers({"x-ratelimit-reset": "1\r\nset-cookie: x"}) == ()


async def test_the_native_parser_keeps_only_the_relayed_headers() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nServer: s\r\n"
        b"X-Request-Id: abc\r\nOpenAI-Processing-Ms: 4\r\nX-RateLimit-Remaining-Requests: 9\r\n\r\n{}"
    )
    conn = http1._Connection(http1.Origin("http", "h", 80))
    conn.parser = httptools.HttpResponseParser(conn)
    conn.data_received(raw)
    assert conn.passed == [
        (b"x-request-id", b"abc"),
        (b"openai-processing-ms", b"4"),
        (b"x-ratelimit-remaining-requests", b"9"),
    ]


# -- LiteLLM's stream as OpenAI's -------------------------------------------------------------------------------


async def events(chunks: list[dict[str, Any]], include_usage: bool) -> tuple[list[Any], LiteLLMStream]:
    async def source() -> AsyncIterator[dict[str, Any]]:
        for chunk in chunks:
            await asyncio.sleep(0)
            yield chunk

    stream = LiteLLMStream(source(), None, include_usage)
    out = [e async for e in stream]
    parsed = [orjson.loads(e[len(b"data: ") :]) for e in out[:-1]]
    assert out[-1] == b"data: [DONE]\n\n"
    return parsed, stream


USAGE = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


async def test_usage_on_an_empty_delta_becomes_a_chunk_with_no_choices() -> None:
    chunks = [
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"id": "c", "choices": [{"index": 0, "delta": {}}], "usage": USAGE},
    ]
    parsed, stream = await events(chunks, include_usage=True)
    assert [p["choices"] for p in parsed][-1] == []
    assert parsed[-1]["usage"] == USAGE and all("usage" not in p for p in parsed[:-1])
    assert stream.usage == USAGE


async def test_usage_riding_on_content_is_split_off_and_only_sent_when_asked() -> None:
    chunks = [
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}], "usage": USAGE}
    ]
    parsed, _ = await events(chunks, include_usage=True)
    assert [p["choices"] == [] for p in parsed] == [False, True]
    parsed, stream = await events(chunks, include_usage=False)
    assert len(parsed) == 1 and "usage" not in parsed[0]
    assert stream.usage == USAGE  # still counted for the gateway's metrics
