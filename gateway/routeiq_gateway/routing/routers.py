"""Virtual models (`routeiq.routers`): a request for `auto` is sent to the candidate a learned model picks.

The decision says why it went where it went (which artifact version chose, or why none could), and that goes
into response headers, the span and the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from routeiq_shared.config_schema import RouterSpec

from routeiq_gateway.routing.router_models import LoadedModel

MAX_ROUTING_TEXT = 4096  # characters of prompt the router reads; the tail of a long prompt adds little


@dataclass(frozen=True, slots=True)
class Decision:
    group: str
    router: str
    version: str | None  # the artifact version that chose, None when the default was used
    reason: str  # "model", "no_model", "unknown_choice", "no_text", "predict_failed"


def prompt_text(body: Mapping[str, Any]) -> str:
    """What the router reads: the last user message of a chat (text parts only), or a completion's prompt."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for msg in reversed(messages):
            if isinstance(msg, dict) and msg.get("role") == "user":
                return _text_of(msg.get("content"))[:MAX_ROUTING_TEXT]
        return ""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = " ".join(p for p in prompt if isinstance(p, str))
    return prompt[:MAX_ROUTING_TEXT] if isinstance(prompt, str) else ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # Only string texts: the edge checks parts, but a router must never be the thing that fails a request.
        texts = (p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text")
        return " ".join(t for t in texts if isinstance(t, str))
    return ""


def decide(spec: RouterSpec, loaded: LoadedModel | None, body: Mapping[str, Any]) -> Decision:
    if loaded is None:
        return Decision(spec.fallback_group, spec.name, None, "no_model")
    text = prompt_text(body)
    if not text:
        return Decision(spec.fallback_group, spec.name, loaded.version, "no_text")
    try:
        choice = str(loaded.model.predict([text])[0])
    except Exception:  # noqa: BLE001 — a model that cannot score this prompt must not fail the request
        return Decision(spec.fallback_group, spec.name, loaded.version, "predict_failed")
    if choice not in spec.candidates:
        return Decision(spec.fallback_group, spec.name, loaded.version, "unknown_choice")
    return Decision(choice, spec.name, loaded.version, "model")
