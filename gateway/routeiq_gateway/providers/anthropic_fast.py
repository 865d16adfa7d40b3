"""RouteIQ's own OpenAI ⇄ Anthropic mapping for the commonest shapes, used only where LiteLLM agreed with it.

translate_litellm.Judge holds every shape against LiteLLM's own output first; this module only proposes.
Everything outside these shapes is LiteLLM's alone.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from routeiq_gateway.providers.plain_chat import PlainChat

# The client's parameters the own request mapping knows (besides model, messages, stream).
FAST_PARAMS = frozenset({"max_tokens", "max_completion_tokens", "temperature", "top_p", "stream_options"})
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
_PLAIN_USAGE = frozenset({"input_tokens", "output_tokens"})


def request_body(
    model: str, chat: PlainChat, params: dict[str, Any], stream: bool, default_max_tokens: int
) -> dict[str, Any]:
    turns = [{"role": role, "content": [{"type": "text", "text": text}]} for role, text in chat.turns]
    data: dict[str, Any] = {"model": model, "messages": turns}
    for name in ("temperature", "top_p"):
        if name in params:
            data[name] = params[name]
    max_tokens = params.get("max_tokens", params.get("max_completion_tokens"))
    data["max_tokens"] = max_tokens if max_tokens is not None else default_max_tokens
    if chat.system:
        data["system"] = [{"type": "text", "text": text} for text in chat.system]
    if stream:
        data["stream"] = True
    return data


def answer_shape(data: Any) -> tuple[Any, ...] | None:
    """What the own answer mapping depends on, or None when it cannot map the answer at all."""
    if not isinstance(data, dict):
        return None
    content, usage = data.get("content"), data.get("usage")
    if not isinstance(content, list) or len(content) != 1 or not isinstance(usage, dict):
        return None
    block = content[0]
    if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
        return None
    if data.get("stop_reason") not in _FINISH or not isinstance(data.get("model"), str):
        return None
    if not _PLAIN_USAGE.issuperset(usage) or not all(isinstance(usage.get(k), int) for k in _PLAIN_USAGE):
        return None
    return (data["stop_reason"], tuple(sorted(block)), tuple(sorted(data)))


def answer(data: dict[str, Any]) -> dict[str, Any]:
    """An answer of a shape answer_shape accepted, as LiteLLM's transform_response dumps it."""
    usage = data["usage"]
    prompt, completion = usage["input_tokens"], usage["output_tokens"]
    return {
        "id": f"chatcmpl-{uuid.uuid4()}",
        "created": int(time.time()),
        "model": data["model"],
        "object": "chat.completion",
        "choices": [
            {
                "finish_reason": _FINISH[data["stop_reason"]],
                "index": 0,
                "message": {
                    "content": data["content"][0]["text"],
                    "role": "assistant",
                    "provider_specific_fields": {"citations": None, "thinking_blocks": None},
                },
            }
        ],
        "usage": usage_of(prompt, completion),
    }


def usage_of(prompt: int, completion: int) -> dict[str, Any]:
    """Anthropic's plain usage (input_tokens, output_tokens) as LiteLLM's AnthropicConfig.calculate_usage tells it."""
    return {
        "completion_tokens": completion,
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": 0, "text_tokens": completion},
        "prompt_tokens_details": {
            "cache_write_tokens": 0,
            "cached_tokens": 0,
            "text_tokens": prompt,
            "cache_creation_tokens": 0,
        },
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


_STREAM_FINISH = {**_FINISH, "tool_use": "tool_calls"}


def message_event(chunk: dict[str, Any], response_id: str) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """(shape, the parser's chunk) for a message_start or message_delta with plain usage, else None."""
    kind = chunk.get("type")
    if kind == "message_start":
        message = chunk.get("message")
        usage = message.get("usage") if type(message) is dict else None
        finish = None
    elif kind == "message_delta":
        delta, usage = chunk.get("delta"), chunk.get("usage")
        if type(delta) is not dict or not {"stop_reason", "stop_sequence"}.issuperset(delta):
            return None
        finish = _STREAM_FINISH.get(delta.get("stop_reason"))  # type: ignore[arg-type]
        if finish is None:
            return None
    else:
        return None
    if type(usage) is not dict or not usage or not _PLAIN_USAGE.issuperset(usage):
        return None
    if not all(type(v) is int for v in usage.values()):
        return None
    choice: dict[str, Any] = {"index": 0, "delta": {"content": ""}}
    if finish is not None:
        choice = {"finish_reason": finish, **choice}
    out = {
        "id": response_id,
        "created": int(time.time()),
        "object": "chat.completion.chunk",
        "choices": [choice],
        "usage": usage_of(usage.get("input_tokens", 0), usage.get("output_tokens", 0)),
    }
    return (kind, tuple(sorted(usage)), finish), out


def text_delta(chunk: dict[str, Any]) -> str | None:
    """The text of a plain content_block_delta text_delta event, else None."""
    if chunk.get("type") != "content_block_delta":
        return None
    delta = chunk.get("delta")
    if type(delta) is not dict or delta.get("type") != "text_delta" or len(delta) != 2:
        return None
    text = delta.get("text")
    return text if type(text) is str else None


def empty_text_block(chunk: dict[str, Any]) -> bool:
    """A content_block_start opening an empty text block (what Anthropic's streams open with)."""
    block = chunk.get("content_block")
    return type(block) is dict and block.get("type") == "text" and block.get("text") == "" and len(block) == 2
