"""Issue 7, the gateway's upstream side: retry policy, stream scanning, status mapping, scrubbing, pools, egress.

Unit tests with in-process fakes; the end-to-end checks against real processes are in
tests/integration/test_upstream_hardening.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import orjson
import pytest
from routeiq_gateway.dispatch.dispatcher import MAX_BACKOFF_SECONDS, backoff_seconds
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.providers import http1
from routeiq_gateway.providers.http1 import HeaderInjection, Pool, Target
from routeiq_gateway.providers.litellm_client import LiteLLMProvider, _check_headers, _to_gateway_error
from routeiq_gateway.providers.litellm_logging import _ScrubFilter
from routeiq_gateway.providers.native import NativeProvider, NativeStream
from routeiq_gateway.providers.scrub import scrub
from routeiq_gateway.routing.deployments import Deployment
from routeiq_gateway.state import build_state
from routeiq_shared.config_schema import load_config
from routeiq_shared.egress import EgressPolicy

pytestmark = [pytest.mark.timeout(20), pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_backoff_is_full_jitter_under_the_cap() -> None:
    rng = random.Random(11)
    for attempt in range(1, 25):
        ceiling = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (attempt - 1))
        samples = [backoff_seconds(0.5, attempt, rng) for _ in range(300)]
        assert all(0.0 <= s <= ceiling for s in samples), (attempt, max(samples), ceiling)
        # full jitter: the whole range [0, ceiling] is used, not a band around the ceiling
        assert min(samples) < ceiling * 0.1 and max(samples) > ceiling * 0.9


# -- a hand-written upstream on 127.0.0.1 ---------------------------------------------------------------------

UPSTREAM_KEY = "sk-live-0123456789abcdefSECRET"


@dataclass
class Local:
    """An HTTP/1.1 server on 127.0.0.1 answering every request with `answer(request_head)` (bytes or chunks)."""

    answer: Callable[[bytes], Awaitable[list[bytes]]]
    port: int = 0
    heads: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def __aenter__(self) -> Local:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                self.heads.append(head)
                for piece in await self.answer(head):
                    writer.write(piece)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed.set()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def http_response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n"
    return head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body


def fixed(*pieces: bytes) -> Callable[[bytes], Awaitable[list[bytes]]]:
    async def answer(head: bytes) -> list[bytes]:
        return list(pieces)

    return answer


def deployment(api_base: str, model: str = "openai/m", api_key: str = UPSTREAM_KEY) -> Deployment:
    """A deployment as config builds it, then pointed at `api_base` as it is: these tests check the runtime layer,
    which must hold even for a destination config validation would refuse (a metadata address in any spelling)."""
    cfg = {
        "model_list": [
            {
                "model_name": "g",
                "litellm_params": {"model": model, "api_base": "http://127.0.0.1:9", "api_key": api_key},
            }
        ]
    }
    dep = build_state(load_config(orjson.dumps(cfg), None, {}), created=0).groups["g"][0]
    return dataclasses.replace(dep, api_base=api_base)


LOOPBACK = EgressPolicy.from_env({"ROUTEIQ_EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128"})


def native(pool: Pool | None = None) -> NativeProvider:
    return NativeProvider(pool or Pool(LOOPBACK))


CHAT = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}


async def call_error(provider: NativeProvider, dep: Deployment, stream: bool = False) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await provider.call(dep, "chat/completions", {**CHAT, "stream": stream}, stream, None)
    return info.value


# -- item 12: only a 200 is a success ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [201, 202, 204, 301, 302, 307])
@pytest.mark.parametrize("stream", [False, True])
async def test_native_non_200_success_or_redirect_is_a_502_saying_what_upstream_did(status: int, stream: bool) -> None:
    body = b"" if status == 204 else b'{"error": {"message": "moved"}}'
    async with Local(fixed(http_response(status, body))) as up:
        err = await call_error(native(), deployment(up.base), stream)
    assert err.status == 502 and err.code == "upstream_unexpected_status"
    assert str(status) in err.message


# -- non-retryable failures of a complete answer ------------------------------------------------------------------


async def test_a_response_over_the_size_limit_is_not_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "MAX_RESPONSE_BYTES", 1000)
    async with Local(fixed(http_response(200, b'{"x": "' + b"a" * 5000 + b'"}'))) as up:
        err = await call_error(native(), deployment(up.base))
    assert err.status == 502 and err.code == "upstream_response_too_large" and not err.retryable


async def test_invalid_json_of_a_complete_answer_is_not_retryable() -> None:
    async with Local(fixed(http_response(200, b'{"id": "truncated", "choices": ['))) as up:
        err = await call_error(native(), deployment(up.base))
    assert err.status == 502 and err.code == "upstream_invalid_response" and not err.retryable


# -- item 11: upstream SSE lines are bounded and scanned linearly --------------------------------------------------


def sse_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


async def drain(stream: object, out: list[bytes] | None = None) -> list[bytes]:
    out = [] if out is None else out
    async for piece in stream:  # type: ignore[attr-defined]
        out.append(piece)
    return out


async def test_a_huge_sse_line_ends_the_stream_quickly_with_a_502() -> None:
    # 8 MiB without a newline, in 8 KiB pieces: the old scan joined and split the whole line on every piece.
    piece = b"x" * 8192
    body = [chunk(b'data: {"usage": {"a": "'), *(chunk(piece) for _ in range(1024)), chunk(b'"}}\n\n'), b"0\r\n\r\n"]
    async with Local(fixed(sse_head(), b"".join(body))) as up:
        stream = await native().call(deployment(up.base), "chat/completions", {**CHAT, "stream": True}, True, None)
        started = time.perf_counter()
        forwarded: list[bytes] = []
        with pytest.raises(GatewayError) as info:
            await drain(stream, forwarded)
        await stream.aclose()
        elapsed = time.perf_counter() - started
    assert info.value.status == 502 and info.value.code == "upstream_invalid_response"
    assert "line" in info.value.message
    assert forwarded == []  # no half line went out: the error event the client gets starts a line of its own
    assert elapsed < 1.0, elapsed


async def test_a_long_line_under_the_bound_is_scanned_linearly_and_its_usage_found() -> None:
    # A usage event of ~900 KiB arriving 1 KiB at a time: 900 pieces, each searched once.
    padding = b"p" * (900 * 1024)
    event = b'data: {"choices": [], "pad": "' + padding + b'", "usage": {"total_tokens": 7}}\n\n'
    pieces = [event[i : i + 1024] for i in range(0, len(event), 1024)]
    body = b"".join(chunk(p) for p in pieces) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    async with Local(fixed(sse_head(), body)) as up:
        stream = await native().call(deployment(up.base), "chat/completions", {**CHAT, "stream": True}, True, None)
        started = time.perf_counter()
        got = await drain(stream)
        await stream.aclose()
        elapsed = time.perf_counter() - started
    assert b"".join(got) == event + b"data: [DONE]\n\n"  # forwarded untouched
    assert stream.usage == {"total_tokens": 7}
    assert elapsed < 1.0, elapsed


def test_native_stream_scan_cost_is_linear_in_line_length() -> None:
    # White-box: `_feed` alone, so the measurement is the parser's and not the socket's.
    def cost(pieces: int) -> float:
        stream = NativeStream.__new__(NativeStream)
        NativeStream.__init__(stream, None, 1.0)  # type: ignore[arg-type]
        piece = b'"usage": ' + b"u" * 1000  # the usage mark in every piece: the old code's worst case
        started = time.perf_counter()
        for _ in range(pieces):
            stream._feed(piece)
        return time.perf_counter() - started

    small, large = cost(100), cost(1000)  # 100 KB and 1 MB lines
    assert large < max(small, 1e-4) * 40, (small, large)  # quadratic would be ~100x


# -- item 13: no credentials and no upstream address in what a client sees; no header injection ----------------------


def echoing(status: int) -> Callable[[bytes], Awaitable[list[bytes]]]:
    """An upstream that quotes the request it got (line, headers) and its own address in its error text."""

    async def answer(head: bytes) -> list[bytes]:
        text = head.decode("latin-1")
        host = re.search(r"(?i)host: *(\S+)", text).group(1)  # type: ignore[union-attr]
        message = f"bad request to http://{host}/v1/chat/completions; you sent: {text}"
        return [http_response(status, orjson.dumps({"error": {"message": message}}))]

    return answer


@pytest.mark.parametrize("status", [400, 404, 422, 500])
async def test_upstream_error_text_reaches_the_client_without_key_or_address(status: int) -> None:
    async with Local(echoing(status)) as up:
        dep = deployment(up.base)
        err = await call_error(native(), dep)
    shown = err.message + err.body().decode()
    assert UPSTREAM_KEY not in shown and "sk-live" not in shown
    assert f"127.0.0.1:{up.port}" not in shown and str(up.port) not in shown
    assert "bad request to" in shown  # the upstream's explanation is still there, scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "authorization: Bearer abc.def-ghi",
        '{"headers": {"Authorization": "Bearer zzz-123"}}',
        "x-api-key: 0123456789abcdef",
        "key sk-ant-api03-abcdefghijklmnop was rejected",
        "aws AKIAABCDEFGHIJKLMNOP refused",
    ],
)
def test_scrub_removes_credential_shapes(text: str) -> None:
    out = scrub(text)
    for secret in ("abc.def-ghi", "zzz-123", "0123456789abcdef", "sk-ant-api03", "AKIAABCDEFGHIJKLMNOP"):
        assert secret not in out, out


def test_scrub_removes_the_deployments_own_key_and_address_whatever_their_shape() -> None:
    dep = deployment("https://llm.internal.example:8443/v1", api_key="plainpassword42")
    out = scrub(
        "POST https://llm.internal.example:8443/v1/x failed; key=plainpassword42 host llm.internal.example", dep
    )
    assert "plainpassword42" not in out and "llm.internal.example" not in out and "8443" not in out


@pytest.mark.parametrize(
    "headers",
    [
        (("authorization", "Bearer sk-abc\r\nx-injected: 1"),),
        (("authorization", "Bearer sk-abc\n"),),
        (("x-extra", "a\x00b"),),
        (("bad name", "v"),),
        (("x-evil\r\nx-injected", "v"),),
    ],
)
def test_target_build_refuses_control_characters_in_header_lines(headers: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(HeaderInjection) as info:
        Target.build("http://127.0.0.1:1/v1/chat/completions", headers)
    assert "sk-abc" not in str(info.value)  # the error names the header, never its value


async def test_a_deployment_whose_key_would_inject_a_header_is_refused_before_any_byte_is_sent() -> None:
    async with Local(fixed(http_response(200, b"{}"))) as up:
        dep = dataclasses.replace(
            deployment(up.base), headers=(("authorization", f"Bearer {UPSTREAM_KEY}\r\nx-injected: 1"),)
        )
        err = await call_error(native(), dep)
        assert up.heads == []
    assert err.status == 502 and err.code == "upstream_misconfigured"
    assert UPSTREAM_KEY not in err.message


# -- a stream request answered with JSON is told as a stream --------------------------------------------------------

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
}


async def test_a_json_answer_to_a_stream_request_becomes_chunks_with_tool_calls_and_usage() -> None:
    async with Local(fixed(http_response(200, orjson.dumps(COMPLETION)))) as up:
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        stream = await native().call(deployment(up.base), "chat/completions", body, True, None)
        events = await drain(stream)
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["role"] == "assistant"
    assert deltas[1]["tool_calls"] == [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == COMPLETION["usage"]
    assert stream.usage == COMPLETION["usage"]


@pytest.mark.parametrize("answer", [{"object": "list", "data": []}, {"choices": [{"index": 0}]}])
async def test_a_json_answer_to_a_stream_request_that_is_no_completion_is_a_502(answer: dict) -> None:
    async with Local(fixed(http_response(200, orjson.dumps(answer)))) as up:
        err = await call_error(native(), deployment(up.base), stream=True)
    assert err.status == 502 and err.code == "upstream_invalid_response" and "stream request" in err.message


# -- a reload drops what belonged to removed deployments -------------------------------------------------------------


def state_of(*deps: tuple[str, str, str]) -> tuple[Deployment, ...]:
    """Deployments of a config with (model_name, api_base, api_key) entries, built as the gateway builds them."""
    entries = [
        {"model_name": name, "litellm_params": {"model": "openai/m", "api_base": base, "api_key": key}}
        for name, base, key in deps
    ]
    state = build_state(load_config(orjson.dumps({"model_list": entries}), None, {}), created=0)
    return tuple(d for group in state.groups.values() for d in group)


async def test_retain_drops_pooled_connections_and_targets_of_a_removed_deployment() -> None:
    ok = http_response(200, orjson.dumps(COMPLETION))
    async with Local(fixed(ok)) as kept, Local(fixed(ok)) as removed:
        before = state_of(("a", kept.base, "sk-kept-key-000000"), ("b", removed.base, "sk-removed-key-000"))
        provider = native()
        for dep in before:
            await provider.call(dep, "chat/completions", CHAT, False, None)
        provider.retain(state_of(("a", kept.base, "sk-kept-key-000000")))
        async with asyncio.timeout(2):
            await removed.closed.wait()  # the idle connection holding the removed deployment's traffic is closed
        assert not kept.closed.is_set()
        assert "sk-removed-key" not in repr(provider._targets)  # white-box: no cached head holds the old key
        assert "sk-kept-key" in repr(provider._targets)
        # a request still running on the old state is served, but its Target is not cached again
        await provider.call(before[1], "chat/completions", CHAT, False, None)
        assert "sk-removed-key" not in repr(provider._targets)


# -- item 19: every new upstream connection goes to an address the egress policy accepts -----------------------------


async def test_a_loopback_upstream_is_refused_unless_allow_listed() -> None:
    async with Local(fixed(http_response(200, orjson.dumps(COMPLETION)))) as up:
        for base in (up.base, f"http://localhost:{up.port}/v1"):  # a literal, and a name resolving to loopback
            err = await call_error(NativeProvider(Pool(EgressPolicy())), deployment(base))
            assert err.status == 502 and err.code == "upstream_forbidden"
            assert "not allow-listed" in err.message and UPSTREAM_KEY not in err.message
        assert up.heads == []  # refused before connecting
        await native().call(deployment(up.base), "chat/completions", CHAT, False, None)  # allow-listed: served


@pytest.mark.parametrize(
    "base",
    [
        "http://169.254.169.254/latest",
        "http://2852039166/v1",
        "http://0xa9fea9fe/v1",
        "http://[::ffff:169.254.169.254]/v1",
    ],
)
async def test_a_metadata_address_is_refused_even_when_everything_is_allow_listed(base: str) -> None:
    everything = EgressPolicy.from_env({"ROUTEIQ_EGRESS_ALLOWED_NETWORKS": "0.0.0.0/0,::/0"})
    err = await call_error(NativeProvider(Pool(everything)), deployment(base))
    assert err.status == 502 and err.code == "upstream_forbidden" and "metadata" in err.message


async def test_pool_connects_to_the_checked_address_and_keeps_tls_server_name(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[object, ...]] = []

    async def fake_create_connection(self: object, factory: object, host: str, port: int, **kw: object) -> None:
        seen.append((host, port, kw.get("server_hostname")))
        raise OSError(111, "refused")

    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", fake_create_connection)
    pool = Pool(EgressPolicy.from_env({"ROUTEIQ_EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128"}))
    with pytest.raises(http1.UpstreamClosed):
        await pool.post(Target.build("https://localhost:9/v1/x", ()), b"{}")
    assert seen and all(host in ("127.0.0.1", "::1") and name == "localhost" for host, _, name in seen)


# -- the LiteLLM path: the same refusals before LiteLLM is called ------------------------------------------------------


def litellm_provider(policy: EgressPolicy) -> LiteLLMProvider:
    # White-box: without __init__, so the test does not pay LiteLLM's import; only the pre-call checks run.
    provider = LiteLLMProvider.__new__(LiteLLMProvider)
    provider._policy, provider._checked = policy, {}
    return provider


@pytest.mark.parametrize(
    ("base", "allowed"),
    [
        ("http://127.0.0.1:9/", False),
        ("http://localhost:9/", False),  # a name that resolves to loopback: checked after DNS
        ("http://2852039166/", False),  # 169.254.169.254, decimal
        ("http://127.0.0.1:9/", True),
    ],
)
async def test_litellm_path_checks_the_destination_before_calling(base: str, allowed: bool) -> None:
    dep = deployment(base, model="anthropic/claude")
    provider = litellm_provider(LOOPBACK if allowed else EgressPolicy())
    if allowed:
        await provider._check_egress(dep)
        return
    with pytest.raises(GatewayError) as info:
        await provider._check_egress(dep)
    assert info.value.status == 502 and info.value.code == "upstream_forbidden" and UPSTREAM_KEY not in str(info.value)


def test_litellm_path_refuses_header_injection_from_config() -> None:
    dep = dataclasses.replace(deployment("http://127.0.0.1:9/", model="anthropic/claude"), api_key="sk-abc\r\nx-a: 1")
    with pytest.raises(GatewayError) as info:
        _check_headers(dep)
    assert info.value.code == "upstream_misconfigured" and "sk-abc" not in info.value.message


def test_litellm_errors_are_scrubbed_and_non_error_statuses_named() -> None:
    dep = deployment("http://10.1.2.3:8080", model="anthropic/claude")

    class ProviderError(Exception):
        status_code = 400

    err = _to_gateway_error(ProviderError(f"POST http://10.1.2.3:8080/v1/messages x-api-key: {UPSTREAM_KEY}"), dep)
    assert err.status == 400 and UPSTREAM_KEY not in err.message and "10.1.2.3" not in err.message

    class Redirected(Exception):
        status_code = 302

    class Wrapped(Exception):
        status_code = 500

    try:
        try:
            raise Redirected("moved")
        except Redirected as inner:
            raise Wrapped("litellm.APIConnectionError") from inner
    except Wrapped as outer:
        err = _to_gateway_error(outer, dep)
    assert err.status == 502 and err.code == "upstream_unexpected_status" and "302" in err.message


def test_litellm_log_records_are_scrubbed_tracebacks_included() -> None:
    try:
        raise RuntimeError(f"headers: {{'authorization': 'Bearer {UPSTREAM_KEY}'}}")
    except RuntimeError:
        record = logging.LogRecord("LiteLLM", logging.ERROR, "", 0, "call failed: %s", (UPSTREAM_KEY,), sys.exc_info())
    assert _ScrubFilter().filter(record)
    text = logging.Formatter().format(record)
    assert UPSTREAM_KEY not in text and "call failed" in text and "RuntimeError" in text


def test_retain_keeps_the_origins_of_translated_deployments() -> None:
    """After a reload the pool keeps connections to every origin a deployment of the new state is served on by
    RouteIQ's own client: the translation path's (anthropic/, gemini/) too, with their default hosts."""
    entries = [
        {"model_name": "c", "litellm_params": {"model": "anthropic/claude", "api_base": "http://10.0.0.7:9000"}},
        {"model_name": "d", "litellm_params": {"model": "anthropic/claude"}},
        {"model_name": "g", "litellm_params": {"model": "gemini/gemini-2.0-flash"}},
    ]
    state = build_state(load_config(orjson.dumps({"model_list": entries}), None, {}), created=0)
    deps = tuple(d for group in state.groups.values() for d in group)
    assert all(d.path_name == "translated" for d in deps)
    provider = native()
    provider.retain(deps)
    kept = {(o.host, o.port) for o in provider._pool._retained or ()}  # white-box: what put_back pools again
    assert {("10.0.0.7", 9000), ("api.anthropic.com", 443), ("generativelanguage.googleapis.com", 443)} <= kept
