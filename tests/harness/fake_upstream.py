"""A fast fake LLM provider: OpenAI-compatible (/v1/chat/completions, /v1/completions, /v1/embeddings,
/v1/models, /v1/responses (stream too), /v1/moderations, /v1/images/generations, /v1/audio/speech (audio bytes),
/v1/audio/transcriptions (multipart), /v1/rerank (Cohere's shape)) plus Anthropic's /v1/messages and Gemini's
/models/{model}:generateContent and :streamGenerateContent (also under /v1beta), with
test-controlled misbehaviour. The OpenAI endpoints also answer under Azure's paths (/openai/deployments/{name}/…)
for LiteLLM's azure/ provider, and rerank under /v2/ for its cohere/ provider.

It is the upstream in integration and throughput tests, and the clearly-labelled DEMO provider of
`make run`. Run it as a script:

    python tests/harness/fake_upstream.py --host 127.0.0.1 --port 4010 [--latency-ms 0]

Control endpoints (JSON):
    POST   /_control/rules     add one rule (object) or several (list); matched in order added
    GET    /_control/rules     list the active rules
    DELETE /_control/rules     clear rules
    GET    /_control/requests  the request log: [{path, method, headers, body, ts}], ts is time.monotonic()
                               (CLOCK_MONOTONIC is system-wide on Linux, so comparable with the test's clock)
    DELETE /_control/requests  clear the log
    POST   /_control/reset     clear rules and the log in one round trip
    GET    /_control/health    200 when serving

Rule fields: model ("*" or exact name), path (exact request path, e.g. "/v1/embeddings"), status
(+ retry_after), delay_ms, action (reset | invalid_json | hang | slow_stream | reset_mid_stream | echo_request |
json_for_stream | huge_line), chunks and chunk_delay_ms (for slow_stream / reset_mid_stream / huge_line), content
(reply text), times (int: the next N matching requests, then the rule expires; null: forever).
echo_request with a status: the error message quotes the request's URL and headers, as some upstreams do.
json_for_stream: a stream request is answered with the whole JSON body, as servers that ignore `stream` do.
huge_line: a 200 SSE stream whose one `data:` line goes on for `chunks` pieces of 64 KiB, `chunk_delay_ms`
apart. headers: extra response headers (object of strings) on whatever the rule's request is answered with
(an answer, an error status or a stream), e.g. OpenAI's x-request-id / x-ratelimit-*. Unknown fields are
rejected with 400 so a typo
in a test fails loudly instead of silently matching nothing.

Standalone on purpose: only the standard library, aiohttp and (optionally) orjson/uvloop, and no import
of the rest of the harness, so it runs as a plain script from any working directory.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import signal
import socket
import struct
import sys
import time
from array import array
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any

from aiohttp import BodyPartReader, web

try:
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency of routeiq-shared, this is a fallback

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    _loads = json.loads


DEMO_CONTENT = "This is a demo response from RouteIQ's fake provider."
DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-haiku-20240307", "text-embedding-3-small")
DEFAULT_EMBEDDING_DIM = 8
REQUEST_LOG_LIMIT = 10_000
HANG_MAX_S = 600.0
ACTIONS = frozenset(
    {"reset", "invalid_json", "hang", "slow_stream", "reset_mid_stream", "echo_request", "json_for_stream", "huge_line"}
)
HUGE_LINE_PIECE = b"x" * 65536
JSON_CT = "application/json"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


# -- rules and state ---------------------------------------------------------------------------------


@dataclass
class Rule:
    """One misbehaviour to apply to matching requests (see the module docstring for field meanings)."""

    model: str = "*"
    path: str | None = None
    status: int | None = None
    retry_after: str | None = None
    delay_ms: int = 0
    action: str | None = None
    chunks: int = 5
    chunk_delay_ms: int = 100
    content: str | None = None
    headers: dict[str, str] | None = None
    times: int | None = None

    @classmethod
    def from_json(cls, data: Any) -> Rule:
        if not isinstance(data, dict):
            raise ValueError("a rule must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown rule field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        rule = cls(**data)
        if rule.action is not None and rule.action not in ACTIONS:
            raise ValueError(f"unknown action {rule.action!r}; one of {sorted(ACTIONS)}")
        if rule.status is not None and not (isinstance(rule.status, int) and 100 <= rule.status <= 599):
            raise ValueError("status must be an int in 100..599")
        if rule.times is not None and not (isinstance(rule.times, int) and rule.times >= 1):
            raise ValueError("times must be a positive int or null")
        if rule.retry_after is not None:
            rule.retry_after = str(rule.retry_after)
        if rule.headers is not None and (
            not isinstance(rule.headers, dict) or not all(isinstance(v, str) for v in rule.headers.values())
        ):
            raise ValueError("headers must be an object of strings")
        for name in ("delay_ms", "chunks", "chunk_delay_ms"):
            value = getattr(rule, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int")
        return rule

    def matches(self, path: str, model: str | None) -> bool:
        return (self.path is None or self.path == path) and (self.model == "*" or self.model == model)


@dataclass
class UpstreamState:
    latency_ms: int = 0
    models: tuple[str, ...] = DEFAULT_MODELS
    rules: list[Rule] = field(default_factory=list)
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_LIMIT))
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def take_rule(self, path: str, model: str | None) -> Rule | None:
        """First matching rule, consuming one of its `times`. No await inside: atomic on the event loop."""
        for index, rule in enumerate(self.rules):
            if rule.matches(path, model):
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        del self.rules[index]
                return rule
        return None

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids):012d}"


STATE: web.AppKey[UpstreamState] = web.AppKey("state", UpstreamState)
RULE_HEADERS = "rule_headers"  # request key: a matched rule's extra response headers


# -- reply plan: what text to send and how to pace it ------------------------------------------------


@dataclass(frozen=True)
class Reply:
    pieces: tuple[str, ...]
    chunk_delay_s: float = 0.0
    reset_after_pieces: bool = False

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _split_pieces(text: str) -> tuple[str, ...]:
    """Words with their following space, so joining the stream deltas gives the text back exactly."""
    words = text.split(" ")
    return (*(w + " " for w in words[:-1]), words[-1])


@lru_cache(maxsize=256)
def _pieces_for(text: str, count: int | None) -> tuple[str, ...]:
    """`count` content pieces cycling through the words of `text` (None: one piece per word)."""
    if count is None:
        return _split_pieces(text)
    words = text.split() or [""]
    pieces = [words[i % len(words)] + " " for i in range(count)]
    if pieces:
        pieces[-1] = pieces[-1].rstrip(" ")
    return tuple(pieces)


DEFAULT_REPLY = Reply(_split_pieces(DEMO_CONTENT))


def _plan_reply(rule: Rule | None) -> Reply:
    if rule is None:
        return DEFAULT_REPLY
    text = rule.content if rule.content is not None else DEMO_CONTENT
    if rule.action in ("slow_stream", "reset_mid_stream"):
        return Reply(
            _pieces_for(text, rule.chunks),
            chunk_delay_s=rule.chunk_delay_ms / 1000 if rule.action == "slow_stream" else 0.0,
            reset_after_pieces=rule.action == "reset_mid_stream",
        )
    return DEFAULT_REPLY if rule.content is None else Reply(_pieces_for(text, None))


# -- token counting: cheap word counts, good enough for usage accounting tests -----------------------


def _count_words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_count_words(v) for v in value)
    if isinstance(value, dict):
        # message dicts and content parts: count only text-bearing fields
        return sum(_count_words(value.get(k)) for k in ("content", "text", "system") if k in value)
    return 0


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


# -- error bodies ------------------------------------------------------------------------------------

_OPENAI_ERRORS = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout_error", "timeout"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _error_response(path: str, status: int, message: str, retry_after: str | None = None) -> web.Response:
    """OpenAI-style error JSON; Anthropic-style on /v1/messages so provider SDKs map it as they would."""
    if path == "/v1/messages":
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": _ANTHROPIC_ERRORS.get(status, "api_error"), "message": message},
        }
    else:
        err_type, code = _OPENAI_ERRORS.get(status, ("server_error", "server_error"))
        body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return web.Response(status=status, body=_dumps(body), content_type=JSON_CT, headers=headers)


def _json_response(obj: Any) -> web.Response:
    return web.Response(body=_dumps(obj), content_type=JSON_CT)


def _abort_connection(request: web.Request) -> None:
    """Close the TCP connection with RST and no response, like a provider crashing mid-request."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # linger 0: close() sends RST instead of FIN, so the client sees a reset, not a clean EOF.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _hang(request: web.Request) -> None:
    # Stop early once the client gives up, so abandoned hangs don't pile up in a long test session.
    deadline = time.monotonic() + HANG_MAX_S
    while time.monotonic() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(0.05)


