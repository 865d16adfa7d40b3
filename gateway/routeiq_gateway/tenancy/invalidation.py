"""Admin changes to keys and teams announced to every replica through Redis pub/sub (REDIS_URL).

A message only says "reload": each replica then reloads from PostgreSQL, the system of record, so a lost or
repeated message costs a reload, never a wrong answer. After a reconnect the replica reloads too (it may have
missed messages). Without Redis, replicas converge within `routeiq.keys.refresh_seconds`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("routeiq.gateway")

CHANNEL = "routeiq:keys:changed"
_RETRY_SECONDS = 1.0


class Invalidation:
    def __init__(self, url: str, on_change: Callable[[], None], timeout: float = 2.0) -> None:
        self.url = url
        self.on_change = on_change
        self.timeout = timeout
        self._client: aioredis.Redis | None = None

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self.url, socket_connect_timeout=self.timeout, socket_timeout=self.timeout, health_check_interval=10
            )
        return self._client

    async def announce(self, what: str) -> None:
        """Best effort: a replica that misses it catches up at its next periodic reload."""
        try:
            await self._redis().publish(CHANNEL, what)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning(
                "Key change not announced to other replicas (they reload on their interval)",
                extra={"event": "key_invalidation_failed", "reason": str(exc)},
            )

    async def run(self, stop: asyncio.Event) -> None:
        first = True
        while not stop.is_set():
            pubsub = self._redis().pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                if not first:
                    self.on_change()  # messages may have been missed while away
                first = False
                while not stop.is_set():
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self.on_change()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning(
                    "Key invalidation channel lost", extra={"event": "key_invalidation_lost", "reason": str(exc)}
                )
                first = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _RETRY_SECONDS)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
