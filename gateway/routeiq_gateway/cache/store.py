"""The response cache's runtime: Redis when the policy says redis and REDIS_URL is set and answering, else the
bounded in-memory LRU. It outlives config reloads (the policy is read per call, the LRU resized on reload).

The cache never fails a request: a Redis error or a call slower than `cache_params.socket_timeout` is a miss
(or a write not made), counted by the cache's circuit breaker (dependency "cache", `routeiq.breakers.redis`'s
policy: open after one failure by default) which flips the cache to the LRU: `gateway_degraded_mode
{service="cache"}` is 1, one log line says why; after the breaker's cool-down (1 s) a PING probes, and its
answer brings Redis back, one more line. With type redis and no REDIS_URL the LRU serves all along, degraded too
(every replica has its own entries; there is no breaker then)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from routeiq_shared.breaker import BreakerPolicy, CircuitBreaker
from routeiq_shared.config_schema import BreakersSettings
from routeiq_shared.redis_settings import REDIS_ERRORS, RedisSettings

from routeiq_gateway.observability.metrics import GatewayMetrics

from .entry import Entry, decode, encode
from .lru import LocalLRU
from .policy import CachePolicy
from .redis_client import cache_redis

log = logging.getLogger("routeiq.gateway")

_ERRORS = REDIS_ERRORS
_PROBE_SECONDS = 1.0  # how often the background task looks whether a probe is due
_DEFAULT_POLICY = BreakersSettings().redis.policy()


class ResponseCache:
    def __init__(
        self,
        redis: RedisSettings | None,
        metrics: GatewayMetrics,
        breaker_policy: Callable[[], BreakerPolicy] = lambda: _DEFAULT_POLICY,
    ) -> None:
        self.redis = redis
        self.metrics = metrics
        self.local = LocalLRU(10_000, 64 * 1024 * 1024)
        self._client: Any = None  # redis-py's Redis, or RedisCluster
        self._client_settings: tuple[float, int] | None = None
        self._retired: list[Any] = []
        # Redis failing: open until a probe answers (gateway_circuit_breaker_state{dependency="cache"}).
        self.breaker: CircuitBreaker | None = metrics.breaker("cache", breaker_policy, log) if redis else None
        self._degraded = False
        self._policy = CachePolicy()
        metrics.degraded_mode.labels("cache").set(0)
        metrics.cache_local_entries.set_function(lambda: len(self.local))
        metrics.cache_local_bytes.set_function(lambda: self.local.bytes)

    def configure(self, policy: CachePolicy) -> None:
        """A config was loaded: the LRU takes its bounds, the degraded state its meaning."""
        self._policy = policy
        self.local.resize(policy.local_max_entries, policy.local_max_bytes)
        if not policy.enabled:
            self.local.clear()  # turned off: nothing of it is served again, so nothing is kept
        self._publish("REDIS_URL is not set" if self.redis is None else "Redis unreachable")

    def store_name(self, policy: CachePolicy) -> str:
        return "redis" if self._redis_serves(policy) else "local"

    # --- the request path ----------------------------------------------------------------------------------

    async def get(self, policy: CachePolicy, key: str, max_age: float | None, model: str) -> Entry | None:
        """The entry for `key`, if there is one (younger than `max_age`); counted as a hit or a miss."""
        raw: bytes | None = None
        store = "local"
        if self._redis_serves(policy):
            try:
                async with asyncio.timeout(policy.redis_timeout):
                    got = await self._redis(policy).get(key)
                raw = got if isinstance(got, bytes) else None
                store = "redis"
                self._ok()
            except _ERRORS as exc:
                self._failed(exc)
        if store == "local":
            raw = self.local.get(key, time.monotonic())
        entry = decode(raw) if raw is not None else None
        if entry is not None and max_age is not None and time.time() - entry.stored_at > max_age:
            entry = None  # too old for this request (s-maxage); left for others
        self.metrics.cache_requests.labels(model, "hit" if entry else "miss", store).inc()
        return entry

    def count_miss(self, policy: CachePolicy, model: str) -> None:
        """A request that skipped the lookup (no-cache) and will store its answer."""
        self.metrics.cache_requests.labels(model, "miss", self.store_name(policy)).inc()

    async def put(self, policy: CachePolicy, key: str, entry: Entry, ttl: float) -> None:
        value = encode(entry)
        if len(value) > policy.max_entry_bytes:
            self.metrics.cache_writes.labels(self.store_name(policy), "too_large").inc()
            return
        if self._redis_serves(policy):
            try:
                async with asyncio.timeout(policy.redis_timeout):
                    await self._redis(policy).set(key, value, px=max(1, int(ttl * 1000)))
                self.metrics.cache_writes.labels("redis", "stored").inc()
                self._ok()
                return
            except _ERRORS as exc:
                self._failed(exc)
        kept = self.local.put(key, value, ttl, time.monotonic())
        self.metrics.cache_writes.labels("local", "stored" if kept else "too_large").inc()

    # --- background ----------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """While the breaker is open, PING Redis once its cool-down is over; Redis serves again once it answers."""
        await self._warm()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _PROBE_SECONDS)
            policy, breaker = self._policy, self.breaker
            if breaker is None or not (policy.uses_redis and breaker.probe_due() and breaker.allow()):
                continue
            client = self._redis(policy)
            try:
                async with asyncio.timeout(max(policy.redis_timeout, 0.5)):
                    await client.ping()
                # Connections opened before the outage are dead: closed now, not found by the next requests (a
                # cluster client has a pool per node and drops a dead node's itself).
                pool = getattr(client, "connection_pool", None)
                if pool is not None:
                    await pool.disconnect()
            except _ERRORS as exc:
                breaker.failure(f"{type(exc).__name__}: {exc}"[:300])
                continue
            breaker.success()
            self._publish("")

    async def _warm(self) -> None:
        """A first PING before requests need Redis (on a cluster the client reads the slot map first): a cold first
        call can take longer than socket_timeout and would open the breaker for nothing. A failure is left for the
        first call to report."""
        policy = self._policy
        if self.redis is None or not policy.uses_redis:
            return
        with contextlib.suppress(*_ERRORS):
            async with asyncio.timeout(max(policy.redis_timeout, 2.0)):
                await self._redis(policy).ping()

    async def close(self) -> None:
        for client in (*self._retired, *([self._client] if self._client is not None else [])):
            with contextlib.suppress(*_ERRORS):
                await client.aclose()

    # --- internals -----------------------------------------------------------------------------------------

    @property
    def _down(self) -> bool:
        return self.breaker is not None and not self.breaker.closed

    def _redis_serves(self, policy: CachePolicy) -> bool:
        return policy.store == "redis" and self.redis is not None and not self._down

    def _ok(self) -> None:
        if self.breaker is not None:
            self.breaker.success()

    def _redis(self, policy: CachePolicy) -> Any:
        assert self.redis is not None
        settings = (policy.redis_timeout, policy.max_connections)
        if self._client is None or settings != self._client_settings:
            if self._client is not None:  # a reload changed them: the old client is closed at exit
                self._retired.append(self._client)
            self._client = cache_redis(self.redis, *settings)
            self._client_settings = settings
        return self._client

    def _failed(self, exc: BaseException) -> None:
        self.metrics.cache_redis_errors.labels(type(exc).__name__).inc()
        if self.breaker is not None:
            self.breaker.failure(f"{type(exc).__name__}: {exc}"[:300])
        if self._down:
            self._publish(f"{type(exc).__name__}: {exc}"[:300] or "timeout")

    def _publish(self, reason: str) -> None:
        """gateway_degraded_mode{service="cache"} and one log line, when it changes."""
        policy = self._policy
        degraded = policy.uses_redis and (self.redis is None or self._down)
        if degraded == self._degraded:
            return
        self._degraded = degraded
        self.metrics.degraded_mode.labels("cache").set(1 if degraded else 0)
        if degraded:
            log.error(
                "Response cache on the in-memory LRU of this replica: %s",
                reason,
                extra={"event": "degraded_mode", "service": "cache", "degraded": True, "reason": reason},
            )
        else:
            log.info(
                "Response cache on Redis again" if policy.uses_redis else "Response cache no longer uses Redis",
                extra={"event": "degraded_mode", "service": "cache", "degraded": False},
            )
