"""Virtual keys on the hot path: an in-memory map sha256(secret) → VirtualKey, never a database call per request.

- Loaded at start, reloaded whole every `routeiq.keys.refresh_seconds`, and at once when an admin change is
  announced (Redis pub/sub, invalidation.py) or made on this replica.
- A key never seen (created on another replica since the last reload, or before its announcement arrived): one
  lookup by hash, bounded by `lookup_timeout_seconds`, shared by every request presenting that key meanwhile
  (deduplicated), at most `lookups_per_second` across all unknown keys; a key not found is not looked up again
  for `negative_ttl_seconds`. So a brand-new key's first request waits for at most that one bounded async query
  (the event loop serves everything else meanwhile); a flood of made-up keys costs the database a few queries
  a second, no more.
- PostgreSQL unreachable: keys already cached keep working for `max_stale_seconds` after the last good reload;
  keys never seen are refused (no lookup is tried). A failed reload or lookup counts against the PostgreSQL
  circuit breaker (`routeiq.breakers.postgres`, shared with spend writes and the audit table); while it is not
  closed `gateway_degraded_mode{service="postgres"}` is 1 (one JSON line says so, one more when it is back) and
  the reload runs only as the breaker's probe, once its cool-down (default 1 s) is over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import psycopg
from routeiq_shared.breaker import BreakerPolicy
from routeiq_shared.config_schema import BreakersSettings, KeysSettings

from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.tenancy import store
from routeiq_gateway.tenancy.database import Database
from routeiq_gateway.tenancy.records import VirtualKey

log = logging.getLogger("routeiq.gateway")

_NEGATIVE_MAX = 100_000  # remembered unknown hashes; past this the oldest are forgotten
DB_ERRORS = (psycopg.Error, OSError, TimeoutError)  # psycopg_pool.PoolTimeout is a psycopg.Error
_DEFAULT_POLICY = BreakersSettings().postgres.policy()
STALE = GatewayError(
    503, "Keys cannot be verified: the key store has been unreachable too long. Retry later.", code="key_store_down"
)


class KeyCache:
    def __init__(
        self,
        db: Database,
        settings: Callable[[], KeysSettings],
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
        breaker_policy: Callable[[], BreakerPolicy] = lambda: _DEFAULT_POLICY,
    ) -> None:
        self.db = db
        self.settings = settings  # read at each use: a config reload applies at once
        self.metrics = metrics
        self.clock = clock
        self._keys: dict[bytes, VirtualKey] = {}  # replaced whole, never mutated in place
        self._last_ok: float | None = None
        # PostgreSQL's breaker: this cache's degraded mode follows it; spend and the audit table report to it too.
        self.breaker = metrics.breaker("postgres", breaker_policy, log, self._degraded, clock)
        self._negative: dict[bytes, float] = {}  # hash → until (clock)
        self._pending: dict[bytes, asyncio.Future[VirtualKey | None]] = {}
        self._tokens = settings().lookups_per_second  # a full bucket at start
        self._tokens_at = clock()
        self._wake = asyncio.Event()
        self._generation = 0  # bumped by every invalidation: a reload started before one does not count as fresh
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the hot path --------------------------------------------------------------------------------------

    def cached(self, digest: bytes) -> VirtualKey | None:
        """The key when cached and the cache is fresh enough; raises 503 when it is too stale to trust."""
        key = self._keys.get(digest)
        if key is not None and self._too_stale():
            raise STALE
        return key

    async def resolve(self, digest: bytes) -> VirtualKey | None:
        """The key for a presented secret's hash, or None when there is none (the caller answers 401)."""
        key = self.cached(digest)
        if key is not None:
            return key
        if not self.breaker.closed or self._last_ok is None:
            return None  # never seen and the store is away: refused, not waited for
        now = self.clock()
        until = self._negative.get(digest)
        if until is not None and until > now:
            return None
        pending = self._pending.get(digest)
        if pending is None:
            if not self._take_token(now):
                self.metrics.key_lookups.labels("throttled").inc()
                return None
            pending = asyncio.get_running_loop().create_future()
            self._pending[digest] = pending
            task = asyncio.create_task(self._lookup(digest, pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.wait_for(asyncio.shield(pending), self.settings().lookup_timeout_seconds)
        except TimeoutError:
            return None

    # --- background ----------------------------------------------------------------------------------------

    async def refresh(self, primary: bool = False) -> bool:
        """Reload every key and team; True when it worked. `primary` after a change (see store.load_all)."""
        if not self.breaker.allow():
            return False  # open: the next refresh after the cool-down is the probe
        generation = self._generation
        started = time.monotonic()
        try:
            _, keys = await store.load_all(self.db, primary)
        except DB_ERRORS as exc:
            self.breaker.failure(self.db.settings.describe(exc))
            return False
        if generation != self._generation:
            self._wake.set()  # an invalidation arrived meanwhile: what was read may predate it
        self._keys = keys
        self._negative = {}
        self._last_ok = self.clock()
        self.metrics.virtual_key_cache.set(len(keys))
        self.breaker.success(time.monotonic() - started)  # over routeiq.breakers.postgres's budget: a failure
        return True

    def invalidate(self) -> None:
        """An admin changed a key or team somewhere: reload now."""
        self._generation += 1
        self._wake.set()

    def drop(self, key_ids: set[str]) -> None:
        """Keys deleted or revoked here: refused from the next request on, before the reload confirms it."""
        self._keys = {h: k for h, k in self._keys.items() if k.id not in key_ids}
        self.invalidate()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            interval = self.settings().refresh_seconds
            if not self.breaker.closed:
                interval = min(interval, 1.0)  # probe as soon as the breaker's cool-down is over
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if stop.is_set():
                return
            changed = self._wake.is_set()
            self._wake.clear()
            await self.refresh(primary=changed)

    @property
    def size(self) -> int:
        return len(self._keys)

    @property
    def degraded(self) -> bool:
        return not self.breaker.closed

    # --- internals -----------------------------------------------------------------------------------------

    async def _lookup(self, digest: bytes, result: asyncio.Future[VirtualKey | None]) -> None:
        key: VirtualKey | None = None
        try:
            key = await store.find_key(self.db, digest)
        except DB_ERRORS as exc:
            self.breaker.failure(self.db.settings.describe(exc))
            self.metrics.key_lookups.labels("error").inc()
            log.warning(
                "Virtual key lookup failed",
                extra={"event": "key_lookup_failed", "reason": self.db.settings.describe(exc)},
            )
        else:
            self.breaker.success()
            self.metrics.key_lookups.labels("found" if key is not None else "unknown").inc()
            if key is not None:
                self._keys = {**self._keys, digest: key}
            else:
                self._remember_unknown(digest)
        finally:
            self._pending.pop(digest, None)
            if not result.done():
                result.set_result(key)

    def _remember_unknown(self, digest: bytes) -> None:
        ttl = self.settings().negative_ttl_seconds
        if ttl <= 0:
            return
        if len(self._negative) >= _NEGATIVE_MAX:
            self._negative.pop(next(iter(self._negative)))
        self._negative[digest] = self.clock() + ttl

    def _take_token(self, now: float) -> bool:
        rate = self.settings().lookups_per_second
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _too_stale(self) -> bool:
        return self._last_ok is None or self.clock() - self._last_ok > self.settings().max_stale_seconds

    def _degraded(self, degraded: bool, reason: str) -> None:
        """The breaker left closed (degraded) or closed again: one line each way."""
        if degraded:
            log.error(
                "PostgreSQL unreachable: serving cached virtual keys, refusing keys never seen",
                extra={
                    "event": "degraded_mode",
                    "service": "postgres",
                    "degraded": True,
                    "cached_keys": len(self._keys),
                    "max_stale_seconds": self.settings().max_stale_seconds,
                    "reason": reason,
                },
            )
        else:
            log.info(
                "PostgreSQL reachable again: virtual keys reloaded",
                extra={
                    "event": "degraded_mode",
                    "service": "postgres",
                    "degraded": False,
                    "cached_keys": len(self._keys),
                },
            )
