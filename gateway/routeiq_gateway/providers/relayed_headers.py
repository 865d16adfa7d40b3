"""The upstream response headers a client gets too: the request id and rate-limit state OpenAI's clients read.

The native path picks them off the wire (http1.py); the LiteLLM path out of what LiteLLM kept of the provider's
headers (its `llm_provider-` copies, and the x-ratelimit-* it derives from Anthropic's own names).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PASSED_HEADERS = frozenset({b"x-request-id", b"openai-processing-ms"})  # and every x-ratelimit-*
RATELIMIT_PREFIX = b"x-ratelimit-"
_PROVIDER_PREFIX = "llm_provider-"
Headers = tuple[tuple[bytes, bytes], ...]


def is_passed(name: bytes) -> bool:
    """`name` in lower case."""
    return name in PASSED_HEADERS or name.startswith(RATELIMIT_PREFIX)


def _encoded(items: Iterable[tuple[Any, Any]]) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for name, value in items:
        if not isinstance(name, str) or not isinstance(value, str | int | float):
            continue
        key = name.lower().encode("latin-1", "replace")
        text = str(value)
        # A header value that could split the response head is not relayed (httpx would not hand one over anyway).
        if is_passed(key) and not any(c in text for c in "\r\n\0"):
            out[key] = text.encode("latin-1", "replace")
    return out


def from_provider_headers(headers: Mapping[str, Any] | None) -> Headers:
    """From the provider's raw response headers (an httpx.Headers or a dict)."""
    if not headers:
        return ()
    return tuple(_encoded(headers.items()).items())


def from_litellm_additional(headers: Mapping[str, Any] | None) -> Headers:
    """From LiteLLM's `_hidden_params["additional_headers"]`: the provider's own first, then LiteLLM's mapping."""
    if not headers:
        return ()
    raw = _encoded((k[len(_PROVIDER_PREFIX) :], v) for k, v in headers.items() if k.startswith(_PROVIDER_PREFIX))
    mapped = _encoded((k, v) for k, v in headers.items() if not k.startswith(_PROVIDER_PREFIX))
    return tuple({**mapped, **raw}.items())
