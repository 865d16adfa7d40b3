"""The agent's settings: every one from the environment (as in a pod spec), overridable on the command line."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from routeiq_shared.breaker import BreakerPolicy
from routeiq_shared.sidecar import env_number, env_url
from routeiq_shared.store_health import policy_from_env
from routeiq_shared.volume import VolumePaths

CONFIG_NAME = "config.yaml"
CANDIDATES_NAME = "llm_candidates.json"


@dataclass(frozen=True, slots=True)
class AgentSettings:
    source: str
    interval: float
    jitter: float  # fraction of the interval, ± (so a fleet's polls spread out)
    max_object_bytes: int
    paths: VolumePaths
    health_port: int
    gateway_admin_url: str | None  # fallback when the gateway's pid cannot be signalled: its admin port (:4001)
    gateway_admin_key: str | None
    endpoint_url: str | None
    gateway_verdict_timeout: float = 5.0  # how long to wait for the gateway's verdict after a signal
    # CONFIG_SYNC_BREAKER_FAILURES / _COOLDOWN: how many failed polls open the store's breaker, for how long
    store_breaker: BreakerPolicy = field(default_factory=BreakerPolicy)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AgentSettings:
        env = os.environ if env is None else env
        return cls(
            source=env.get("CONFIG_SOURCE", ""),
            interval=env_number(env, "CONFIG_SYNC_INTERVAL", 60.0),
            jitter=env_number(env, "CONFIG_SYNC_JITTER", 0.1),
            max_object_bytes=int(env_number(env, "CONFIG_MAX_BYTES", 1024 * 1024)),
            paths=VolumePaths.from_env(env),
            health_port=int(env_number(env, "HEALTH_PORT", 8081)),
            gateway_admin_url=env_url(env, "GATEWAY_ADMIN_URL"),
            gateway_admin_key=env.get("GATEWAY_ADMIN_KEY") or None,
            endpoint_url=env_url(env, "AWS_ENDPOINT_URL_S3") or env_url(env, "AWS_ENDPOINT_URL"),
            gateway_verdict_timeout=env_number(env, "CONFIG_SYNC_GATEWAY_WAIT", 5.0),
            store_breaker=policy_from_env(env, "CONFIG_SYNC", env_number(env, "CONFIG_SYNC_INTERVAL", 60.0)),
        )
