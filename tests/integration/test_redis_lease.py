"""The Redis lease semaphore against a real redis-server: the fleet-wide bound holds, waiters get freed
permits, a stale holder cannot touch someone else's lease, renewal keeps a lease past its TTL, a killed holder's
permit comes back after the TTL with nobody's help, and a Redis outage is one quick `LeaseUnavailable`."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import redis.asyncio as aioredis
from harness.processes import ManagedProcess, child_env, free_port
from harness.redis_server import RedisServer, find_redis_server
from routeiq_shared.lease import Lease, LeaseSemaphore, LeaseUnavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

T = TypeVar("T")


def run_with(url: str, scenario: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    """Run an async scenario with a fresh asyncio client that is always closed."""

    async def main() -> T:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
        try:
            return await asyncio.wait_for(scenario(client), timeout=20)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_second_acquirer_waits_until_the_first_releases(fresh_redis: RedisServer) -> None:
    async def scenario(client: aioredis.Redis) -> None:
        first = await LeaseSemaphore(client, "m", permits=1).try_acquire()
        assert first is not None
        waiter = asyncio.create_task(LeaseSemaphore(client, "m", permits=1).acquire(timeout_s=5, poll_s=0.02))
        await asyncio.sleep(0.3)
        assert not waiter.done()  # the only permit is taken
        released_at = time.monotonic()
        assert await first.release() is True
        second = await waiter
        assert second is not None
        assert time.monotonic() - released_at < 0.2  # picked up on the next jittered poll
        assert second.waited_s >= 0.3
        assert second.attempts > 1
        assert await client.get(second.key) == second.token.encode()

    run_with(fresh_redis.url, scenario)


def test_permits_bound_concurrent_holders_and_everyone_gets_a_turn(fresh_redis: RedisServer) -> None:
    permits, workers, hold_s = 3, 10, 0.1
    current = peak = 0
    ran: list[int] = []
    redis_peak = 0

    async def worker(client: aioredis.Redis, i: int) -> None:
        nonlocal current, peak
        lease = await LeaseSemaphore(client, "bound", permits=permits, ttl_ms=5000).acquire(timeout_s=10, poll_s=0.02)
        assert lease is not None
        async with lease:
            current += 1
            peak = max(peak, current)
            await asyncio.sleep(hold_s)
            current -= 1
        ran.append(i)

    async def watch_redis(semaphore: LeaseSemaphore) -> None:
        nonlocal redis_peak
        while True:
            redis_peak = max(redis_peak, await semaphore.holders())
            await asyncio.sleep(0.005)

    async def scenario(client: aioredis.Redis) -> None:
        watcher = asyncio.create_task(watch_redis(LeaseSemaphore(client, "bound", permits=permits)))
        await asyncio.gather(*(worker(client, i) for i in range(workers)))
        watcher.cancel()
        assert await LeaseSemaphore(client, "bound", permits=permits).holders() == 0  # all released

    run_with(fresh_redis.url, scenario)
    assert sorted(ran) == list(range(workers))
    assert peak == permits  # never more, and the bound was actually reached
    assert 1 <= redis_peak <= permits


def test_slots_are_distinct_keys_and_a_full_semaphore_refuses(fresh_redis: RedisServer) -> None:
    async def scenario(client: aioredis.Redis) -> None:
        semaphore = LeaseSemaphore(client, "full", permits=3)
        leases = [await semaphore.try_acquire() for _ in range(3)]
        assert all(lease is not None for lease in leases)
        assert sorted(lease.key for lease in leases if lease) == [f"routeiq:lease:full:{i}" for i in range(3)]
        assert await semaphore.try_acquire() is None
        assert await semaphore.holders() == 3

    run_with(fresh_redis.url, scenario)


def test_stale_release_does_not_delete_the_new_holders_lease(fresh_redis: RedisServer) -> None:
    async def scenario(client: aioredis.Redis) -> None:
        semaphore = LeaseSemaphore(client, "stale", permits=1, ttl_ms=200)
        old = await semaphore.try_acquire()  # never entered: no renewal, so it expires
        assert old is not None
        new = await semaphore.acquire(timeout_s=2, poll_s=0.02)
        assert new is not None and new.key == old.key and new.token != old.token
        assert new.waited_s >= 0.1  # it had to wait for the TTL
        assert await old.release() is False
        assert await client.get(new.key) == new.token.encode()
        assert await old.renew() is False and old.lost
        assert await client.pttl(new.key) <= 200  # the stale renewal did not extend the new holder's lease
        assert await new.release() is True
        assert await client.exists(new.key) == 0

    run_with(fresh_redis.url, scenario)


def test_renewal_keeps_a_held_lease_alive_past_its_ttl(fresh_redis: RedisServer) -> None:
    async def scenario(client: aioredis.Redis) -> None:
        semaphore = LeaseSemaphore(client, "renew", permits=1, ttl_ms=300)
        lease = await semaphore.try_acquire()
        assert lease is not None
        async with lease:
            await asyncio.sleep(1.0)  # more than three TTLs
            assert await client.get(lease.key) == lease.token.encode()
            assert not lease.lost
            assert await semaphore.try_acquire() is None
        assert await client.exists(lease.key) == 0  # released on exit

    run_with(fresh_redis.url, scenario)


def test_lease_taken_over_while_held_is_reported_lost(
    fresh_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(client: aioredis.Redis) -> None:
        lease = await LeaseSemaphore(client, "lost", permits=1, ttl_ms=300).try_acquire()
        assert lease is not None
        async with lease:
            await client.set(lease.key, "someone-else", px=5000)  # as if it had expired and been taken
            await asyncio.sleep(0.25)  # past one renewal tick (ttl/3)
            assert lease.lost
        assert await client.get(lease.key) == b"someone-else"  # exit did not delete the other holder's lease

    with caplog.at_level(logging.WARNING, logger="routeiq_shared.lease"):
        run_with(fresh_redis.url, scenario)
    assert any(r.getMessage() == "Lease lost" and r.lease_key == "routeiq:lease:lost:0" for r in caplog.records)


def test_body_exception_still_releases(fresh_redis: RedisServer) -> None:
    async def scenario(client: aioredis.Redis) -> Lease:
        lease = await LeaseSemaphore(client, "boom", permits=1).try_acquire()
        assert lease is not None
        with pytest.raises(RuntimeError, match="download failed"):
            async with lease:
                raise RuntimeError("download failed")
        assert await client.exists(lease.key) == 0
        return lease

    assert not run_with(fresh_redis.url, scenario).held


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    import redis.asyncio as aioredis
    from routeiq_shared.lease import LeaseSemaphore

    async def main() -> None:
        client = aioredis.Redis.from_url(sys.argv[1])
        lease = await LeaseSemaphore(client, sys.argv[2], ttl_ms=int(sys.argv[3])).acquire(timeout_s=5, poll_s=0.05)
        assert lease is not None
        async with lease:
            print("acquired", lease.token, flush=True)
            await asyncio.sleep(60)

    asyncio.run(main())
    """
)


