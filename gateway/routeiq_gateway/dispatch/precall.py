"""router_settings.enable_pre_call_checks, as LiteLLM does it: before the call, count the request's input tokens
and skip every deployment whose context window (`model_info.max_input_tokens`, else LiteLLM's model map, read
locally) is too small for it; when none fits, answer 400 `context_length_exceeded` as OpenAI would, without a
call. Deployments whose window is unknown are kept. Token counting uses LiteLLM's counter with its bundled
tiktoken encodings (no download); it costs about 0.3 ms for 2,000 tokens, paid only when the check is on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.routing.deployments import Deployment

log = logging.getLogger("routeiq.gateway")


def with_context_windows(deps: Sequence[Deployment], model_info: Sequence[dict[str, Any]]) -> list[Deployment]:
    """Each deployment with its max_input_tokens filled in (config first, then LiteLLM's model map)."""
    import litellm

    out = []
    for dep, info in zip(deps, model_info, strict=True):
        window = info.get("max_input_tokens")
        if not isinstance(window, int) and "*" not in dep.litellm_model:
            try:
                window = litellm.get_model_info(dep.litellm_model).get("max_input_tokens")
            except Exception:  # noqa: BLE001 — LiteLLM raises a bare Exception for a model it does not map
                window = None
        out.append(dataclasses.replace(dep, max_input_tokens=window if isinstance(window, int) else None))
    litellm.token_counter(model="gpt-4o", text="warm up")  # loads the encoding now, not on the first request
    return out


def input_tokens(body: dict[str, Any]) -> int:
    import litellm

    messages = body.get("messages")
    if isinstance(messages, list):
        return int(litellm.token_counter(model="gpt-4o", messages=messages))
    prompt = body.get("prompt", body.get("input", ""))
    text = (
        prompt
        if isinstance(prompt, str)
        else " ".join(p for p in prompt if isinstance(p, str))
        if isinstance(prompt, list)
        else ""
    )
    return int(litellm.token_counter(model="gpt-4o", text=text))


def tokens_or_none(body: dict[str, Any]) -> int | None:
    """The request's input tokens; None when they cannot be counted (the check is then skipped, not the request)."""
    try:
        return input_tokens(body)
    except Exception as exc:  # noqa: BLE001 — a counter failure must not fail the request
        log.warning(
            "Pre-call check skipped: tokens not countable", extra={"event": "pre_call_check", "reason": str(exc)}
        )
        return None


def fits(dep: Deployment, tokens: int) -> bool:
    return dep.max_input_tokens is None or tokens <= dep.max_input_tokens


def too_long(considered: Sequence[Deployment], tokens: int) -> GatewayError:
    largest = max((d.max_input_tokens or 0 for d in considered), default=0)
    return GatewayError(
        400,
        f"This model's maximum context length is {largest} tokens. However, your messages resulted in {tokens} "
        "tokens. Please reduce the length of the messages.",
        code="context_length_exceeded",
        param="messages",
    )