# -- streaming ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamEvents:
    """A stream split where pacing matters: head (sent at once), one event per piece, tail."""

    head: list[bytes]
    deltas: list[bytes]
    tail: list[bytes]


async def _send_stream(request: web.Request, events: StreamEvents, reply: Reply) -> web.StreamResponse:
    resp = web.StreamResponse(headers=SSE_HEADERS)
    await resp.prepare(request)
    if reply.chunk_delay_s == 0 and not reply.reset_after_pieces:
        # Fast path for throughput tests: one write for the whole stream.
        await resp.write(b"".join(events.head + events.deltas + events.tail))
        await resp.write_eof()
        return resp
    await resp.write(b"".join(events.head))
    for event in events.deltas:
        if reply.chunk_delay_s:
            await asyncio.sleep(reply.chunk_delay_s)
        await resp.write(event)
    if reply.reset_after_pieces:
        _abort_connection(request)
        return resp
    await resp.write(b"".join(events.tail))
    await resp.write_eof()
    return resp


def _sse_data(obj: Any) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


def _sse_event(name: str, obj: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


# -- OpenAI endpoints --------------------------------------------------------------------------------


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _chat_stream(body: dict[str, Any], reply: Reply, cid: str, created: int, prompt: int) -> StreamEvents:
    model = body["model"]
    include_usage = _wants_usage(body)

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        obj: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            obj["usage"] = None  # as OpenAI does: null on every chunk but the last
        return _sse_data(obj)

    tail = [chunk({}, "stop")]
    if include_usage:
        tail.append(
            _sse_data(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": _usage(prompt, _count_words(reply.text)),
                }
            )
        )
    tail.append(SSE_DONE)
    return StreamEvents(
        head=[chunk({"role": "assistant", "content": ""}, None)],
        deltas=[chunk({"content": piece}, None) for piece in reply.pieces],
        tail=tail,
    )