def test_killed_holder_frees_its_permit_after_the_ttl(fresh_redis: RedisServer, tmp_path: Path) -> None:
    ttl_ms = 500
    log = tmp_path / "holder.log"
    argv = [sys.executable, "-c", HOLDER, fresh_redis.url, "dies", str(ttl_ms)]
    holder = ManagedProcess(argv, log, env=child_env(), name="lease-holder").start()
    try:
        holder.wait_ready(lambda: "acquired" in log.read_text(), 10, "lease acquired")
        token = log.read_text().split()[1]
        key = "routeiq:lease:dies:0"

        async def scenario(client: aioredis.Redis) -> float:
            await asyncio.sleep(2 * ttl_ms / 1000)
            assert await client.get(key) == token.encode()  # the live holder renews past its TTL
            holder.send_signal(signal.SIGKILL)
            holder.wait_exit(5)
            killed_at = time.monotonic()
            semaphore = LeaseSemaphore(client, "dies", ttl_ms=ttl_ms)
            assert await semaphore.try_acquire() is None  # still held: nobody released it
            lease = await semaphore.acquire(timeout_s=5, poll_s=0.02)
            assert lease is not None
            await lease.release()
            return time.monotonic() - killed_at

        freed_after = run_with(fresh_redis.url, scenario)
    finally:
        holder.stop()
    # The last renewal was at most ttl/3 before the kill, so the key lived on for between 2/3 TTL and one TTL.
    assert 0.2 < freed_after < ttl_ms / 1000 + 0.3


def test_acquire_timeout_returns_none(fresh_redis: RedisServer) -> None:
    async def scenario(client: aioredis.Redis) -> None:
        semaphore = LeaseSemaphore(client, "busy", permits=1)
        assert await semaphore.try_acquire() is not None
        started = time.monotonic()
        assert await semaphore.acquire(timeout_s=0.3, poll_s=0.05) is None
        assert 0.3 <= time.monotonic() - started < 0.6
        assert await semaphore.acquire(timeout_s=0, poll_s=0.05) is None  # one try, no wait

    run_with(fresh_redis.url, scenario)


def test_redis_down_is_lease_unavailable_at_once() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens here

    async def scenario(client: aioredis.Redis) -> None:
        semaphore = LeaseSemaphore(client, "down", permits=2)
        started = time.monotonic()
        with pytest.raises(LeaseUnavailable, match="ConnectionError"):
            await semaphore.acquire(timeout_s=30, poll_s=0.05)  # raises, does not poll for 30 s
        assert time.monotonic() - started < 2.0
        with pytest.raises(LeaseUnavailable):
            await semaphore.holders()

    run_with(url, scenario)


def test_redis_lost_while_holding_marks_the_lease_lost_and_exit_does_not_raise(tmp_path: Path) -> None:
    binary = find_redis_server()
    assert binary is not None
    server = RedisServer.start(binary, tmp_path / "redis")  # our own server, so we can stop it mid-lease
    try:

        async def scenario(client: aioredis.Redis) -> Lease:
            lease = await LeaseSemaphore(client, "outage", ttl_ms=300).try_acquire()
            assert lease is not None
            async with lease:
                server.stop()
                await asyncio.sleep(0.7)  # renewals fail until the lease's expiry passes
                assert lease.lost
            return lease

        lease = run_with(server.url, scenario)
    finally:
        server.stop()
    assert lease.lost and not lease.held
