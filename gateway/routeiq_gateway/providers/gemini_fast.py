"""RouteIQ's own OpenAI ⇄ Gemini generateContent mapping for the commonest shapes, used only where LiteLLM agreed.

translate_litellm.Judge holds every shape against LiteLLM's own output first; this module only proposes.
Everything outside these shapes is LiteLLM's alone.
"""

from __future__ import annotations

import time
from typing import Any

from routeiq_gateway.providers.plain_chat import PlainChat

# The client's parameters the own request mapping knows (besides model, messages, stream).
FAST_PARAMS = frozenset({"max_tokens", "max_completion_tokens", "temperature", "top_p", "stream_options"})
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
_TOP = frozenset({"candidates", "usageMetadata", "modelVersion", "responseId"})
_CANDIDATE = frozenset({"content", "finishReason", "index"})
_USAGE = frozenset({"promptTokenCount", "candidatesTokenCount", "totalTokenCount"})
# The metadata LiteLLM's Gemini answers carry, empty when the upstream sent none.
_EMPTY_METADATA: dict[str, list[Any]] = {
    "vertex_ai_grounding_metadata": [],
    "vertex_ai_url_context_metadata": [],
    "vertex_ai_safety_results": [],
    "vertex_ai_citation_metadata": [],
}
_EMPTY_CHUNK_METADATA = {**_EMPTY_METADATA, "vertex_ai_safety_ratings": []}


def request_body(chat: PlainChat, params: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "contents": [
            {"role": "user" if role == "user" else "model", "parts": [{"text": text}]} for role, text in chat.turns
        ]
    }
    if chat.system:
        data["system_instruction"] = {"parts": [{"text": text} for text in chat.system]}
    config: dict[str, Any] = {}
    for name in ("temperature", "top_p"):
        if name in params:
            config[name] = params[name]
    max_tokens = params.get("max_tokens", params.get("max_completion_tokens"))
    if max_tokens is not None:
        config["max_output_tokens"] = max_tokens
    if config:
        data["generationConfig"] = config
    return data


def _text_candidate(data: Any) -> tuple[dict[str, Any], str] | None:
    """(the one candidate, its one text part) of a plain text answer, else None."""
    if not isinstance(data, dict) or not _TOP.issuperset(data) or not isinstance(data.get("responseId"), str):
        return None
    candidates = data.get("candidates")
    if not isinstance(candidates, list) or len(candidates) != 1 or type(candidates[0]) is not dict:
        return None
    candidate = candidates[0]
    content = candidate.get("content")
    if not _CANDIDATE.issuperset(candidate) or type(content) is not dict or content.get("role") != "model":
        return None
    parts = content.get("parts")
    if not isinstance(parts, list) or len(parts) != 1 or type(parts[0]) is not dict or len(parts[0]) != 1:
        return None
    text = parts[0].get("text")
    return (candidate, text) if type(text) is str else None


def _usage(data: dict[str, Any]) -> dict[str, int] | None:
    usage = data.get("usageMetadata")
    if type(usage) is not dict or set(usage) != _USAGE or not all(type(v) is int for v in usage.values()):
        return None
    return usage


def answer_shape(data: Any) -> tuple[Any, ...] | None:
    """What the own answer mapping depends on, or None when it cannot map the answer at all."""
    found = _text_candidate(data)
    if found is None or _usage(data) is None or found[0].get("finishReason") not in _FINISH:
        return None
    return (found[0]["finishReason"], tuple(sorted(data)), tuple(sorted(found[0])))


def answer(data: dict[str, Any], model: str) -> dict[str, Any]:
    """An answer of a shape answer_shape accepted, as LiteLLM's transform_response dumps it."""
    candidate, text = _text_candidate(data)  # type: ignore[misc]  # answer_shape accepted it
    usage = data["usageMetadata"]
    completion = usage["candidatesTokenCount"]
    return {
        "id": data["responseId"],
        "created": int(time.time()),
        "model": model,
        "object": "chat.completion",
        "choices": [
            {
                "finish_reason": _FINISH[candidate["finishReason"]],
                "index": 0,
                "message": {"content": text, "role": "assistant", "images": [], "thinking_blocks": []},
            }
        ],
        "usage": {
            "completion_tokens": completion,
            "prompt_tokens": usage["promptTokenCount"],
            "total_tokens": usage["totalTokenCount"],
            "completion_tokens_details": {"text_tokens": completion},
            "prompt_tokens_details": {},
        },
        **_EMPTY_METADATA,
    }


def chunk_shape(data: Any) -> tuple[tuple[Any, ...], str] | None:
    """(shape, text) of a stream event that is one text part and nothing else (no finish, no usage), else None."""
    found = _text_candidate(data)
    if found is None or "finishReason" in found[0] or "usageMetadata" in data:
        return None
    return (len(data), len(found[0])), found[1]  # _text_candidate allowed only known keys: their count says which


def chunk(data: dict[str, Any], text: str) -> dict[str, Any]:
    """A stream event chunk_shape accepted, as LiteLLM's chunk parser makes it (before its stream wrapper)."""
    return {
        "id": data["responseId"],
        "created": int(time.time()),
        "object": "chat.completion.chunk",
        # LiteLLM's Gemini parser reports `stop` on every chunk; its stream wrapper (our StreamFinisher) holds it.
        "choices": [{"finish_reason": "stop", "index": 0, "delta": {"content": text}}],
        **_EMPTY_CHUNK_METADATA,
    }
