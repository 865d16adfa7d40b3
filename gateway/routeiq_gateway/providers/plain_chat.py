"""A chat request made of plain text turns: the shape the translation path's own mappings know.

Leading system messages, then user and assistant turns by turns ending with the user's, every message
`{"role": …, "content": "<non-empty text>"}` and nothing else. Anything else is None, and LiteLLM's own
transformation serves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PlainChat:
    system: tuple[str, ...]
    turns: tuple[tuple[str, str], ...]  # (role, text), user first and last


def plain_chat(messages: Any) -> PlainChat | None:
    if not isinstance(messages, list):
        return None
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    expect = "user"
    for message in messages:
        if type(message) is not dict or len(message) != 2:
            return None
        role, content = message.get("role"), message.get("content")
        if type(content) is not str or not content:
            return None
        if role == "system" and not turns:
            system.append(content)
            continue
        if role != expect:
            return None
        turns.append((role, content))
        expect = "assistant" if role == "user" else "user"
    if not turns or expect != "assistant":
        return None
    return PlainChat(tuple(system), tuple(turns))
