"""Redis configured but away, in each mode (nothing listens on the URL's, the sentinels' or the seed node's port):
every user falls back as documented instead of raising what its mode's client raises (redis-py's cluster client
raises RedisClusterException, which is not a RedisError)."""

from __future__ import annotations

import asyncio
import time

import pytest
from harness.processes import free_port
from routeiq_gateway.admission.limits import Limiter
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.tenancy.invalidation import Invalidation
from routeiq_gateway.tenancy.records import Limits, VirtualKey
from routeiq_shared.config_schema import LimitsSettings
from routeiq_shared.lease import LeaseSemaphore, LeaseUnavailable
from routeiq_shared.redis_settings import RedisSettings

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10}


def _env(mode: str) -> dict[str, str]:
    port = free_port("127.0.0.1")  # nothing listens there
    if mode == "sentinel":
        return {"REDIS_SENTINELS": f"127.0.0.1:{port}", "REDIS_SENTINEL_MASTER": "m"}
    env = {"REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    return {**env, "REDIS_CLUSTER": "1"} if mode == "cluster" else env


@pytest.mark.parametrize("mode", ["standalone", "sentinel", "cluster"])
def test_every_user_falls_back(mode: str) -> None:
    settings = RedisSettings.from_env(_env(mode))
    assert settings is not None and settings.mode == mode

    async def scenario() -> None:
        client = settings.client(socket_connect_timeout=1, socket_timeout=1)
        t0 = time.monotonic()
        with pytest.raises(LeaseUnavailable):  # model-sync then downloads after its random delay
            await LeaseSemaphore(client, "model-download:x").try_acquire()
        assert time.monotonic() - t0 < 5
        await client.aclose()

        changed: list[int] = []
        invalidation = Invalidation(settings, lambda: changed.append(1), timeout=1)
        await invalidation.announce("reload")  # logged, not raised: the others reload on their interval
        stop = asyncio.Event()
        runner = asyncio.create_task(invalidation.run(stop))
        await asyncio.sleep(1.5)
        assert not runner.done()  # still trying, not dead of an exception
        stop.set()
        await asyncio.wait_for(runner, 5)
        await invalidation.close()

        limiter = Limiter(settings, lambda: LimitsSettings(redis_timeout_seconds=0.2), GatewayMetrics())
        vkey = VirtualKey("key-1", None, None, frozenset(), Limits(rpm=10), 0.0, None, False)
        ticket = await limiter.admit(vkey, "chat/completions", BODY)
        assert ticket is not None and not ticket.held[0].shared and not limiter.shared
        await limiter.close()

    asyncio.run(scenario())
