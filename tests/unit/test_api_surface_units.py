"""Units of the API surface beyond chat: the multipart form parser, the endpoint body checks, what a router reads
per endpoint, usage in chat's terms, Anthropic's error shape and its api_base."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from routeiq_gateway.admission.endpoint_checks import SURFACE_CHECKS
from routeiq_gateway.http.anthropic_errors import anthropic_error_body, anthropic_error_event
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.http.multipart import Upload, encode_form, parse_form
from routeiq_gateway.providers.surface import anthropic_url, chat_usage
from routeiq_gateway.routing.routable import routing_body
from routeiq_gateway.routing.routers import prompt_text


def client_form(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, bytes]:
    """A form encoded by httpx, as the openai SDK sends it."""
    request = httpx.Request("POST", "http://x/", data=fields, files=files)
    return request.read(), request.headers["content-type"].encode()


def test_a_client_form_parses_and_encodes_back() -> None:
    audio = bytes(range(256)) * 4 + b"\r\n--not-the-boundary\r\n"
    raw, content_type = client_form({"model": "whisper", "language": "en"}, {"file": ("a b.wav", audio, "audio/wav")})
    form = parse_form(raw, content_type)
    assert form == {"model": "whisper", "language": "en", "file": Upload("a b.wav", "audio/wav", audio)}
    again, again_type = encode_form({**form, "model": "whisper-1"})
    assert parse_form(again, again_type) == {**form, "model": "whisper-1"}


FORM = b"multipart/form-data; boundary=b"
PART = b"--b\r\nContent-Disposition: form-data"


@pytest.mark.parametrize(
    ("raw", "content_type", "code"),
    [
        (b"{}", b"application/json", "invalid_content_type"),
        (b"{}", None, "invalid_content_type"),
        (b"x", b"multipart/form-data", "invalid_multipart"),  # no boundary
        (b"no delimiter here", b"multipart/form-data; boundary=b", "invalid_multipart"),
        (PART + b"\r\n\r\nx\r\n--b--", FORM, "invalid_multipart"),  # a part without a name
        (PART + b'; name="a"\r\n\r\nx', FORM, "invalid_multipart"),  # no closing boundary
        (PART + b'; name="a"\r\n\r\n\xff\r\n--b--', FORM, "invalid_multipart"),  # a text field not UTF-8
    ],
)  # fmt: skip
def test_malformed_forms_are_a_400(raw: bytes, content_type: bytes | None, code: str) -> None:
    with pytest.raises(GatewayError) as err:
        parse_form(raw, content_type)
    assert err.value.status == 400 and err.value.code == code


def test_too_many_parts_are_refused() -> None:
    raw, content_type = client_form({f"f{i}": "x" for i in range(100)}, {"file": ("a", b"x", "audio/wav")})
    with pytest.raises(GatewayError, match="more than"):
        parse_form(raw, content_type)


def check(endpoint: str, body: dict[str, Any]) -> str | None:
    """The `param` of the 400 the check raises, or None when it accepts the body."""
    try:
        SURFACE_CHECKS[endpoint](body)
    except GatewayError as exc:
        assert exc.status == 400
        return exc.param
    return None


def test_responses_checks() -> None:
    assert check("responses", {"model": "m", "input": "hi", "stream": True}) is None
    assert check("responses", {"model": "m", "input": [{"role": "user", "content": "hi"}]}) is None
    assert check("responses", {"model": "m"}) == "input"
    assert check("responses", {"model": "m", "input": 3}) == "input"
    assert check("responses", {"model": "m", "input": ""}) == "input"
    assert check("responses", {"model": "m", "input": ["x"]}) == "input[0]"
    assert check("responses", {"model": "m", "input": "x", "max_output_tokens": 0}) == "max_output_tokens"
    assert check("responses", {"model": "m", "input": "x", "temperature": True}) == "temperature"
    assert check("responses", {"input": "x"}) == "model"


def test_messages_checks() -> None:
    ok = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}
    assert check("messages", ok) is None
    assert check("messages", {**ok, "max_tokens": None}) == "max_tokens"
    assert check("messages", {**ok, "messages": []}) == "messages"
    assert check("messages", {**ok, "messages": [{"role": "system", "content": "x"}]}) == "messages[0].role"
    assert check("messages", {**ok, "messages": [{"role": "user", "content": 1}]}) == "messages[0].content"
    assert check("messages", {**ok, "system": 3}) == "system"


def test_other_endpoint_checks() -> None:
    assert check("moderations", {"model": "m", "input": ["a"]}) is None
    assert check("moderations", {"model": "m", "input": []}) == "input"
    assert check("images/generations", {"model": "m", "prompt": "p", "response_format": "b64_json"}) is None
    assert check("images/generations", {"model": "m", "prompt": "p", "n": 0}) == "n"
    assert check("images/generations", {"model": "m", "prompt": "p", "stream": True}) == "stream"
    assert check("audio/speech", {"model": "m", "input": "x", "voice": "alloy"}) is None
    assert check("audio/speech", {"model": "m", "input": "x"}) == "voice"
    assert check("rerank", {"model": "m", "query": "q", "documents": ["a", {"text": "b"}]}) is None
    assert check("rerank", {"model": "m", "query": "q", "documents": [1]}) == "documents[0]"
    upload = Upload("a.wav", "audio/wav", b"RIFF")
    assert check("audio/transcriptions", {"model": "m", "file": upload}) is None
    assert check("audio/transcriptions", {"model": "m"}) == "file"
    assert check("audio/transcriptions", {"model": "m", "file": "text"}) == "file"
    assert check("audio/transcriptions", {"model": "m", "file": Upload("a", "x", b"")}) == "file"
    assert check("audio/transcriptions", {"file": upload}) == "model"


def test_what_a_router_reads_per_endpoint() -> None:
    chat = {"messages": [{"role": "user", "content": "hello"}]}
    assert routing_body("chat/completions", chat, "auto") is chat
    assert prompt_text(routing_body("responses", {"input": "plain text"}, "auto")) == "plain text"
    items = {"input": [{"role": "user", "content": [{"type": "input_text", "text": "from parts"}]}], "user": "u1"}
    view = routing_body("responses", items, "auto")
    assert prompt_text(view) == "from parts" and view["user"] == "u1"
    anthropic = {"messages": [{"role": "user", "content": [{"type": "text", "text": "claude text"}]}]}
    assert prompt_text(routing_body("messages", anthropic, "auto")) == "claude text"
    with pytest.raises(GatewayError) as err:
        routing_body("images/generations", {"prompt": "x"}, "auto")
    assert err.value.status == 400 and err.value.param == "model" and "router" in err.value.message


def test_usage_in_chats_terms() -> None:
    assert chat_usage({"input_tokens": 3, "output_tokens": 4}) == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
    }
    chat = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert chat_usage(chat) is chat
    assert chat_usage(None) is None and chat_usage({"other": 1}) is None


def test_anthropic_error_shape_and_event() -> None:
    exc = GatewayError(429, "slow down", code="upstream_rate_limited")
    assert orjson.loads(anthropic_error_body(exc)) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    event = anthropic_error_event(GatewayError(502, "gone"))
    assert event.startswith(b"event: error\ndata: ") and event.endswith(b"\n\n")
    assert orjson.loads(event.split(b"data: ", 1)[1])["error"]["type"] == "api_error"


@pytest.mark.parametrize(
    ("api_base", "url"),
    [
        (None, "https://api.anthropic.com/v1/messages"),
        ("http://h:1", "http://h:1/v1/messages"),
        ("http://h:1/", "http://h:1/v1/messages"),
        ("http://h:1/v1", "http://h:1/v1/messages"),
        ("http://h:1/v1/messages", "http://h:1/v1/messages"),
    ],
)
def test_anthropic_api_base_read_as_litellm_reads_it(api_base: str | None, url: str) -> None:
    assert anthropic_url(api_base) == url
