"""Server-sent events as OpenAI streams them: one `data:` line per event, a blank line after, `[DONE]` last."""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def event(payload: bytes) -> bytes:
    """One event around an already-encoded JSON payload (an error body, a chunk)."""
    return b"data: " + payload + b"\n\n"


def json_event(obj: dict[str, Any]) -> bytes:
    return event(orjson.dumps(obj))
