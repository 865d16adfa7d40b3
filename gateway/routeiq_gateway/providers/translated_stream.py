"""A provider's event stream, read by LiteLLM's chunk parser, told as OpenAI's chat chunks.

What LiteLLM's CustomStreamWrapper does to the parser's chunks before a client sees them (streaming_handler.py of
the pinned LiteLLM), done here without its per-chunk logging and cost machinery; tests/integration/
test_translation_identity.py holds the two side by side:
  - chunks with nothing to say (empty content, no tool call, no finish) are dropped (a tool call's chunk keeps
    its empty content, as LiteLLM's does);
  - the first chunk that says something carries `role: assistant`, later ones no role;
  - every chunk carries the request's model;
  - a chunk's finish reason is held, not sent with its content: it travels in a chunk of its own with an empty
    delta, at the first chunk with nothing else to say or at the stream's end (then `stop`, or `tool_calls`
    after a tool call, when none was reported); chunks after it are dropped;
  - the usage: prompt tokens as last reported non-zero, completion tokens and the token details as last reported
    (reasoning_tokens 0 when not reported and the stream had text), in a last chunk of its own (LiteLLMStream
    then tells it as OpenAI does, only when include_usage was asked).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.http.sse import DONE, json_event
from routeiq_gateway.providers.http1 import Response
from routeiq_gateway.providers.native import MAX_SSE_LINE_BYTES, connection_error, invalid_response
from routeiq_gateway.providers.scrub import scrub
from routeiq_gateway.routing.deployments import Deployment

_SAYS_SOMETHING = ("tool_calls", "function_call", "reasoning_content", "provider_specific_fields", "thinking_blocks")


def _says_something(delta: dict[str, Any]) -> bool:
    content = delta.get("content")
    if isinstance(content, str) and content:
        return True
    return any(delta.get(key) for key in _SAYS_SOMETHING)


class StreamFinisher:
    """The parser's chunk dicts in, the chunks a client sees out (see the module's docstring)."""

    __slots__ = (
        "_completion",
        "_details",
        "_finished",
        "_model",
        "_prompt",
        "_received",
        "_sent_first",
        "_template",
        "_text",
        "_text_prefix",
        "_tool_call",
        "usage",
    )

    def __init__(self, model: str) -> None:
        self._model = model
        self._sent_first = False
        self._finished = False
        self._received: str | None = None  # the last finish reason the parser reported
        self._tool_call = False
        self._text = False
        self._prompt = 0
        self._completion = 0
        self._details: dict[str, Any] = {}
        self._template: dict[str, Any] | None = None
        self._text_prefix: bytes | None = None  # a text delta's event up to its text (text())
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        usage = chunk.pop("usage", None)
        if isinstance(usage, dict):
            self._take_usage(usage)
        if self._template is None:
            self._template = {
                "id": chunk.get("id"),
                "created": chunk.get("created"),
                "model": self._model,
                "object": "chat.completion.chunk",
            }
        choices = chunk.pop("choices", None)
        if not choices or self._finished:
            return []
        choice = choices[0]
        delta = choice.get("delta") or {}
        if choice.get("finish_reason"):
            self._received = choice["finish_reason"]
        out = []
        if _says_something(delta):
            if delta.get("tool_calls"):
                self._tool_call = True
            if delta.get("content"):
                self._text = True
            if not self._sent_first:
                delta["role"] = "assistant"
                self._sent_first = True
            else:
                delta.pop("role", None)
            # The parser's other top-level fields (Gemini's vertex_ai_* metadata) travel on, as LiteLLM's do.
            top = {**self._template, **chunk, "model": self._model, "object": "chat.completion.chunk"}
            out.append({**top, "choices": [{"index": choice.get("index", 0), "delta": delta}]})
        elif self._received is not None:
            out.append(self._finish(self._received))
        return out

    def text(self, text: str) -> bytes | None:
        """A plain text delta, for a parser that says just that (the translations' own mappings of a text event):
        the same event feed() makes of {"id", "choices": [{"index": 0, "delta": {"content": text}}]}, written
        once the first chunk has gone (its prefix is the same for every later one)."""
        if self._finished or not self._sent_first or self._text_prefix is None or not text:
            chunk = {"id": (self._template or {}).get("id"), "choices": [{"index": 0, "delta": {"content": text}}]}
            out = self.feed(chunk)
            if self._template is not None and self._text_prefix is None:
                head = orjson.dumps({**self._template, "choices": None})[: -len(b"null}")]
                self._text_prefix = b"data: " + head + b'[{"index":0,"delta":{"content":'
            return b"".join(json_event(o) for o in out) or None
        self._text = True
        return self._text_prefix + orjson.dumps(text) + b"}}]}\n\n"

    def end(self) -> list[dict[str, Any]]:
        """At the stream's end: the finish chunk, if none was sent (the last reason received, else stop)."""
        if self._finished or self._template is None:
            return []
        reason = self._received or "stop"
        return [self._finish("tool_calls" if reason == "stop" and self._tool_call else reason)]

    def _finish(self, reason: str) -> dict[str, Any]:
        self._finished = True
        assert self._template is not None
        return {**self._template, "choices": [{"finish_reason": reason, "index": 0, "delta": {}}]}

    def _take_usage(self, usage: dict[str, Any]) -> None:
        prompt = usage.get("prompt_tokens")
        if isinstance(prompt, int) and prompt:
            self._prompt = prompt
        completion = usage.get("completion_tokens")
        if isinstance(completion, int):
            self._completion = completion
        self._details = {
            k: v for k, v in usage.items() if k not in ("prompt_tokens", "completion_tokens", "total_tokens")
        }
        self.usage = {
            "completion_tokens": self._completion,
            "prompt_tokens": self._prompt,
            "total_tokens": self._prompt + self._completion,
            **self._details,
        }

    def last(self) -> dict[str, Any] | None:
        if self.usage is None or self._template is None:
            return None
        details = self.usage.get("completion_tokens_details")
        if self._text and isinstance(details, dict) and "reasoning_tokens" not in details:
            # LiteLLM's stream_chunk_builder, rebuilding a stream with text, names the reasoning tokens (0).
            self.usage["completion_tokens_details"] = {**details, "reasoning_tokens": 0}
        return {**self._template, "choices": [], "usage": self.usage}


class TranslatedStream:
    """The upstream's SSE `data:` events → the chunk parser → StreamFinisher → OpenAI SSE events."""

    __slots__ = ("_dep", "_finisher", "_include_usage", "_parse", "_read_timeout", "_resp", "headers")

    def __init__(
        self,
        resp: Response,
        parse: Callable[[dict[str, Any]], Any],
        dep: Deployment,
        include_usage: bool,
        read_timeout: float,
    ) -> None:
        self._resp = resp
        self._parse = parse
        self._dep = dep
        self._include_usage = include_usage
        self._read_timeout = read_timeout
        self._finisher = StreamFinisher(dep.upstream_model)
        self.headers = resp.headers

    @property
    def usage(self) -> dict[str, Any] | None:
        return self._finisher.usage

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._resp.iter_chunks()
        held = b""
        try:
            while True:
                async with asyncio.timeout(self._read_timeout):
                    chunk = await anext(chunks, None)
                if chunk is None:
                    break
                held += chunk
                last_nl = held.rfind(b"\n")
                if last_nl < 0:
                    if len(held) > MAX_SSE_LINE_BYTES:
                        raise invalid_response(f"a stream line is longer than {MAX_SSE_LINE_BYTES} bytes")
                    continue
                lines, held = held[:last_nl], held[last_nl + 1 :]
                out = [event for line in lines.split(b"\n") if (event := self._line(line)) is not None]
                if out:
                    yield b"".join(out)
        except (ConnectionError, TimeoutError) as exc:
            raise connection_error(exc, self._dep) from None
        if held:
            event = self._line(held)
            if event is not None:
                yield event
        for final in self._finisher.end():
            yield json_event(final)
        last = self._finisher.last()
        if last is not None and self._include_usage:
            yield json_event(last)
        yield DONE

    def _line(self, line: bytes) -> bytes | None:
        if not line.startswith(b"data:"):
            return None
        try:
            data = orjson.loads(line[5:])
        except orjson.JSONDecodeError:
            raise invalid_response("a stream event is not JSON") from None
        if not isinstance(data, dict):
            return None
        if data.get("type") == "error":  # Anthropic's error event in a 200 stream: its own words, scrubbed
            err = data.get("error")
            message = err.get("message") if isinstance(err, dict) else None
            raise GatewayError(
                502, f"Upstream stream error: {scrub(str(message)[:300], self._dep)}", code="upstream_error"
            )
        try:
            parsed = self._parse(data)
        except GatewayError:
            raise
        except Exception as exc:  # noqa: BLE001 — the parser raises many classes; all are an unreadable event
            raise invalid_response(f"a stream event could not be read ({type(exc).__name__})") from None
        if type(parsed) is str:  # a plain text delta (the parser's own chunk for it: see StreamFinisher.text)
            return self._finisher.text(parsed)
        dumped = parsed if type(parsed) is dict else parsed.model_dump(exclude_none=True)
        out = self._finisher.feed(dumped)
        if not out:
            return None
        return b"".join(json_event(o) for o in out)

    async def aclose(self) -> None:
        self._resp.release()
