"""The limiter against a redis-server that stops answering (SIGSTOP): the request is not held past the timeout,
goes local, the metric flips; when Redis answers after all, what the late admission took is given back. And a
Redis that lost its scripts (restarted) gets them again without the caller noticing."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from harness.processes import wait_until
from harness.redis_server import RedisServer
from routeiq_gateway.admission.limit_scripts import redis_keys
from routeiq_gateway.admission.limits import Limiter
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.tenancy.records import Limits, VirtualKey
from routeiq_shared.config_schema import LimitsSettings
from routeiq_shared.redis_settings import RedisSettings

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 100}


def _key(limits: Limits) -> VirtualKey:
    return VirtualKey("key-1", None, None, frozenset(), limits, 0.0, None, False)


def _degraded(metrics: GatewayMetrics) -> float:
    value = metrics.registry.get_sample_value("gateway_degraded_mode", {"service": "redis"})
    assert value is not None
    return value


def test_a_hung_redis_costs_one_timeout_and_the_late_admission_is_given_back(own_redis: RedisServer) -> None:
    metrics = GatewayMetrics()
    vkey = _key(Limits(tpm=10_000, max_parallel=5))
    _, k_tpm, k_par = redis_keys("k", "key-1")
    client = own_redis.client()

    async def scenario() -> None:
        limiter = Limiter(
            RedisSettings.from_env({"REDIS_URL": own_redis.url}),
            lambda: LimitsSettings(redis_timeout_seconds=0.1),
            metrics,
        )
        first = await limiter.admit(vkey, "chat/completions", BODY)  # shared: one slot taken in Redis
        assert first is not None and limiter.shared and client.zcard(k_par) == 1
        limiter.finish(first, {"prompt_tokens": 2, "completion_tokens": 3}, answered=True)
        await asyncio.to_thread(wait_until, lambda: client.zcard(k_par) == 0, 5)

        own_redis.process.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        held = await limiter.admit(vkey, "chat/completions", BODY)
        assert time.monotonic() - t0 < 0.5  # the timeout (0.1 s), not a hang
        assert held is not None and not limiter.shared and _degraded(metrics) == 1.0
        t0 = time.monotonic()
        assert await limiter.admit(vkey, "chat/completions", BODY) is not None
        assert time.monotonic() - t0 < 0.05  # degraded: Redis is not even tried
        own_redis.process.send_signal(signal.SIGCONT)

        # The admission sent before the stop ran when Redis woke up; nobody waited for it: given back.
        await asyncio.to_thread(wait_until, lambda: client.zcard(k_par) == 0, 5)
        # Its ~102 tokens (6 ms each at 10,000 a minute) refunded too: the TAT is not ~612 ms ahead.
        tat = client.get(k_tpm)
        assert tat is None or float(tat) < time.time() * 1000 + 300
        limiter.finish(held, None, answered=False)  # held locally: released locally
        stop = asyncio.Event()
        runner = asyncio.create_task(limiter.run(stop))
        await asyncio.to_thread(wait_until, lambda: limiter.shared, 5)  # the probe brings shared limits back
        assert _degraded(metrics) == 0.0
        stop.set()
        await runner
        await limiter.close()

    asyncio.run(scenario())


def test_scripts_loaded_again_when_redis_lost_them(own_redis: RedisServer) -> None:
    metrics = GatewayMetrics()
    vkey = _key(Limits(rpm=3))

    async def scenario() -> None:
        limiter = Limiter(
            RedisSettings.from_env({"REDIS_URL": own_redis.url}),
            lambda: LimitsSettings(redis_timeout_seconds=1.0),
            metrics,
        )
        assert await limiter.admit(vkey, "chat/completions", BODY) is not None
        own_redis.client().script_flush()  # as after a restart: Redis knows no script
        tickets = [await limiter.admit(vkey, "chat/completions", BODY) for _ in range(2)]
        assert all(t is not None for t in tickets) and limiter.shared
        with pytest.raises(GatewayError) as refused:
            await limiter.admit(vkey, "chat/completions", BODY)
        assert refused.value.code == "rate_limit_exceeded"
        await limiter.close()

    asyncio.run(scenario())
