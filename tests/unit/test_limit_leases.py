"""Allowance leased in chunks (admission/leases.py) on a real redis-server: a busy scope far from its limits costs a
round trip per chunk, not per request; two replicas together never pass a limit and, leases drained, use all of
it; what a lease holds is given back at its end; near a limit, and for small limits, every request asks Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from harness.processes import wait_until
from harness.redis_server import RedisServer
from routeiq_gateway.admission.leases import LEASE_MIN_RPM
from routeiq_gateway.admission.limit_scripts import ADMIT, redis_keys
from routeiq_gateway.admission.limits import Limiter
from routeiq_gateway.admission.local_limits import Verdict
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.tenancy.records import Limits, Team, VirtualKey
from routeiq_shared.config_schema import LimitsSettings

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10}
PERIOD = 60_000
T0 = 1_800_000_000_000


def _evalsha_calls(server: RedisServer) -> int:
    stats: dict[str, Any] = server.client().info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def _limiter(server: RedisServer, lease_seconds: float = 5.0, replicas: int = 1) -> Limiter:
    settings = LimitsSettings(redis_timeout_seconds=1.0, lease_seconds=lease_seconds, replicas=replicas)
    return Limiter(server.url, lambda: settings, GatewayMetrics())


def _key(limits: Limits, team: Team | None = None) -> VirtualKey:
    return VirtualKey("key-1", None, team, frozenset(), limits, 0.0, None, False)


async def _admit_until_refused(limiter: Limiter, vkey: VirtualKey, most: int) -> int:
    admitted = 0
    for _ in range(most):
        try:
            ticket = await limiter.admit(vkey, "chat/completions", BODY)
        except GatewayError as exc:
            assert exc.status == 429
            return admitted
        assert ticket is not None
        limiter.finish(ticket, {"prompt_tokens": 5, "completion_tokens": 5}, answered=True)
        admitted += 1
    return admitted


def test_a_busy_scope_far_from_its_limits_asks_redis_once_a_chunk(fresh_redis: RedisServer) -> None:
    team = Team("team-1", None, frozenset(), Limits(rpm=10_000_000, max_parallel=10_000), 0.0)
    vkey = _key(Limits(rpm=10_000_000, tpm=1_000_000_000), team)

    async def scenario() -> None:
        leased, exact = _limiter(fresh_redis), _limiter(fresh_redis, lease_seconds=0)
        before = _evalsha_calls(fresh_redis)
        assert await _admit_until_refused(leased, vkey, 2000) == 2000
        await asyncio.sleep(0.05)  # the settles' pipeline
        with_leases = _evalsha_calls(fresh_redis) - before
        before = _evalsha_calls(fresh_redis)
        assert await _admit_until_refused(exact, vkey, 200) == 200
        await asyncio.sleep(0.05)
        without = _evalsha_calls(fresh_redis) - before
        # Chunks of 16, 32, 64 … 1024 requests: 7 admissions for 2,000 requests, each with its own settle and the
        # give-back of the chunk it replaces (one per scope); two script calls a request without leases.
        assert with_leases <= 50, with_leases
        assert without >= 2 * 200, without
        await leased.close()
        await exact.close()

    asyncio.run(scenario())


def test_two_replicas_with_leases_never_pass_a_limit_and_use_all_of_it(fresh_redis: RedisServer) -> None:
    limit = LEASE_MIN_RPM  # the smallest leased rpm: a burst of exactly this many, then refusals
    vkey = _key(Limits(rpm=limit))

    async def scenario() -> None:
        a, b = _limiter(fresh_redis, replicas=2), _limiter(fresh_redis, replicas=2)
        admitted = 0
        started = time.monotonic()
        refused = {a: False, b: False}
        while not all(refused.values()):
            for limiter in (a, b):
                if refused[limiter]:
                    continue
                got = await _admit_until_refused(limiter, vkey, 37)
                admitted += got
                refused[limiter] = got < 37
            # GCRA refills as it goes: the burst plus one request per 10 ms since the first.
            assert admitted <= limit + (time.monotonic() - started) * limit / 60 + 1
        # Each replica used its chunks to the end before Redis refused it: the whole burst at least.
        assert admitted >= limit
        await a.close()
        await b.close()

    asyncio.run(scenario())


def test_a_lease_is_given_back_at_its_end(fresh_redis: RedisServer) -> None:
    team = Team("team-1", None, frozenset(), Limits(max_parallel=1000, tpm=200_000), 0.0)
    vkey = _key(Limits(rpm=LEASE_MIN_RPM), team)  # 10 ms a request, 0.3 ms a token
    client = fresh_redis.client()
    k_rpm = redis_keys("k", "key-1", "team-1")[0]
    _, t_tpm, t_par = redis_keys("t", "team-1")

    async def scenario() -> None:
        limiter = _limiter(fresh_redis, lease_seconds=0.5)
        ticket = await limiter.admit(vkey, "chat/completions", BODY)  # a round trip, leasing a first chunk
        assert ticket is not None
        assert client.zcard(t_par) > 1  # its own slot and the leased ones
        k_lease = limiter.leases.leases[redis_keys("k", "key-1", "team-1")]
        t_lease = limiter.leases.leases[redis_keys("t", "team-1")]
        assert k_lease.requests > 0 and t_lease.tokens > 0 and t_lease.free
        limiter.finish(ticket, {"prompt_tokens": 5, "completion_tokens": 5}, answered=True)
        await asyncio.sleep(0.05)
        held = await limiter.admit(vkey, "chat/completions", BODY)  # from the lease: holds a leased slot
        assert held is not None and held.held[1].lease is not None
        stop = asyncio.Event()
        runner = asyncio.create_task(limiter.run(stop))
        # Past its time the sweep gives back what is left: free slots freed, only the held one remains.
        await asyncio.to_thread(wait_until, lambda: client.zcard(t_par) == 1, 5)
        limiter.finish(held, None, answered=True)  # its lease ended: the slot is freed in Redis
        await asyncio.to_thread(wait_until, lambda: client.zcard(t_par) == 0, 5)
        stop.set()
        await runner

        def ahead_ms(key: str) -> float:
            seconds, micros = client.time()
            tat = client.get(key)
            return 0.0 if tat is None else float(tat) - (seconds * 1000 + micros / 1000)

        # A new chunk (16 requests at 10 ms, ~16 x 15 tokens at 0.3 ms) moves the TATs well ahead ...
        ticket = await limiter.admit(vkey, "chat/completions", BODY)
        assert ticket is not None
        limiter.finish(ticket, {"prompt_tokens": 5, "completion_tokens": 5}, answered=True)
        assert ahead_ms(k_rpm) > 100 and ahead_ms(t_tpm) > 40, (ahead_ms(k_rpm), ahead_ms(t_tpm))
        # ... and given back when the replica stops, only what was used stays charged (1 request, 10 tokens).
        await limiter.close()
        assert ahead_ms(k_rpm) < 30 and ahead_ms(t_tpm) < 15, (ahead_ms(k_rpm), ahead_ms(t_tpm))
        assert client.zcard(t_par) == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "limits",
    [Limits(rpm=LEASE_MIN_RPM - 1), Limits(tpm=50_000), Limits(max_parallel=10)],
    ids=["rpm-small", "tpm-small-for-the-request", "parallel-small"],
)
def test_small_limits_ask_redis_for_every_request(fresh_redis: RedisServer, limits: Limits) -> None:
    vkey = _key(limits)

    async def scenario() -> None:
        limiter = _limiter(fresh_redis)
        before = _evalsha_calls(fresh_redis)
        for _ in range(5):
            ticket = await limiter.admit(vkey, "chat/completions", {**BODY, "max_tokens": 500})
            assert ticket is not None and all(h.lease is None for h in ticket.held)
            limiter.finish(ticket, None, answered=False)
        await asyncio.sleep(0.05)
        assert _evalsha_calls(fresh_redis) - before >= 5
        await limiter.close()

    asyncio.run(scenario())


def test_the_script_grants_a_share_of_what_is_left_and_never_the_last_tenth(fresh_redis: RedisServer) -> None:
    client = fresh_redis.client()
    admit = client.register_script(ADMIT)
    keys = redis_keys("k", "key-2")

    def call(want: int, div: int) -> Verdict:
        conf = f"1000 -1 -1 10000 {PERIOD} {want} 0 0"
        return Verdict.of_script(admit(keys=list(keys), args=[conf, 0, "", T0, div]))

    first = call(500, 4)  # 999 left after the request: a quarter of it, 249
    assert first.allowed and first.leased == (249, 0, 0) and first.rpm_remaining == 999 - 249
    assert call(10, 4).leased == (10, 0, 0)  # what was asked, when less
    for _ in range(200):
        v = call(1000, 4)
        assert v.rpm_remaining >= 100 or v.leased == (0, 0, 0)  # the last tenth is never leased
    assert call(0, 4).leased == (0, 0, 0)
    assert Verdict.of_script(admit(keys=list(keys), args=[f"1000 -1 -1 10000 {PERIOD}", 0, "", T0])).leased == (
        0,
        0,
        0,
    )  # no asks, no divisor: today's call, nothing leased
