"""The agent's settings, from the environment as in a pod spec."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from routeiq_shared.breaker import BreakerPolicy
from routeiq_shared.redis_settings import RedisSettings, RedisSettingsError
from routeiq_shared.sidecar import env_number, env_url
from routeiq_shared.store_health import policy_from_env
from routeiq_shared.volume import VolumePaths


@dataclass(frozen=True, slots=True)
class ModelSyncSettings:
    registry: str
    interval: float
    jitter: float
    names: tuple[str, ...]  # MODEL_NAMES: followed in addition to the synced config's routers
    require_signature: bool
    public_key: str | None  # PEM text or a path
    redis: RedisSettings | None  # REDIS_URL, Sentinel or Cluster (routeiq_shared.redis_settings)
    max_concurrent: int
    lease_ttl_ms: int
    lock_wait_seconds: float  # how long to wait for a download permit before trying again next poll
    fallback_delay_max: float  # Redis down: wait a random 0..this many seconds before downloading
    max_artifact_bytes: int
    retry_backoff: float  # a version whose bytes failed verification: first wait before downloading it again
    retry_backoff_max: float  # the wait doubles per failure up to this
    paths: VolumePaths
    health_port: int
    # MODEL_SYNC_BREAKER_FAILURES / _COOLDOWN: how many failed polls open the store's breaker, for how long
    store_breaker: BreakerPolicy = field(default_factory=BreakerPolicy)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ModelSyncSettings:
        env = os.environ if env is None else env
        names = tuple(n.strip() for n in env.get("MODEL_NAMES", "").split(",") if n.strip())
        # The S3 client reads these itself; checked here so a metadata address stops the agent with its name.
        env_url(env, "AWS_ENDPOINT_URL_S3")
        env_url(env, "AWS_ENDPOINT_URL")
        return cls(
            registry=env.get("MODEL_REGISTRY", ""),
            interval=env_number(env, "MODEL_SYNC_INTERVAL", 300.0),
            jitter=env_number(env, "MODEL_SYNC_JITTER", 0.1),
            names=names,
            require_signature=env.get("MODEL_REQUIRE_SIGNATURE", "true").strip().lower() not in ("false", "0", "no"),
            public_key=env.get("MODEL_SIGNING_PUBLIC_KEY") or None,
            redis=_redis(env),
            max_concurrent=max(1, int(env_number(env, "MODEL_SYNC_MAX_CONCURRENT", 1))),
            lease_ttl_ms=int(env_number(env, "MODEL_SYNC_LEASE_TTL_MS", 30_000)),
            lock_wait_seconds=env_number(env, "MODEL_SYNC_LOCK_WAIT", 600.0),
            fallback_delay_max=env_number(env, "MODEL_SYNC_FALLBACK_DELAY_MAX", 30.0),
            max_artifact_bytes=int(env_number(env, "MODEL_MAX_BYTES", 4 * 1024**3)),
            retry_backoff=env_number(env, "MODEL_SYNC_RETRY_BACKOFF", 300.0),
            retry_backoff_max=env_number(env, "MODEL_SYNC_RETRY_BACKOFF_MAX", 3600.0),
            paths=VolumePaths.from_env(env),
            health_port=int(env_number(env, "HEALTH_PORT", 8082)),
            store_breaker=policy_from_env(env, "MODEL_SYNC", env_number(env, "MODEL_SYNC_INTERVAL", 300.0)),
        )


def _redis(env: Mapping[str, str]) -> RedisSettings | None:
    try:
        return RedisSettings.from_env(env)
    except RedisSettingsError as exc:
        raise SystemExit(str(exc)) from None
