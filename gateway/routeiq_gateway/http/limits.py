"""How long and how much the edge waits for a client, read once at start-up from the environment.

They are process settings, not config.yaml keys: the connection protocol is built once when the server binds, so a
reload could not change them, and a key accepted by config and then ignored until a restart would mislead. Each
has an environment variable (as a pod spec sets it) and a default. A slow or idle client must never hold what fast
ones need: heads and bodies have deadlines, idle connections are closed, and the number of open connections is
capped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from routeiq_gateway.env_numbers import positive_numbers_from_env


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    # ROUTEIQ_HEADER_TIMEOUT_SECONDS: request line and headers, in all.
    header_timeout: float = 10.0
    # ROUTEIQ_BODY_TIMEOUT_SECONDS: the whole body, from its first read.
    body_timeout: float = 30.0
    # ROUTEIQ_BODY_IDLE_TIMEOUT_SECONDS: longest wait for the next read.
    body_idle_timeout: float = 10.0
    # ROUTEIQ_MAX_HEADER_BYTES: request line plus headers. SDKs send about 1 KB.
    max_header_bytes: int = 64 * 1024
    # ROUTEIQ_MAX_HEADERS: header lines in one request.
    max_headers: int = 100
    # ROUTEIQ_KEEP_ALIVE_SECONDS: idle connections (before their first request
    # and between requests) are closed after this. Longer than the 60 s idle timeout of the usual proxies in front
    # (AWS ALB, ingress-nginx upstream keep-alive): a backend that closes first makes them answer 502 on reuse.
    # Idle connections cost a file descriptor and a few KB, never an in-flight slot, and at the connection cap
    # the longest idle is closed first (see protocol.py).
    keep_alive: int = 75
    # ROUTEIQ_MAX_CONNECTIONS: open client connections. Past it the longest
    # idle connection is closed to make room; with none idle the newcomer gets 503 and is closed.
    max_connections: int = 4096

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> EdgeLimits:
        """The defaults, overridden by the environment. Raises ValueError naming the variable on a bad value."""
        return cls(**positive_numbers_from_env(cls, _ENV, env))


_ENV = {
    "header_timeout": "ROUTEIQ_HEADER_TIMEOUT_SECONDS",
    "body_timeout": "ROUTEIQ_BODY_TIMEOUT_SECONDS",
    "body_idle_timeout": "ROUTEIQ_BODY_IDLE_TIMEOUT_SECONDS",
    "max_header_bytes": "ROUTEIQ_MAX_HEADER_BYTES",
    "max_headers": "ROUTEIQ_MAX_HEADERS",
    "keep_alive": "ROUTEIQ_KEEP_ALIVE_SECONDS",
    "max_connections": "ROUTEIQ_MAX_CONNECTIONS",
}
