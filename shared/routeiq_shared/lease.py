"""A fleet-wide counting semaphore on Redis: at most `permits` holders of one named lease at a time.

Each permit is one key, `routeiq:lease:<name>:<i>` for i in range(permits), set with `SET key token NX PX ttl`
to a random token. Only the holder knows its token, so release (compare-and-delete) and renewal
(compare-and-PEXPIRE) are Lua scripts that act only if the key still holds that token: a holder whose lease
expired can never delete or extend the lease someone else has taken since. A holder that dies simply stops
renewing, and its key expires after `ttl_ms` with no action by anyone.

    semaphore = LeaseSemaphore(client, f"model-download:{name}", permits=max_concurrent)
    try:
        lease = await semaphore.acquire(timeout_s=600)
    except LeaseUnavailable:
        lease = None  # Redis down: fall back (e.g. a jittered delay), never block forever
    if lease is not None:
        async with lease:           # renews every ttl/3 in the background, releases on exit
            await download()
            if lease.lost: ...      # the lease expired under us (e.g. Redis unreachable for a whole TTL)

Any Redis failure surfaces as one exception, `LeaseUnavailable`, so that fallback is a single `except`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable
from types import TracebackType
from typing import Self, TypeVar

import redis.asyncio as aioredis

from routeiq_shared.redis_settings import REDIS_ERRORS

logger = logging.getLogger(__name__)
T = TypeVar("T")

KEY_PREFIX = "routeiq:lease"

# KEYS[1] = slot, ARGV[1] = token. Delete only our own lease.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] = slot, ARGV[1] = token, ARGV[2] = ttl in ms. Extend only our own lease.
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class LeaseUnavailable(Exception):
    """Redis could not be reached or refused the command; the caller should fall back, not wait."""


class LeaseSemaphore:
    """`permits` leases named `name`, each expiring `ttl_ms` after it was last taken or renewed.

    Holds no connection of its own: `client` (a `redis.asyncio.Redis`) is the caller's, with the caller's
    timeouts. Creating a semaphore talks to nobody.
    """

    def __init__(self, client: aioredis.Redis, name: str, permits: int = 1, ttl_ms: int = 30_000) -> None:
        if not name or any(ch.isspace() for ch in name):
            raise ValueError(f"lease name must be non-empty without whitespace, got {name!r}")
        if permits < 1:
            raise ValueError(f"permits must be >= 1, got {permits}")
        if ttl_ms < 30:  # renewal runs every ttl/3: below that, scheduling jitter alone would lose the lease
            raise ValueError(f"ttl_ms must be >= 30, got {ttl_ms}")
        self.client = client
        self.name = name
        self.permits = permits
        self.ttl_ms = ttl_ms
        self.keys: tuple[str, ...] = tuple(f"{KEY_PREFIX}:{name}:{i}" for i in range(permits))
        self._release_script = client.register_script(_RELEASE_LUA)
        self._renew_script = client.register_script(_RENEW_LUA)

    async def try_acquire(self) -> Lease | None:
        """Take a free permit now, or return None. Raises `LeaseUnavailable` if Redis fails."""
        taken = await self._take_free_slot()
        return None if taken is None else Lease(self, *taken)

    async def _take_free_slot(self) -> tuple[str, str, float] | None:
        # One pass over the slots, starting at a random one so contenders don't all hit slot 0 first.
        token = secrets.token_hex(16)
        start = random.randrange(self.permits)
        for offset in range(self.permits):
            key = self.keys[(start + offset) % self.permits]
            sent_at = time.monotonic()
            if await _call(self.client.set(key, token, nx=True, px=self.ttl_ms)):
                return key, token, sent_at
        return None

    async def acquire(self, timeout_s: float, poll_s: float = 0.5) -> Lease | None:
        """Wait up to `timeout_s` for a permit, trying again every ~`poll_s` (jittered ±50 % so waiters spread).

        Returns the `Lease` (its `waited_s` says how long it took), or None when the timeout passed, in which
        case the wait was `timeout_s`. Raises `LeaseUnavailable` if Redis fails.
        """
        if poll_s <= 0:
            raise ValueError(f"poll_s must be > 0, got {poll_s}")
        started = time.monotonic()
        deadline = started + timeout_s
        attempts = 0
        while True:
            attempts += 1
            taken = await self._take_free_slot()
            if taken is not None:
                return Lease(self, *taken, waited_s=time.monotonic() - started, attempts=attempts)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(remaining, poll_s * random.uniform(0.5, 1.5)))

    async def holders(self) -> int:
        """How many permits are taken right now (for metrics and tests)."""
        return int(await _call(self.client.exists(*self.keys)))

    async def _release(self, key: str, token: str) -> bool:
        return bool(await _call(self._release_script(keys=[key], args=[token])))

    async def _renew(self, key: str, token: str) -> bool:
        return bool(await _call(self._renew_script(keys=[key], args=[token, self.ttl_ms])))


class Lease:
    """One held permit. Use as `async with lease:` to renew it in the background and release it on exit."""

    def __init__(
        self,
        semaphore: LeaseSemaphore,
        key: str,
        token: str,
        taken_at: float,
        *,
        waited_s: float = 0.0,
        attempts: int = 1,
    ) -> None:
        self.semaphore = semaphore
        self.key = key
        self.token = token
        self.waited_s = waited_s  # time spent in acquire(), for lock-wait metrics
        self.attempts = attempts
        # Monotonic time by which the key has surely expired unless renewed since; counted from when the SET
        # was sent, so it is never later than the real expiry.
        self._expires_at = taken_at + semaphore.ttl_ms / 1000
        self._lost = False
        self._released = False
        self._renewer: asyncio.Task[None] | None = None

    @property
    def lost(self) -> bool:
        """True once a renewal found the lease gone (or could not renew it before it expired)."""
        return self._lost

    @property
    def held(self) -> bool:
        return not (self._lost or self._released)

    async def renew(self) -> bool:
        """Extend the lease by the ttl if it is still ours; False (and `lost`) if it is not. Redis errors raise
        `LeaseUnavailable`."""
        before = time.monotonic()
        if await self.semaphore._renew(self.key, self.token):
            self._expires_at = before + self.semaphore.ttl_ms / 1000
            return True
        self._mark_lost("the lease key no longer holds our token")
        return False

    async def release(self) -> bool:
        """Delete the lease if it is still ours. True if it was; False if it had expired (and maybe been taken
        by another holder, whose lease is left alone). Redis errors raise `LeaseUnavailable`."""
        self._released = True
        return await self.semaphore._release(self.key, self.token)

    async def __aenter__(self) -> Self:
        if self._renewer is None and self.held:
            self._renewer = asyncio.create_task(self._renew_loop(), name=f"lease-renew:{self.key}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop_renewing()
        if self._released:
            return
        try:
            await self.release()
        except LeaseUnavailable as err:
            # Not raised: the key expires on its own within the ttl, and raising here would mask the body's
            # outcome (a finished download is still finished).
            logger.warning("Lease release failed; it will expire by itself", extra=self._log_fields(error=str(err)))

    async def _stop_renewing(self) -> None:
        task, self._renewer = self._renewer, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _renew_loop(self) -> None:
        interval = self.semaphore.ttl_ms / 3000
        while self.held:
            await asyncio.sleep(interval)
            try:
                await self.renew()
            except LeaseUnavailable as err:
                # Keep trying while the lease may still be alive; past its expiry we can no longer claim it.
                if time.monotonic() >= self._expires_at:
                    self._mark_lost(f"could not renew before expiry: {err}")
                else:
                    logger.warning("Lease renewal failed; retrying", extra=self._log_fields(error=str(err)))

    def _mark_lost(self, why: str) -> None:
        if not self._lost:
            self._lost = True
            logger.warning("Lease lost", extra=self._log_fields(reason=why))

    def _log_fields(self, **more: str) -> dict[str, str]:
        return {"lease": self.semaphore.name, "lease_key": self.key, **more}

    def __repr__(self) -> str:
        state = "lost" if self._lost else ("released" if self._released else "held")
        return f"<Lease {self.key} {state} waited={self.waited_s:.3f}s>"


async def _call(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except REDIS_ERRORS as exc:
        raise LeaseUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
