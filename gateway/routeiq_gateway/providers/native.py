"""Native pass-through for OpenAI-protocol upstreams (openai/, hosted_vllm/, any OpenAI-compatible api_base).

The request body is forwarded with only `model` rewritten; the response bytes are forwarded as they are, parsed
once for usage. This path must stay lean: it is what makes the gateway fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.providers import Completed
from routeiq_gateway.providers.http1 import Pool, Response, Target
from routeiq_gateway.routing.deployments import Deployment

_USAGE_MARK = b'"usage":'


def upstream_error(status: int, raw: bytes, retry_after: str | None) -> GatewayError:
    """Map an upstream error status to what our client sees (see docs/errors in README)."""
    message = _upstream_message(raw)
    if status == 429:
        headers = ((b"retry-after", retry_after.encode()),) if retry_after else ()
        return GatewayError(
            429, f"Upstream rate limit: {message}", code="upstream_rate_limited", headers=headers, retryable=True
        )
    if status >= 500:
        return GatewayError(502, f"Upstream returned {status}: {message}", code="upstream_error", retryable=True)
    if status in (401, 403):
        # The client's key was fine; ours was refused. Not the client's fault, so not a 401.
        return GatewayError(502, f"Upstream refused the gateway's credentials ({status})", code="upstream_auth")
    if status in (408, 409):
        return GatewayError(502, f"Upstream returned {status}: {message}", code="upstream_error", retryable=True)
    return GatewayError(status, message, code="upstream_rejected")


def _upstream_message(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace") or "no detail"
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"][:500]
    if isinstance(err, str):
        return err[:500]
    return "no detail"


def connection_error(exc: BaseException) -> GatewayError:
    if isinstance(exc, TimeoutError):
        return GatewayError(504, "Upstream timed out", code="upstream_timeout", retryable=True)
    return GatewayError(502, f"Upstream connection failed: {exc}", code="upstream_unreachable", retryable=True)


class NativeStream:
    """Forwards upstream SSE bytes untouched, picking the usage event out as it passes."""

    __slots__ = ("_read_timeout", "_resp", "_tail", "usage")

    def __init__(self, resp: Response, read_timeout: float) -> None:
        self._resp = resp
        self._read_timeout = read_timeout
        self._tail = b""
        self.usage: dict[str, Any] | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._resp.iter_chunks()
        try:
            while True:
                async with asyncio.timeout(self._read_timeout):
                    chunk = await anext(chunks, None)
                if chunk is None:
                    return
                if _USAGE_MARK in chunk or self._tail:
                    self._scan(chunk)
                yield chunk
        except (ConnectionError, TimeoutError) as exc:
            raise connection_error(exc) from None

    def _scan(self, chunk: bytes) -> None:
        # The usage event may straddle two reads: keep the unfinished line until its end arrives.
        data = self._tail + chunk
        lines = data.split(b"\n")
        self._tail = lines.pop() if _USAGE_MARK in lines[-1] else b""
        for line in lines:
            if line.startswith(b"data:") and _USAGE_MARK in line:
                try:
                    usage = orjson.loads(line[5:]).get("usage")
                except (orjson.JSONDecodeError, AttributeError):
                    continue
                if usage:
                    self.usage = usage

    async def aclose(self) -> None:
        self._resp.release()


class NativeProvider:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._targets: dict[tuple[str | None, tuple[tuple[str, str], ...], str], Target] = {}

    def _target(self, dep: Deployment, endpoint: str) -> Target:
        key = (dep.api_base, dep.headers, endpoint)
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = Target.build(dep.url(endpoint), dep.headers)
        return target

    async def call(
        self, dep: Deployment, endpoint: str, body: dict[str, Any], stream: bool, traceparent: str | None
    ) -> Completed | NativeStream:
        payload = orjson.dumps({**body, "model": dep.upstream_model})
        target = self._target(dep, endpoint)
        extra_head = b"traceparent: " + traceparent.encode() + b"\r\n" if traceparent else b""
        try:
            async with asyncio.timeout(dep.timeout):
                resp = await self._pool.post(target, payload, extra_head)
                if stream and resp.status == 200:
                    return NativeStream(resp, dep.stream_timeout)
                raw = await resp.read()
        except (ConnectionError, TimeoutError) as exc:
            raise connection_error(exc) from None
        if resp.status != 200:
            raise upstream_error(resp.status, raw, resp.retry_after)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise GatewayError(
                502, "Upstream returned invalid JSON", code="upstream_invalid_response", retryable=True
            ) from None
        if not isinstance(data, dict):
            raise GatewayError(
                502, "Upstream returned an unexpected JSON shape", code="upstream_invalid_response", retryable=True
            )
        return Completed(raw, data.get("usage"))
