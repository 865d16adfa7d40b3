"""Upstream clients: `native` speaks the OpenAI protocol itself; `litellm_client` covers every other provider.

Both return the same shapes (OpenAI JSON bytes, or an async iterator of SSE bytes) and raise GatewayError,
so a client cannot tell which path served it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from routeiq_gateway.routing.deployments import Deployment


@dataclass(slots=True)
class Completed:
    """A whole JSON response: the bytes to send, the usage to count, the upstream's headers to relay."""

    body: bytes
    usage: dict[str, Any] | None
    content_type: bytes = b"application/json"  # audio and plain-text answers (providers/surface.py) say theirs
    # x-request-id, openai-processing-ms, x-ratelimit-*: what OpenAI's clients read off a response
    headers: tuple[tuple[bytes, bytes], ...] = field(default_factory=tuple)


class Streaming(Protocol):
    """An open SSE stream: iterate for OpenAI-shaped `data:` events; `aclose` releases the upstream."""

    usage: dict[str, Any] | None
    headers: tuple[tuple[bytes, bytes], ...]  # the upstream's, relayed as on Completed

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    async def call(
        self, dep: Deployment, endpoint: str, body: dict[str, Any], stream: bool, traceparent: str | None
    ) -> Completed | Streaming: ...
