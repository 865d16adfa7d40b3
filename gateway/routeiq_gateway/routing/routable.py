"""What a router (a virtual model) reads on each endpoint: routers choose by prompt text (routers.prompt_text).

Chat, completions and Anthropic's Messages carry it where prompt_text looks (`messages`, `prompt`); a Responses
request carries it in `input`, told here as the one user message a chat would have. Moderations, images, audio
and rerank have no prompt to read: a router is refused there with a 400 that says so, instead of a guess.
"""

from __future__ import annotations

from typing import Any

from routeiq_gateway.http.errors import bad_request

_READ_AS_IS = frozenset({"chat/completions", "completions", "embeddings", "messages"})


def _input_text(data: Any) -> str:
    if isinstance(data, str):
        return data
    if not isinstance(data, list):
        return ""
    for item in reversed(data):
        if isinstance(item, dict) and item.get("role", "user") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = (p.get("text") for p in content if isinstance(p, dict))
                return " ".join(t for t in texts if isinstance(t, str))
    return ""


def routing_body(endpoint: str, body: dict[str, Any], model: str) -> dict[str, Any]:
    """The body the router reads for a request to a virtual model on `endpoint`."""
    if endpoint in _READ_AS_IS:
        return body
    if endpoint == "responses":
        view: dict[str, Any] = {"messages": [{"role": "user", "content": _input_text(body.get("input"))}]}
        if "user" in body:
            view["user"] = body["user"]  # what makes an A/B arm sticky (arms.caller_of)
        return view
    raise bad_request(
        f"'{model}' is a router, which chooses a model by the prompt's text; /v1/{endpoint} has no prompt to "
        "read. Name one of the router's candidate models instead.",
        "model",
    )
