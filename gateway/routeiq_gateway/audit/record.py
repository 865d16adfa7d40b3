"""One audit record (schema_version 1):

    {schema_version, id, at, actor: {subject, how}, action, target, before_digest, after_digest, result, trace_id}

`at` is RFC 3339 UTC. Digests name content (a config version, a model artifact's sha256), never the content: a
record holds no secret. `how` is admin_key | oidc (an admin API caller), signal (SIGHUP), system (the gateway on
its own, e.g. a router model model-sync installed).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Actor:
    subject: str
    how: str


SYSTEM = Actor("gateway", "system")


def signal_actor(trigger: str) -> Actor:
    return Actor(f"signal:{trigger}", "signal")


def audit_record(
    actor: Actor,
    action: str,
    target: str,
    *,
    result: str,
    before_digest: str | None = None,
    after_digest: str | None = None,
    trace_id: str | None = None,
    at: float | None = None,
) -> dict[str, Any]:
    stamp = time.time() if at is None else at
    return {
        "schema_version": SCHEMA_VERSION,
        "id": uuid.uuid4().hex,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1000):03d}Z",
        "actor": {"subject": actor.subject, "how": actor.how},
        "action": action,
        "target": target,
        "before_digest": before_digest,
        "after_digest": after_digest,
        "result": result,
        "trace_id": trace_id,
    }


def trace_id_of(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The trace the admin call belongs to: the current span's, else the caller's W3C traceparent."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        return f"{ctx.trace_id:032x}"
    for name, value in headers:
        if name == b"traceparent":
            parts = value.decode("latin-1").split("-")
            if len(parts) == 4 and len(parts[1]) == 32 and all(c in "0123456789abcdef" for c in parts[1]):
                return parts[1]
    return None
