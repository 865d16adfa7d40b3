"""Request body checks, hand-written because they run on every request (pydantic would cost more than the rest).

They catch what would otherwise reach the upstream as garbage: a missing or mistyped field gets a 400 naming it,
as OpenAI answers.
"""

from __future__ import annotations

from typing import Any

import orjson

from routeiq_gateway.http.errors import GatewayError, bad_request
from routeiq_gateway.request_fields import redirecting_fields

# One nesting limit for every body. orjson parses up to 1024 levels but encodes only 254, so a deeper body parsed
# and then failed in the forwarding encoder (a 500). 128 leaves room for JSON-schema tools and response formats.
MAX_JSON_DEPTH = 128
_TOO_DEEP = f"Request body is nested deeper than {MAX_JSON_DEPTH} levels."


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise GatewayError(400, "Request body is empty; expected a JSON object.", code="invalid_json")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # past orjson's own limit (1024): say which limit the client crossed
            raise GatewayError(400, _TOO_DEEP, code="invalid_json") from None
        raise GatewayError(400, f"Request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise GatewayError(400, "Request body must be a JSON object.", code="invalid_json")
    # Fewer opening brackets than the limit (in or out of strings) cannot nest deeper than it: ordinary bodies stop
    # at this C-speed count, and only the rest pay for the walk over the parsed object.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _deeper_than(data, MAX_JSON_DEPTH):
        raise GatewayError(400, _TOO_DEEP, code="invalid_json")
    return data


def _deeper_than(root: dict[str, Any], limit: int) -> bool:
    """Whether containers nest more than `limit` levels (the root is level 1). Iterative: no recursion limit."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _type_error(param: str, expected: str) -> GatewayError:
    return bad_request(f"'{param}' must be {expected}.", param)


def _common(body: dict[str, Any]) -> tuple[str, bool]:
    model = body.get("model")
    if model is None:
        raise bad_request("'model' is required.", "model")
    if not isinstance(model, str) or not model:
        raise _type_error("model", "a non-empty string")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise _type_error("stream", "a boolean")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise _type_error("stream_options", "an object")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise _type_error(name, "a positive integer")
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise _type_error(name, "a number")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise _type_error("seed", "an integer")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _type_error("user", "a string")
    stop = body.get("stop")
    if (
        stop is not None
        and not isinstance(stop, str)
        and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop))
    ):
        raise _type_error("stop", "a string or an array of strings")
    for name in ("logit_bias", "response_format", "metadata"):
        value = body.get(name)
        if value is not None and not isinstance(value, dict):
            raise _type_error(name, "an object")
    redirecting = redirecting_fields(body)
    if redirecting:
        names = ", ".join(f"'{k}'" for k in redirecting)
        raise bad_request(
            f"{names} would redirect the provider call or its credentials; only the deployment's config sets "
            "them. Other extra fields reach the upstream as they are.",
            redirecting[0],
        )
    return model, bool(stream)


def check_chat(body: dict[str, Any]) -> tuple[str, bool]:
    model, stream = _common(body)
    messages = body.get("messages")
    if messages is None:
        raise bad_request("'messages' is required.", "messages")
    if not isinstance(messages, list) or not messages:
        raise _type_error("messages", "a non-empty array")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _type_error(f"messages[{i}]", "an object")
        role = msg.get("role")
        if not isinstance(role, str):
            raise _type_error(f"messages[{i}].role", "a string")
        content = msg.get("content")
        if type(content) is not str:  # the common case costs one type check
            _check_content(content, role, i)
    tools = body.get("tools")
    if tools is not None:
        # Providers (and LiteLLM's own bookkeeping on its path) iterate these: a mistyped value must stop here.
        if not isinstance(tools, list):
            raise _type_error("tools", "an array")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
                raise _type_error(f"tools[{i}]", "an object with a string 'type'")
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, str | dict):
        raise _type_error("tool_choice", "a string or an object")
    for name in ("logprobs", "parallel_tool_calls"):
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            raise _type_error(name, "a boolean")
    top = body.get("top_logprobs")
    if top is not None and (not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= 20):
        raise _type_error("top_logprobs", "an integer from 0 to 20")
    return model, stream


def _part_error(param: str, expected: str) -> GatewayError:
    return bad_request(f"'{param}' must be {expected}.", param)


# Content part type → its payload field and that field's required string members ((): the field is a string).
# Types not listed pass through untouched: providers add new ones, and the upstream judges those.
_PARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "text": ("text", ()),
    "refusal": ("refusal", ()),
    "image_url": ("image_url", ("url",)),
    "input_audio": ("input_audio", ("data", "format")),
}


def _check_content(content: Any, role: str, i: int) -> None:
    """messages[i].content: a string, an array of parts, or null/absent where OpenAI allows it (assistant)."""
    param = f"messages[{i}].content"
    if content is None:
        if role == "assistant":  # an assistant turn that only calls tools has no content
            return
        raise _part_error(param, "a string or an array of content parts")
    if not isinstance(content, list):
        raise _part_error(param, "a string or an array of content parts")
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise _part_error(where, "an object with a string 'type'")
        kind = part.get("type")
        if not isinstance(kind, str):
            raise _part_error(f"{where}.type", "a string")
        if kind == "file":
            _check_file(part.get("file"), f"{where}.file")
            continue
        spec = _PARTS.get(kind)
        if spec is None:
            continue
        field, members = spec
        value = part.get(field)
        if not members:
            if not isinstance(value, str):
                raise _part_error(f"{where}.{field}", "a string")
            continue
        if kind == "image_url" and isinstance(value, str):
            continue  # the bare-URL form LiteLLM accepts
        if not isinstance(value, dict):
            raise _part_error(f"{where}.{field}", "an object")
        for member in members:
            if not isinstance(value.get(member), str):
                raise _part_error(f"{where}.{field}.{member}", "a string")


def _check_file(value: Any, param: str) -> None:
    if not isinstance(value, dict):
        raise _part_error(param, "an object")
    for member in ("file_id", "file_data", "filename"):
        if member in value and not isinstance(value[member], str):
            raise _part_error(f"{param}.{member}", "a string")


def check_completion(body: dict[str, Any]) -> tuple[str, bool]:
    model, stream = _common(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise bad_request("'prompt' is required.", "prompt")
    if not isinstance(prompt, str | list):
        raise _type_error("prompt", "a string or an array")
    echo = body.get("echo")
    if echo is not None and not isinstance(echo, bool):
        raise _type_error("echo", "a boolean")
    logprobs = body.get("logprobs")  # here an integer: how many alternatives per token (0 to 5)
    if logprobs is not None and (not isinstance(logprobs, int) or isinstance(logprobs, bool) or not 0 <= logprobs <= 5):
        raise _type_error("logprobs", "an integer from 0 to 5")
    return model, stream


def check_embedding(body: dict[str, Any]) -> tuple[str, bool]:
    model, _ = _common(body)
    data = body.get("input")
    if data is None:
        raise bad_request("'input' is required.", "input")
    if not isinstance(data, str | list) or not data:
        raise _type_error("input", "a non-empty string or array")
    if body.get("stream"):
        raise bad_request("Embeddings cannot be streamed.", "stream")
    return model, False


CHECKS = {
    "chat/completions": check_chat,
    "completions": check_completion,
    "embeddings": check_embedding,
}
