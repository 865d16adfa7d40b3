"""The tokens a request is likely to use, reserved against tpm before the call (limits.py) and corrected by the real
usage after it. Cheap on purpose, no tokenizer on the hot path: the prompt's text at ~4 characters a token, plus
the completion's cap (`max_tokens`, `max_completion_tokens`, `max_output_tokens`) or a configured default."""

from __future__ import annotations

from typing import Any

_CHARS_PER_TOKEN = 4
_CAPS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
_TEXT_FIELDS = ("messages", "input", "prompt", "system", "instructions", "query", "documents")
_NO_COMPLETION = frozenset({"embeddings", "moderations", "rerank"})


def estimate_tokens(endpoint: str, body: dict[str, Any], default_completion: int) -> int:
    chars = 0
    for name in _TEXT_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if name == "messages" and isinstance(value, list):
            for message in value:  # the common case first: plain string contents
                content = message.get("content") if isinstance(message, dict) else None
                chars += len(content) if isinstance(content, str) else _text_chars(content)
        else:
            chars += _text_chars(value)
    prompt = -(-chars // _CHARS_PER_TOKEN)
    if endpoint in _NO_COMPLETION:
        return prompt
    for cap in _CAPS:
        value = body.get(cap)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return prompt + value
    return prompt + default_completion


def _text_chars(value: Any, depth: int = 0) -> int:
    """Characters of text in a message list, content parts or a plain string (bounded depth: bodies are checked
    but this must never be what fails a request)."""
    if isinstance(value, str):
        return len(value)
    if depth > 4:
        return 0
    if isinstance(value, list):
        return sum(_text_chars(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return sum(_text_chars(value.get(k), depth + 1) for k in ("content", "text", "input"))
    return 0
