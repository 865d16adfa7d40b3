"""Native pass-through for OpenAI-protocol upstreams (openai/, hosted_vllm/, any OpenAI-compatible api_base).

The request body is forwarded with only `model` rewritten; the response bytes are forwarded as they are, parsed
once for usage. This path must stay lean: it is what makes the gateway fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson

from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.providers import Completed
from routeiq_gateway.providers.http1 import (
    DestinationRefused,
    HeaderInjection,
    Origin,
    Pool,
    PoolTimeout,
    Response,
    ResponseTooLarge,
    Target,
    TLSFailure,
)
from routeiq_gateway.providers.json_stream import JsonAsStream
from routeiq_gateway.providers.scrub import scrub
from routeiq_gateway.providers.upstream_status import status_error
from routeiq_gateway.routing.deployments import Deployment

_USAGE_MARK = b'"usage":'
MAX_SSE_LINE_BYTES = 1024 * 1024  # no SSE line of a real completion comes near this; a longer one is not an answer


def upstream_error(
    status: int,
    raw: bytes,
    retry_after: str | None,
    dep: Deployment | None = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> GatewayError:
    """Map an upstream status other than 200 to what our client sees (upstream_status.py, shared with LiteLLM's path).

    The upstream's own words are passed on only scrubbed of credentials and its address (scrub.py).
    """
    message, param = _upstream_message(raw)
    return status_error(status, scrub(message, dep), retry_after, headers, param)


def _upstream_message(raw: bytes) -> tuple[str, str | None]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace") or "no detail", None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        param = err.get("param")
        return err["message"][:500], param[:200] if isinstance(param, str) else None
    if isinstance(err, str):
        return err[:500], None
    return "no detail", None


def connection_error(exc: BaseException, dep: Deployment | None = None) -> GatewayError:
    if isinstance(exc, TimeoutError):
        return GatewayError(504, "Upstream timed out", code="upstream_timeout", retryable=True)
    if isinstance(exc, ResponseTooLarge):
        # The answer was produced (and billed) upstream: asking again would pay for it twice and fail the same way.
        return GatewayError(502, f"Upstream {exc}", code="upstream_response_too_large")
    if isinstance(exc, PoolTimeout):
        # Nothing was sent: another deployment, or this one a moment later, may have a free connection.
        return GatewayError(
            503, f"Upstream busy: {scrub(str(exc), dep)}", code="upstream_pool_exhausted", retryable=True
        )
    if isinstance(exc, TLSFailure):
        # Nothing was sent; a fallback deployment may be configured differently.
        return GatewayError(
            502, f"Upstream TLS failed: {scrub(str(exc), dep)}", code="upstream_tls_failed", retryable=True
        )
    if isinstance(exc, DestinationRefused):
        # Another deployment (a fallback) may be allowed, so the plan goes on.
        return GatewayError(502, f"Upstream refused by egress policy: {exc}", code="upstream_forbidden", retryable=True)
    return GatewayError(
        502, f"Upstream connection failed: {scrub(str(exc), dep)}", code="upstream_unreachable", retryable=True
    )


def invalid_response(why: str) -> GatewayError:
    # A complete answer that cannot be read would be read the same way again: not retried.
    return GatewayError(502, f"Upstream returned an invalid response: {why}", code="upstream_invalid_response")


def answer_object(raw: bytes) -> dict[str, Any]:
    """A whole upstream answer as the JSON object it must be (502 upstream_invalid_response otherwise)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_response("not JSON") from None
    if not isinstance(data, dict):
        raise invalid_response("not a JSON object")
    return data


class NativeStream:
    """Forwards upstream SSE bytes untouched, line-complete, picking the usage event out as it passes.

    Each chunk is searched once for its newlines; bytes are forwarded up to the last complete line, and the
    unfinished line waits for its end. A line (an SSE event's `data:` line) longer than MAX_SSE_LINE_BYTES ends
    the stream with an error event instead: no client would get a line that long from a real completion, and the
    error event then stands on a line of its own instead of ending a half-sent one.
    """

    __slots__ = ("_line", "_line_bytes", "_read_timeout", "_resp", "dep", "headers", "usage")

    def __init__(
        self,
        resp: Response,
        read_timeout: float,
        dep: Deployment | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        self._resp = resp
        self.headers = headers
        self._read_timeout = read_timeout
        self._line: list[bytes] = []  # the pieces of the unfinished last line
        self._line_bytes = 0
        self.dep = dep
        self.usage: dict[str, Any] | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._resp.iter_chunks()
        try:
            while True:
                async with asyncio.timeout(self._read_timeout):
                    chunk = await anext(chunks, None)
                if chunk is None:
                    if self._line:  # the upstream ended mid-line: pass on what it sent, as it sent it
                        yield b"".join(self._line)
                    return
                out = self._feed(chunk)
                if out:
                    yield out
        except (ConnectionError, TimeoutError) as exc:
            raise connection_error(exc, self.dep) from None

    def _feed(self, chunk: bytes) -> bytes:
        """The bytes to forward now: everything up to the last newline seen so far."""
        last_nl = chunk.rfind(b"\n")
        if last_nl < 0:
            self._line_bytes += len(chunk)
            if self._line_bytes > MAX_SSE_LINE_BYTES:
                raise invalid_response(f"a stream line is longer than {MAX_SSE_LINE_BYTES} bytes")
            self._line.append(chunk)
            return b""
        out = chunk if last_nl == len(chunk) - 1 else chunk[: last_nl + 1]
        start = 0
        if self._line:
            first_nl = chunk.find(b"\n")
            if self._line_bytes + first_nl > MAX_SSE_LINE_BYTES:
                raise invalid_response(f"a stream line is longer than {MAX_SSE_LINE_BYTES} bytes")
            held = b"".join(self._line)
            self._line.clear()
            line = held + chunk[:first_nl]
            if _USAGE_MARK in line:
                self._take_usage(line)
            out = held + out
            start = first_nl + 1
        # Lines wholly inside this chunk are bounded by the chunk's size; scan only when usage may be among them.
        if chunk.find(_USAGE_MARK, start, last_nl) >= 0:
            for line in chunk[start:last_nl].split(b"\n"):
                if _USAGE_MARK in line:
                    self._take_usage(line)
        rest = chunk[last_nl + 1 :]
        self._line_bytes = len(rest)
        if rest:
            self._line.append(rest)
        return out

    def _take_usage(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        try:
            usage = orjson.loads(line[5:]).get("usage")
        except (orjson.JSONDecodeError, AttributeError):
            return
        if usage:
            self.usage = usage

    async def aclose(self) -> None:
        self._resp.release()


class NativeProvider:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._targets: dict[tuple[str | None, tuple[tuple[str, str], ...], str, bool | str], Target] = {}
        # (api_base, headers) of the serving state's native deployments; None until the first `retain`.
        self._live: frozenset[tuple[str | None, tuple[tuple[str, str], ...]]] | None = None

    def _target(self, dep: Deployment, endpoint: str) -> Target:
        key = (dep.api_base, dep.headers, endpoint, dep.ssl_verify)
        target = self._targets.get(key)
        if target is None:
            try:
                target = Target.build(dep.url(endpoint), dep.headers, dep.ssl_verify)
            except HeaderInjection as exc:
                # Config validation refuses these first; this is the last line of defence before the wire.
                raise GatewayError(
                    502,
                    f"Deployment of '{dep.model_name}' is misconfigured: {exc}",
                    code="upstream_misconfigured",
                    retryable=True,  # a fallback deployment may be fine
                ) from None
            if self._live is None or (dep.api_base, dep.headers) in self._live:
                # A request still on a removed deployment (an old state) gets a Target, but it is not kept.
                self._targets[key] = target
        return target

    def retain(self, deployments: Iterable[Deployment]) -> None:
        """After a reload: forget Targets (their headers hold API keys) and pooled connections that no
        deployment of the new state uses any more."""
        deployments = list(deployments)  # read twice below
        native = [d for d in deployments if d.native]
        self._live = frozenset((d.api_base, d.headers) for d in native)
        self._targets = {k: t for k, t in self._targets.items() if (k[0], k[1]) in self._live}
        origins: set[Origin] = set()
        # The translation path (translated.py) sends on this pool too: its origins stay as well.
        for dep in [*native, *(d for d in deployments if d.translated)]:
            try:
                origins.add(Target.build(dep.origin_url(), (), dep.ssl_verify).origin)
            except (ValueError, HeaderInjection):
                continue
        self._pool.retain(frozenset(origins))

    async def call(
        self, dep: Deployment, endpoint: str, body: dict[str, Any], stream: bool, traceparent: str | None
    ) -> Completed | NativeStream | JsonAsStream:
        if dep.body_defaults:
            payload = orjson.dumps({**dict(dep.body_defaults), **body, "model": dep.upstream_model})
        else:
            payload = orjson.dumps({**body, "model": dep.upstream_model})
        target = self._target(dep, endpoint)
        extra_head = b"traceparent: " + traceparent.encode() + b"\r\n" if traceparent else b""
        try:
            async with asyncio.timeout(dep.timeout):
                resp = await self._pool.post(target, payload, extra_head)
                if stream and resp.status == 200 and not resp.content_type.startswith("application/json"):
                    return NativeStream(resp, dep.stream_timeout, dep, resp.headers)
                raw = await resp.read()
        except (ConnectionError, TimeoutError, DestinationRefused) as exc:
            raise connection_error(exc, dep) from None
        if resp.status != 200:
            raise upstream_error(resp.status, raw, resp.retry_after, dep, resp.headers)
        data = answer_object(raw)
        if stream:
            # Some OpenAI-compatible servers ignore `stream`: the whole answer, told as the stream it should be.
            converted = JsonAsStream.from_completion(data, endpoint, body, lambda m: scrub(m, dep))
            converted.headers = resp.headers
            return converted
        return Completed(raw, data.get("usage"), headers=resp.headers)
