"""The response cache's Redis client, made in this one function (Sentinel/Cluster support swaps its body).

The cache sends only GET, SET and PING on one key each, so any client with those serves it. No retries and tight
timeouts: a slow Redis is a miss, never a slow request (store.py also bounds every call with asyncio.timeout)."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def cache_redis(url: str, timeout: float, max_connections: int) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,  # waiting for a free connection counts in the call's time
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return aioredis.Redis(connection_pool=pool)
