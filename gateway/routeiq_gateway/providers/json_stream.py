"""A whole JSON completion told as the SSE stream the client asked for.

Some OpenAI-compatible servers ignore `stream: true` and answer with one JSON body. Relayed as it is under
text/event-stream, the client would get no chunk and no error; instead the answer is converted into the
`chat.completion.chunk` (or `text_completion`) events OpenAI would have sent, ending with `data: [DONE]`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.http.sse import DONE, json_event


def _refuse(why: str) -> GatewayError:
    return GatewayError(
        502, f"Upstream answered a stream request with JSON that is not {why}", code="upstream_invalid_response"
    )


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _chat_deltas(choice: dict[str, Any], index: int) -> list[dict[str, Any]]:
    message = choice.get("message")
    if not isinstance(message, dict):
        raise _refuse("a chat completion (a choice has no message)")
    first: dict[str, Any] = {"role": message.get("role") or "assistant", "content": message.get("content")}
    if message.get("refusal") is not None:
        first["refusal"] = message["refusal"]
    if message.get("function_call") is not None:
        first["function_call"] = message["function_call"]
    chunks = [{"index": index, "delta": first, "logprobs": choice.get("logprobs"), "finish_reason": None}]
    tool_calls = message.get("tool_calls")
    if tool_calls:
        if not isinstance(tool_calls, list) or not all(isinstance(t, dict) for t in tool_calls):
            raise _refuse("a chat completion (tool_calls is not a list of objects)")
        calls = [
            {k: v for k, v in {"index": i, "id": t.get("id"), "type": t.get("type", "function"),
                               "function": t.get("function")}.items() if v is not None}
            for i, t in enumerate(tool_calls)
        ]  # fmt: skip
        chunks.append({"index": index, "delta": {"tool_calls": calls}, "logprobs": None, "finish_reason": None})
    chunks.append({"index": index, "delta": {}, "logprobs": None, "finish_reason": choice.get("finish_reason")})
    return chunks


def _text_deltas(choice: dict[str, Any], index: int) -> list[dict[str, Any]]:
    text = choice.get("text")
    if not isinstance(text, str):
        raise _refuse("a text completion (a choice has no text)")
    return [
        {"index": index, "text": text, "logprobs": choice.get("logprobs"), "finish_reason": None},
        {"index": index, "text": "", "logprobs": None, "finish_reason": choice.get("finish_reason")},
    ]


class JsonAsStream:
    """The events of one converted answer; `usage` is the answer's, for the gateway's metrics."""

    __slots__ = ("_events", "headers", "usage")

    def __init__(self, events: list[bytes], usage: dict[str, Any] | None) -> None:
        self._events = events
        self.usage = usage
        self.headers: tuple[tuple[bytes, bytes], ...] = ()  # the upstream's, relayed (see http1.PASSED_HEADERS)

    @classmethod
    def from_completion(
        cls, data: dict[str, Any], endpoint: str, body: dict[str, Any], scrub: Callable[[str], str]
    ) -> JsonAsStream:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            err = data.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                raise GatewayError(
                    502, f"Upstream answered 200 with an error: {scrub(err['message'][:500])}", code="upstream_error"
                )
            raise _refuse("a completion (no choices)")
        if not all(isinstance(c, dict) for c in choices):
            raise _refuse("a completion (a choice is not an object)")
        chat = endpoint == "chat/completions"
        if endpoint not in ("chat/completions", "completions"):
            raise _refuse("something this endpoint can stream")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        include_usage = _wants_usage(body)
        base: dict[str, Any] = {
            "id": data.get("id"),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": data.get("created"),
            "model": data.get("model"),
        }
        if chat:
            base["system_fingerprint"] = data.get("system_fingerprint")
        events: list[bytes] = []
        for position, choice in enumerate(choices):
            index = choice.get("index") if isinstance(choice.get("index"), int) else position
            for delta in _chat_deltas(choice, index) if chat else _text_deltas(choice, index):
                obj = {**base, "choices": [delta]}
                if include_usage:
                    obj["usage"] = None  # as OpenAI does: null on every chunk but the last
                events.append(json_event(obj))
        if include_usage and usage is not None:
            events.append(json_event({**base, "choices": [], "usage": usage}))
        events.append(DONE)
        return cls(events, usage)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self._events:
            yield event

    async def aclose(self) -> None:
        return None
