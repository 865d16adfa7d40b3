"""Request body checks, hand-written because they run on every request (pydantic would cost more than the rest).

They catch what would otherwise reach the upstream as garbage: a missing or mistyped field gets a 422 naming it.
"""

from __future__ import annotations

from typing import Any

import orjson

from routeiq_gateway.http.errors import GatewayError, bad_request


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise GatewayError(400, "Request body is empty; expected a JSON object.", code="invalid_json")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"Request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise GatewayError(400, "Request body must be a JSON object.", code="invalid_json")
    return data


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
        if not isinstance(msg.get("role"), str):
            raise _type_error(f"messages[{i}].role", "a string")
    return model, stream


def check_completion(body: dict[str, Any]) -> tuple[str, bool]:
    model, stream = _common(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise bad_request("'prompt' is required.", "prompt")
    if not isinstance(prompt, str | list):
        raise _type_error("prompt", "a string or an array")
    return model, stream


def check_embedding(body: dict[str, Any]) -> tuple[str, bool]:
    model, _ = _common(body)
    data = body.get("input")
    if data is None:
        raise bad_request("'input' is required.", "input")
    if not isinstance(data, str | list) or not data:
        raise _type_error("input", "a non-empty string or array")
    if body.get("stream"):
        raise bad_request("Embeddings cannot be streamed.", "stream", status=400)
    return model, False


CHECKS = {
    "chat/completions": check_chat,
    "completions": check_completion,
    "embeddings": check_embedding,
}
