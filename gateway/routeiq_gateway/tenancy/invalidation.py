"""Admin changes to keys and teams announced to every replica through Redis pub/sub (REDIS_URL).

A message only says "reload": each replica then reloads from PostgreSQL, the system of record, so a lost or
repeated message costs a reload, never a wrong answer. After a reconnect the replica reloads too (it may have
missed messages). Without Redis, replicas converge within `routeiq.keys.refresh_seconds`.

With Sentinel each reconnect asks the sentinels for the master, so after a failover the channel is subscribed on
the new one. A Redis Cluster forwards every PUBLISH to every node: the subscription is on any one node, the next
one in turn after it is lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from routeiq_shared.redis_settings import REDIS_ERRORS, RedisSettings

log = logging.getLogger("routeiq.gateway")

CHANNEL = "routeiq:keys:changed"
_RETRY_SECONDS = 1.0


class Invalidation:
    def __init__(self, settings: RedisSettings, on_change: Callable[[], None], timeout: float = 2.0) -> None:
        self.settings = settings
        self.on_change = on_change
        self.timeout = timeout
        self._client: Any = None
        self._node: Any = None  # a cluster's node the subscription is on
        self._turn = 0

    def _options(self) -> dict[str, Any]:
        return {"socket_connect_timeout": self.timeout, "socket_timeout": self.timeout}

    def _redis(self) -> Any:
        if self._client is None:
            extra = {} if self.settings.mode == "cluster" else {"health_check_interval": 10}
            self._client = self.settings.client(**self._options(), **extra)
        return self._client

    async def _subscriber(self) -> Any:
        if self.settings.mode != "cluster":
            return self._redis()
        cluster = self._redis()
        await cluster.initialize()
        nodes = sorted(cluster.get_primaries(), key=lambda n: (n.host, n.port))
        node = nodes[self._turn % len(nodes)]
        self._turn += 1
        if self._node is not None:
            await self._node.aclose()
        self._node = self.settings.node_client(node.host, node.port, **self._options(), health_check_interval=10)
        return self._node

    async def announce(self, what: str) -> None:
        """Best effort: a replica that misses it catches up at its next periodic reload."""
        try:
            await self._redis().publish(CHANNEL, what)
        except REDIS_ERRORS as exc:
            log.warning(
                "Key change not announced to other replicas (they reload on their interval)",
                extra={"event": "key_invalidation_failed", "reason": str(exc)},
            )

    async def run(self, stop: asyncio.Event) -> None:
        first = True
        while not stop.is_set():
            pubsub = None
            try:
                pubsub = (await self._subscriber()).pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(CHANNEL)
                if not first:
                    log.info(
                        "Key invalidation channel subscribed again",
                        extra={"event": "key_invalidation_resubscribed", "redis": self.settings.target},
                    )
                    self.on_change()  # messages may have been missed while away
                first = False
                while not stop.is_set():
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self.on_change()
            except REDIS_ERRORS as exc:
                log.warning(
                    "Key invalidation channel lost", extra={"event": "key_invalidation_lost", "reason": str(exc)}
                )
                first = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _RETRY_SECONDS)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(*REDIS_ERRORS):
                        await pubsub.aclose()

    async def close(self) -> None:
        if self._node is not None:
            await self._node.aclose()
        if self._client is not None:
            await self._client.aclose()