async def chat_completions(request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
    state = request.app[STATE]
    if not isinstance(body.get("messages"), list):
        return _error_response(request.path, 400, "'messages' must be a list")
    cid, created = state.next_id("chatcmpl-fake"), int(time.time())
    prompt = _count_words(body["messages"])
    if body.get("stream") is True:
        return await _send_stream(request, _chat_stream(body, reply, cid, created, prompt), reply)
    await _pace_non_stream(reply)
    text = reply.text
    return _json_response(
        {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": body["model"],
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(prompt, _count_words(text)),
        }
    )


async def completions(request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
    state = request.app[STATE]
    if "prompt" not in body:
        return _error_response(request.path, 400, "'prompt' is required")
    cid, created, model = state.next_id("cmpl-fake"), int(time.time()), body["model"]
    prompt = _count_words(body["prompt"])
    if body.get("stream") is True:
        include_usage = _wants_usage(body)

        def chunk(text: str, finish: str | None) -> bytes:
            obj: dict[str, Any] = {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                obj["usage"] = None
            return _sse_data(obj)

        tail = [chunk("", "stop")]
        if include_usage:
            usage = _usage(prompt, _count_words(reply.text))
            tail.append(
                _sse_data(
                    {
                        "id": cid,
                        "object": "text_completion",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                )
            )
        tail.append(SSE_DONE)
        events = StreamEvents(head=[], deltas=[chunk(p, None) for p in reply.pieces], tail=tail)
        return await _send_stream(request, events, reply)
    await _pace_non_stream(reply)
    text = reply.text
    return _json_response(
        {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(prompt, _count_words(text)),
        }
    )


@lru_cache(maxsize=4096)
def _embedding_vector(text: str, dim: int) -> tuple[float, ...]:
    """Deterministic per (text, dim): equal inputs give equal vectors, different ones differ."""
    raw = b""
    block = 0
    while len(raw) < dim:
        raw += hashlib.blake2b(text.encode(), digest_size=64, salt=block.to_bytes(16, "little")).digest()
        block += 1
    return tuple(round(b / 127.5 - 1.0, 6) for b in raw[:dim])


async def embeddings(request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        inputs: list[Any] = [raw_input]
    elif isinstance(raw_input, list) and raw_input:
        # a list of token ids is one input; a list of strings (or of token lists) is many
        inputs = [raw_input] if all(isinstance(x, int) for x in raw_input) else raw_input
    else:
        return _error_response(request.path, 400, "'input' must be a string or a non-empty list")
    dim = body.get("dimensions") or DEFAULT_EMBEDDING_DIM
    if not isinstance(dim, int) or dim < 1:
        return _error_response(request.path, 400, "'dimensions' must be a positive int")
    as_base64 = body.get("encoding_format") == "base64"
    await _pace_non_stream(reply)
    data = []
    for index, item in enumerate(inputs):
        vector = _embedding_vector(item if isinstance(item, str) else repr(item), dim)
        embedding: Any = base64.b64encode(array("f", vector).tobytes()).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    prompt = sum(_count_words(i) if isinstance(i, str) else len(i) for i in inputs)
    return _json_response(
        {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
    )


MODELS_BODY: web.AppKey[dict[str, Any]] = web.AppKey("models_body", dict)


async def list_models(request: web.Request) -> web.StreamResponse:
    return _json_response(request.app[MODELS_BODY])


def _models_body(models: tuple[str, ...]) -> dict[str, Any]:
    created = int(time.time())
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": created, "owned_by": "routeiq-fake"} for m in models],
    }


# -- Anthropic Messages ------------------------------------------------------------------------------


TOOL_INPUT = {"city": "Paris", "days": 3}  # what the fake "model" passes to a tool it is made to call


def _forced_tool(body: dict[str, Any]) -> str | None:
    """The tool Anthropic's tool_choice forces ({"type": "tool", "name": …}, or "any": the first tool), if any."""
    choice, tools = body.get("tool_choice"), body.get("tools")
    if not isinstance(choice, dict) or not isinstance(tools, list) or not tools:
        return None
    if choice.get("type") == "tool" and isinstance(choice.get("name"), str):
        return str(choice["name"])
    first = tools[0]
    return str(first.get("name")) if choice.get("type") == "any" and isinstance(first, dict) else None


def _anthropic_stop(body: dict[str, Any], text: str) -> tuple[str, str, str | None]:
    """(text, stop_reason, stop_sequence): the text cut before the first of `stop_sequences` it holds."""
    for seq in body.get("stop_sequences") or ():
        if isinstance(seq, str) and seq and seq in text:
            return text[: text.index(seq)], "stop_sequence", seq
    return text, "end_turn", None


def _anthropic_stream(body: dict[str, Any], reply: Reply, mid: str, prompt: int) -> StreamEvents:
    output = _count_words(reply.text)
    tool = _forced_tool(body)
    start = {
        "type": "message_start",
        "message": {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": 1},
        },
    }
    if tool is not None:
        args = _dumps(TOOL_INPUT).decode()
        third = len(args) // 3
        block = {"type": "tool_use", "id": f"toolu_{mid}", "name": tool, "input": {}}
        first_event = _sse_event(
            "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
        )
        deltas = [
            _sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": part},
                },
            )
            for part in (args[:third], args[third : 2 * third], args[2 * third :])
        ]
        stop_reason, stop_sequence = "tool_use", None
    else:
        text, stop_reason, stop_sequence = _anthropic_stop(body, reply.text)
        pieces = reply.pieces if text == reply.text else _split_pieces(text)
        first_event = _sse_event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        deltas = [
            _sse_event(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            )
            for piece in pieces
        ]
    return StreamEvents(
        head=[_sse_event("message_start", start), first_event, _sse_event("ping", {"type": "ping"})],
        deltas=deltas,
        tail=[
            _sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _sse_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    "usage": {"output_tokens": output},
                },
            ),
            _sse_event("message_stop", {"type": "message_stop"}),
        ],
    )


async def anthropic_messages(request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
    """Text (cut at the first of `stop_sequences` it holds), or a tool_use block when tool_choice forces a tool."""
    state = request.app[STATE]
    if not isinstance(body.get("messages"), list):
        return _error_response(request.path, 400, "messages: field required")
    mid = state.next_id("msg_fake")
    prompt = _count_words(body["messages"]) + _count_words(body.get("system"))
    if body.get("stream") is True:
        return await _send_stream(request, _anthropic_stream(body, reply, mid, prompt), reply)
    await _pace_non_stream(reply)
    tool = _forced_tool(body)
    content: list[dict[str, Any]]
    if tool is not None:
        content = [{"type": "tool_use", "id": f"toolu_{mid}", "name": tool, "input": TOOL_INPUT}]
        stop_reason, stop_sequence, output = "tool_use", None, len(TOOL_INPUT)
    else:
        text, stop_reason, stop_sequence = _anthropic_stop(body, reply.text)
        content, output = [{"type": "text", "text": text}], _count_words(text)
    return _json_response(
        {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": {"input_tokens": prompt, "output_tokens": output},
        }
    )


# -- Gemini generateContent (Google AI Studio, API key) -------------------------------------------------


def _gemini_forced_tool(body: dict[str, Any]) -> str | None:
    """The function toolConfig forces (mode ANY: the first allowed name, else the first declared), if any."""
    config = (body.get("toolConfig") or body.get("tool_config") or {}).get("functionCallingConfig") or {}
    if not isinstance(config, dict) or config.get("mode") != "ANY":
        return None
    allowed = config.get("allowedFunctionNames") or config.get("allowed_function_names")
    if isinstance(allowed, list) and allowed:
        return str(allowed[0])
    for tool in body.get("tools") or ():
        declarations = (
            tool.get("functionDeclarations") or tool.get("function_declarations") if isinstance(tool, dict) else None
        )
        if declarations:
            return str(declarations[0].get("name"))
    return None


def _gemini_stop(body: dict[str, Any], text: str) -> str:
    config = body.get("generationConfig") or body.get("generation_config") or {}
    for seq in config.get("stop_sequences") or config.get("stopSequences") or ():
        if isinstance(seq, str) and seq and seq in text:
            return text[: text.index(seq)]
    return text


def _gemini_chunk(
    parts: list[dict[str, Any]], model: str, finish: str | None, usage: dict[str, int] | None
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": "fake-gemini-response"}
    if usage is not None:
        out["usageMetadata"] = usage
    return out


async def gemini_generate(request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
    """POST …/models/{model}:generateContent and :streamGenerateContent?alt=sse: text (cut at the first stop
    sequence), or a functionCall when toolConfig forces one."""
    model, _, method = body["model"].partition(":")
    if not isinstance(body.get("contents"), list):
        return _error_response(request.path, 400, "contents: field required")
    prompt = sum(_count_words(p.get("parts")) for p in body["contents"] if isinstance(p, dict))
    tool = _gemini_forced_tool(body)
    if tool is not None:
        parts: list[dict[str, Any]] = [{"functionCall": {"name": tool, "args": TOOL_INPUT}}]
        text, output = "", len(TOOL_INPUT)
    else:
        text = _gemini_stop(body, reply.text)
        parts, output = [{"text": text}], _count_words(text)
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": output, "totalTokenCount": prompt + output}
    if method == "streamGenerateContent":
        pieces = _split_pieces(text) if text else ()
        events = [_gemini_chunk([{"text": piece}], model, None, None) for piece in pieces[:-1]]
        last_parts = [{"text": pieces[-1]}] if pieces else parts
        events.append(_gemini_chunk(last_parts, model, "STOP", usage))
        return await _send_stream(
            request,
            StreamEvents(head=[], deltas=[b"data: " + _dumps(e) + b"\r\n\r\n" for e in events], tail=[]),
            reply,
        )
    if method != "generateContent":
        return _error_response(request.path, 404, f"unknown method {method!r}")
    await _pace_non_stream(reply)
    return _json_response(_gemini_chunk(parts, model, "STOP", usage))


# -- Responses API, moderations, images, audio, rerank ----------------------------------------------


def _response_object(rid: str, mid: str, model: str, text: str, prompt: int, status: str) -> dict[str, Any]:
    done = status == "completed"
    output = (
        [
            {
                "type": "message",
                "id": mid,
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ]
        if done
        else []
    )
    completion = _count_words(text)
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "text": {"format": {"type": "text"}},
        "usage": {
            "input_tokens": prompt,
            "output_tokens": completion,
            "total_tokens": prompt + completion,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
        if done
        else None,
    }


def _responses_stream(body: dict[str, Any], reply: Reply, rid: str, mid: str, prompt: int) -> StreamEvents:
    model = body["model"]
    seq = itertools.count()

    def ev(kind: str, **fields_: Any) -> bytes:
        return _sse_event(kind, {"type": kind, "sequence_number": next(seq), **fields_})

    where = {"item_id": mid, "output_index": 0, "content_index": 0}
    item = {"type": "message", "id": mid, "status": "in_progress", "role": "assistant", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    head = [
        ev("response.created", response=_response_object(rid, mid, model, "", prompt, "in_progress")),
        ev("response.in_progress", response=_response_object(rid, mid, model, "", prompt, "in_progress")),
        ev("response.output_item.added", output_index=0, item=item),
        ev("response.content_part.added", part=part, **where),
    ]
    deltas = [ev("response.output_text.delta", delta=piece, logprobs=[], **where) for piece in reply.pieces]
    final = _response_object(rid, mid, model, reply.text, prompt, "completed")
    tail = [
        ev("response.output_text.done", text=reply.text, logprobs=[], **where),
        ev("response.content_part.done", part={**part, "text": reply.text}, **where),
        ev("response.output_item.done", output_index=0, item=final["output"][0]),
        ev("response.completed", response=final),
    ]
    return StreamEvents(head=head, deltas=deltas, tail=tail)


async def responses(request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
    state = request.app[STATE]
    if not isinstance(body.get("input"), str | list):
        return _error_response(request.path, 400, "'input' must be a string or a list of input items")
    rid, mid = state.next_id("resp_fake"), state.next_id("msg_fake")
    prompt = _count_words(body["input"]) + _count_words(body.get("instructions"))
    if body.get("stream") is True:
        return await _send_stream(request, _responses_stream(body, reply, rid, mid, prompt), reply)
    await _pace_non_stream(reply)
    return _json_response(_response_object(rid, mid, body["model"], reply.text, prompt, "completed"))


MODERATION_CATEGORIES = ("hate", "harassment", "self-harm", "sexual", "violence")
FLAGGED_WORD = "forbidden"  # an input containing it is flagged (category "violence"), for tests to assert on


async def moderations(request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else None
    if not inputs:
        return _error_response(request.path, 400, "'input' must be a string or a non-empty list")
    results = []
    for item in inputs:
        flagged = FLAGGED_WORD in json.dumps(item)
        categories = {c: flagged and c == "violence" for c in MODERATION_CATEGORIES}
        scores = {c: 0.99 if hit else 0.01 for c, hit in categories.items()}
        results.append({"flagged": flagged, "categories": categories, "category_scores": scores})
    state = request.app[STATE]
    return _json_response({"id": state.next_id("modr-fake"), "model": body["model"], "results": results})


FAKE_PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


async def image_generations(request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return _error_response(request.path, 400, "'prompt' must be a non-empty string")
    n = body.get("n") or 1
    if not isinstance(n, int) or n < 1:
        return _error_response(request.path, 400, "'n' must be a positive int")
    b64 = body.get("response_format") == "b64_json"
    item = {"b64_json": FAKE_PNG} if b64 else {"url": "https://images.fake.invalid/1.png"}
    data = [{**item, "revised_prompt": prompt} for _ in range(n)]
    return _json_response({"created": int(time.time()), "data": data})


def speech_bytes(text: str) -> bytes:
    """What /audio/speech answers: deterministic per input, so a test can check the bytes arrived untouched."""
    return b"ID3FAKE" + hashlib.sha256(text.encode()).digest() + bytes(range(256))


async def audio_speech(request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
    text = body.get("input")
    if not isinstance(text, str) or not isinstance(body.get("voice"), str):
        return _error_response(request.path, 400, "'input' and 'voice' are required strings")
    return web.Response(body=speech_bytes(text), content_type="audio/mpeg")


async def audio_transcriptions(request: web.Request) -> web.StreamResponse:
    """Multipart: `file` (required) and form fields. The log records the fields and the file's name and size."""
    state = request.app[STATE]
    form: dict[str, Any] = {}
    if request.content_type != "multipart/form-data":
        _record(request, None)
        return _error_response(request.path, 400, "expected multipart/form-data")
    reader = await request.multipart()
    while (field_ := await reader.next()) is not None:
        if not isinstance(field_, BodyPartReader):  # a nested multipart: not what an upload sends
            continue
        data = await field_.read()
        if field_.filename is not None:
            form[field_.name or ""] = {
                "filename": field_.filename,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        else:
            form[field_.name or ""] = data.decode("utf-8", "replace")
    _record(request, form)
    model = form.get("model")
    rule = state.take_rule(request.path, model if isinstance(model, str) else None)
    if rule is not None and rule.status is not None:
        return _error_response(
            request.path,
            rule.status,
            f"Fake upstream returned {rule.status} (injected by a test rule)",
            rule.retry_after,
        )
    if not isinstance(form.get("file"), dict):
        return _error_response(request.path, 400, "'file' is required")
    text = f"transcribed {form['file']['filename']} of {form['file']['size']} bytes"
    if form.get("response_format") == "text":
        return web.Response(text=text, content_type="text/plain")
    return _json_response({"text": text, "usage": {"type": "duration", "seconds": 1}})


async def rerank(request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
    """Cohere's (and vLLM's / Jina's) rerank shape: documents scored by how many query words they contain."""
    query, docs = body.get("query"), body.get("documents")
    if not isinstance(query, str) or not isinstance(docs, list) or not docs:
        return _error_response(request.path, 400, "'query' (string) and 'documents' (non-empty list) are required")
    words = set(query.lower().split())
    scored = []
    for index, doc in enumerate(docs):
        text = doc if isinstance(doc, str) else doc.get("text", "") if isinstance(doc, dict) else ""
        hits = len(words & set(str(text).lower().split()))
        scored.append(
            {"index": index, "relevance_score": round(hits / (len(words) or 1), 4), "document": {"text": text}}
        )
    scored.sort(key=lambda r: -r["relevance_score"])
    top_n = body.get("top_n")
    if isinstance(top_n, int) and top_n > 0:
        scored = scored[:top_n]
    state = request.app[STATE]
    return _json_response(
        {
            "id": state.next_id("rerank-fake"),
            "model": body["model"],
            "results": scored,
            "usage": {"total_tokens": _count_words(query) + _count_words(docs)},
            "meta": {"billed_units": {"search_units": 1}},
        }
    )


async def _pace_non_stream(reply: Reply) -> None:
    # A slow_stream rule on a non-streaming request: same total time, one body at the end.
    if reply.chunk_delay_s:
        await asyncio.sleep(reply.chunk_delay_s * len(reply.pieces))


# -- dispatch: log, latency, rules, then the endpoint ------------------------------------------------

BodyHandler = Callable[[web.Request, dict[str, Any], Reply], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return _loads(raw)
    except ValueError:
        return None


def _record(request: web.Request, body: Any) -> None:
    request.app[STATE].log.append(
        {
            "path": request.path,
            "method": request.method,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body,
            "ts": time.monotonic(),
        }
    )


def _with_rules(handler: BodyHandler | None) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        body = _parse_json(await request.read())
        _record(request, body)
        model = body.get("model") if isinstance(body, dict) else None
        rule = state.take_rule(request.path, model if isinstance(model, str) else None)
        if rule is not None and rule.headers:
            request[RULE_HEADERS] = rule.headers
        delay_ms = state.latency_ms + (rule.delay_ms if rule else 0)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        if rule is not None:
            if rule.action == "reset":
                _abort_connection(request)
                return web.Response()  # never sent; aiohttp ignores the write to a closed transport
            if rule.action == "hang":
                await _hang(request)
            if rule.action == "huge_line":
                return await _huge_line(request, rule)
            if rule.status is not None and rule.action == "echo_request":
                headers = "; ".join(f"{k}: {v}" for k, v in request.headers.items())
                message = f"Fake upstream cannot serve {request.url} (request headers: {headers})"
                return _error_response(request.path, rule.status, message, rule.retry_after)
            if rule.status is not None:
                message = f"Fake upstream returned {rule.status} (injected by a test rule)"
                return _error_response(request.path, rule.status, message, rule.retry_after)
            if rule.action == "invalid_json":
                return web.Response(body=b'{"id": "truncated", "choices": [', content_type=JSON_CT)
        if handler is None:  # GET /v1/models
            return await list_models(request)
        if not isinstance(body, dict):
            return _error_response(request.path, 400, "request body must be a JSON object")
        if not isinstance(body.get("model"), str):
            deployment = request.match_info.get("deployment")  # Azure names the model in the path
            if deployment is None:
                return _error_response(request.path, 400, "'model' is required")
            body = {**body, "model": deployment}
        if rule is not None and rule.action == "json_for_stream":
            body = {**body, "stream": False}
        return await handler(request, body, _plan_reply(rule))

    return serve


async def _huge_line(request: web.Request, rule: Rule) -> web.StreamResponse:
    resp = web.StreamResponse(headers=SSE_HEADERS)
    await resp.prepare(request)
    await resp.write(b'data: {"choices": [], "pad": "')
    for _ in range(rule.chunks):
        if rule.chunk_delay_ms:
            await asyncio.sleep(rule.chunk_delay_ms / 1000)
        transport = request.transport
        if transport is None or transport.is_closing():
            return resp  # the client gave up on the line: stop writing it
        await resp.write(HUGE_LINE_PIECE)
    await resp.write(b'"}\n\ndata: [DONE]\n\n')
    await resp.write_eof()
    return resp


async def _not_found(request: web.Request) -> web.StreamResponse:
    _record(request, _parse_json(await request.read()))
    return _error_response(request.path, 404, f"Unknown endpoint {request.method} {request.path}")


# -- control API -------------------------------------------------------------------------------------


async def add_rules(request: web.Request) -> web.StreamResponse:
    data = _parse_json(await request.read())
    items = data if isinstance(data, list) else [data]
    try:
        rules = [Rule.from_json(item) for item in items]
    except (TypeError, ValueError) as exc:
        return web.Response(status=400, body=_dumps({"error": str(exc)}), content_type=JSON_CT)
    state = request.app[STATE]
    state.rules.extend(rules)
    return _json_response({"rules": len(state.rules)})


async def get_rules(request: web.Request) -> web.StreamResponse:
    return _json_response([asdict(r) for r in request.app[STATE].rules])


async def clear_rules(request: web.Request) -> web.StreamResponse:
    request.app[STATE].rules.clear()
    return _json_response({"rules": 0})


async def get_requests(request: web.Request) -> web.StreamResponse:
    return _json_response(list(request.app[STATE].log))


async def clear_requests(request: web.Request) -> web.StreamResponse:
    request.app[STATE].log.clear()
    return _json_response({"requests": 0})


async def reset_all(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.rules.clear()
    state.log.clear()
    return _json_response({"rules": 0, "requests": 0})


async def health(request: web.Request) -> web.StreamResponse:
    return _json_response({"status": "ok", "demo": True})


async def _add_rule_headers(request: web.Request, response: web.StreamResponse) -> None:
    # On prepare, so JSON answers, error statuses and streams all carry them.
    extra = request.get(RULE_HEADERS)
    if extra:
        response.headers.update(extra)


def create_app(latency_ms: int = 0, models: tuple[str, ...] = DEFAULT_MODELS) -> web.Application:
    """Build the app (no I/O here; the caller runs it)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.on_response_prepare.append(_add_rule_headers)
    app[STATE] = UpstreamState(latency_ms=latency_ms, models=models)
    app[MODELS_BODY] = _models_body(models)
    app.router.add_post("/v1/chat/completions", _with_rules(chat_completions))
    app.router.add_post("/v1/completions", _with_rules(completions))
    app.router.add_post("/v1/embeddings", _with_rules(embeddings))
    app.router.add_post("/v1/messages", _with_rules(anthropic_messages))
    # Gemini's API under an api_base (LiteLLM's gemini/ provider: {api_base}/models/{model}:{method}).
    app.router.add_post("/models/{deployment}", _with_rules(gemini_generate))
    app.router.add_post("/v1beta/models/{deployment}", _with_rules(gemini_generate))
    app.router.add_get("/v1/models", _with_rules(None))
    # The same OpenAI endpoints under Azure's paths (/openai/deployments/{name}/…, /openai/…): LiteLLM's azure/
    # provider calls those, which is how tests reach them on the LiteLLM path. Cohere's rerank is /v1/rerank too.
    for tail, handler in (
        ("responses", responses),
        ("moderations", moderations),
        ("images/generations", image_generations),
        ("audio/speech", audio_speech),
        ("rerank", rerank),
    ):
        for prefix in ("/v1/", "/openai/deployments/{deployment}/", "/openai/v1/", "/openai/", "/v2/", "/"):
            app.router.add_post(prefix + tail, _with_rules(handler))
    for prefix in ("/v1/", "/openai/deployments/{deployment}/", "/openai/v1/"):
        app.router.add_post(prefix + "audio/transcriptions", audio_transcriptions)
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", _with_rules(chat_completions))
    app.router.add_route("*", "/v1/{tail:.*}", _not_found)
    app.router.add_post("/_control/rules", add_rules)
    app.router.add_get("/_control/rules", get_rules)
    app.router.add_delete("/_control/rules", clear_rules)
    app.router.add_get("/_control/requests", get_requests)
    app.router.add_delete("/_control/requests", clear_requests)
    app.router.add_post("/_control/reset", reset_all)
    app.router.add_get("/_control/health", health)
    return app


# -- script entry point ------------------------------------------------------------------------------


async def serve(host: str, port: int, app: web.Application) -> None:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=2048, reuse_address=True).start()
        print(f"RouteIQ fake provider (DEMO, not a real LLM) on http://{host}:{port}/v1", file=sys.stderr)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="RouteIQ fake OpenAI/Anthropic-compatible provider (demo/tests)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4010)
    parser.add_argument("--latency-ms", type=int, default=0, help="added before every /v1 answer")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated, for GET /v1/models")
    args = parser.parse_args(argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    app = create_app(latency_ms=args.latency_ms, models=models)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(args.host, args.port, app))


if __name__ == "__main__":
    main()
