"""Body checks at the edge (issue 7, items 9 and 10): one JSON depth limit enforced at parse, and chat content
parts validated before anything (the router, a provider's encoder) reads them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from routeiq_gateway.admission.validate import MAX_JSON_DEPTH, check_chat, parse_json_object
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.routing.routers import prompt_text


def nested(depth: int) -> bytes:
    """A JSON object whose deepest value sits `depth` containers down (the body itself counts as one). Built as
    bytes: orjson cannot encode past 254 levels, which is the very failure this guards against."""
    opening = b"".join(b'{"k":' if i % 2 else b"[" for i in range(depth - 1))
    closing = b"".join(b"}" if i % 2 else b"]" for i in reversed(range(depth - 1)))
    return b'{"model":"a","messages":[{"role":"user","content":"x"}],"extra":' + opening + b"1" + closing + b"}"


@pytest.mark.parametrize("depth", [300, 1000])
def test_json_deeper_than_the_limit_is_refused_at_parse(depth: int) -> None:
    # orjson parses these (its own limit is 1024), then fails to encode them (254) when we forward: that was a 500.
    with pytest.raises(GatewayError) as info:
        parse_json_object(nested(depth))
    assert info.value.status == 400
    assert info.value.code == "invalid_json"
    assert str(MAX_JSON_DEPTH) in info.value.message


def test_json_past_orjsons_own_limit_names_ours() -> None:
    raw = b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}"
    with pytest.raises(GatewayError) as info:
        parse_json_object(raw)
    assert (info.value.status, info.value.code) == (400, "invalid_json")
    assert str(MAX_JSON_DEPTH) in info.value.message


def test_json_at_the_limit_parses_and_re_encodes() -> None:
    body = parse_json_object(nested(MAX_JSON_DEPTH - 2))
    assert orjson.loads(orjson.dumps({**body, "model": "b"}))["model"] == "b"  # what the native path does


def test_brackets_inside_strings_do_not_count() -> None:
    text = "[" * 5000 + "{" * 5000
    body = parse_json_object(orjson.dumps({"model": "a", "messages": [{"role": "user", "content": text}]}))
    assert body["messages"][0]["content"] == text


def test_many_shallow_containers_are_fine() -> None:
    body = {"model": "a", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}] * 500}
    assert len(parse_json_object(orjson.dumps(body))["messages"]) == 500


def chat(content: Any, role: str = "user") -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "system", "content": "s"}, {"role": role, "content": content}]}


@pytest.mark.parametrize(
    ("content", "param"),
    [
        ([{"type": "text", "text": 5}], "messages[1].content[0].text"),
        ([{"type": "text", "text": "a"}, {"type": "text", "text": {"x": 1}}], "messages[1].content[1].text"),
        ([{"type": "text"}], "messages[1].content[0].text"),
        (["plain string part"], "messages[1].content[0]"),
        ([{"text": "no type"}], "messages[1].content[0].type"),
        ([{"type": 7}], "messages[1].content[0].type"),
        ([{"type": "image_url", "image_url": 5}], "messages[1].content[0].image_url"),
        ([{"type": "image_url", "image_url": {"url": 5}}], "messages[1].content[0].image_url.url"),
        ([{"type": "image_url", "image_url": {}}], "messages[1].content[0].image_url.url"),
        ([{"type": "input_audio", "input_audio": {"data": "AAA"}}], "messages[1].content[0].input_audio.format"),
        ([{"type": "input_audio", "input_audio": "AAA"}], "messages[1].content[0].input_audio"),
        ([{"type": "file", "file": "x"}], "messages[1].content[0].file"),
        ([{"type": "file", "file": {"file_id": 3}}], "messages[1].content[0].file.file_id"),
        ([{"type": "refusal", "refusal": None}], "messages[1].content[0].refusal"),
        (5, "messages[1].content"),
        ({"type": "text", "text": "x"}, "messages[1].content"),
        (None, "messages[1].content"),
    ],
)
def test_content_parts_are_checked_with_their_path(content: Any, param: str) -> None:
    with pytest.raises(GatewayError) as info:
        check_chat(chat(content))
    assert (info.value.status, info.value.param) == (400, param)
    assert param in info.value.message


@pytest.mark.parametrize(
    "content",
    [
        "plain",
        [],
        [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "https://x/y", "detail": "low"}}],
        [{"type": "image_url", "image_url": "https://x/y.png"}],  # the bare-string form LiteLLM accepts
        [{"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}],
        [{"type": "file", "file": {"file_id": "file-1"}}],
        [{"type": "some_future_part", "whatever": [1, 2, {"x": None}]}],  # providers add types: pass them through
    ],
)
def test_valid_content_passes(content: Any) -> None:
    assert check_chat(chat(content)) == ("auto", False)


def test_assistant_content_may_be_null_or_absent() -> None:
    tool_call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    for msg in (
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "assistant", "tool_calls": [tool_call]},
    ):
        body = {"model": "a", "messages": [{"role": "user", "content": "q"}, msg]}
        assert check_chat(body) == ("a", False)


@pytest.mark.parametrize(
    "content",
    [[{"type": "text", "text": 5}], [{"type": "text", "text": None}, "x", 3, {"type": "text", "text": "ok"}], 12],
)
def test_router_text_extraction_never_raises(content: Any) -> None:
    # Defence in depth: whatever reaches the router, it reads the string texts and skips the rest.
    text = prompt_text(chat(content))
    assert text == ("ok" if isinstance(content, list) and len(content) == 4 else "")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": 1.5}, "tools"),  # LiteLLM's own bookkeeping iterated this and logged a TypeError (found by fuzz)
        ({"tools": [1]}, "tools[0]"),
        ({"tools": [{"function": {}}]}, "tools[0]"),
        ({"tool_choice": 3}, "tool_choice"),
        ({"stop": [1, 2]}, "stop"),
        ({"stop": {"a": 1}}, "stop"),
        ({"user": 5}, "user"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
        ({"response_format": "json"}, "response_format"),
        ({"logit_bias": []}, "logit_bias"),
    ],
)
def test_mistyped_optional_fields_are_400_naming_them(extra: dict[str, Any], param: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(GatewayError) as info:
        check_chat(body)
    assert (info.value.status, info.value.param) == (400, param)


def test_well_typed_optional_fields_pass() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": "auto",
        "stop": ["\n"],
        "user": "u-1",
        "seed": 7,
        "response_format": {"type": "json_object"},
        "logit_bias": {"50256": -100},
    }
    assert check_chat(body) == ("m", False)
