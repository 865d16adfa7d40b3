"""The response cache's Redis client, made in this one function, in whichever mode REDIS_URL / Sentinel / Cluster
says (routeiq_shared.redis_settings).

The cache sends only GET, SET and PING on one key each, so any client with those serves it (each key is one
cluster slot). No retries and tight timeouts: a slow Redis is a miss, never a slow request (store.py also bounds
every call with asyncio.timeout)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from routeiq_shared.redis_settings import RedisSettings


def cache_redis(settings: RedisSettings, timeout: float, max_connections: int) -> Any:
    options: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.mode == "standalone":
        pool = aioredis.BlockingConnectionPool(
            max_connections=max_connections,
            timeout=timeout,  # waiting for a free connection counts in the call's time
            **settings.connection_kwargs(),
            **options,
        )
        return aioredis.Redis(connection_pool=pool)
    # Sentinel's pool and the cluster's per-node pools refuse past max_connections (a miss) instead of waiting.
    return settings.client(max_connections=max_connections, **options)
