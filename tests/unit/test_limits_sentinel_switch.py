"""The limiter behind real sentinels when the master is switched on purpose (`SENTINEL FAILOVER`, as for an
upgrade): the old master turns replica under the limiter's open connection (READONLY, or a closed socket); every
admission in between is answered (shared or, for a moment, local) and the limiter ends up shared on the new
master without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from harness.processes import wait_until
from harness.redis_topologies import MASTER_NAME, SentinelSet
from routeiq_gateway.admission.limit_scripts import redis_keys
from routeiq_gateway.admission.limits import Limiter
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.tenancy.records import Limits, VirtualKey
from routeiq_shared.config_schema import LimitsSettings
from routeiq_shared.redis_settings import RedisSettings

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10}


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    made = SentinelSet.start(tmp_path / "sentinel")
    yield made
    made.stop()


def test_a_planned_failover_is_followed(sentinels: SentinelSet) -> None:
    settings = RedisSettings.from_env(sentinels.env())
    assert settings is not None
    vkey = VirtualKey("key-1", None, None, frozenset(), Limits(rpm=1_000_000, max_parallel=100), 0.0, None, False)
    after = VirtualKey("key-2", None, None, frozenset(), Limits(rpm=2), 0.0, None, False)
    k_rpm, _, _ = redis_keys("k", "key-2")  # 30 s between its requests: its TAT lives that long
    old = sentinels.master_address()
    assert old is not None

    async def scenario() -> tuple[int, int]:
        limiter = Limiter(settings, lambda: LimitsSettings(redis_timeout_seconds=0.2), GatewayMetrics())
        stop = asyncio.Event()
        prober = asyncio.create_task(limiter.run(stop))
        answered = local = 0
        try:
            ticket = await limiter.admit(vkey, "chat/completions", BODY)
            assert ticket is not None and limiter.shared
            limiter.finish(ticket, None, answered=True)
            with redis.Redis("127.0.0.1", settings.sentinels[0][1], socket_timeout=2) as sentinel:
                assert sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
            switched = asyncio.create_task(asyncio.to_thread(sentinels.wait_failover, old))
            deadline = time.monotonic() + 30
            while not (switched.done() and limiter.shared):
                assert time.monotonic() < deadline, "the limiter did not come back shared"
                ticket = await limiter.admit(vkey, "chat/completions", BODY)  # never raises: shared or local
                assert ticket is not None
                answered += 1
                local += not ticket.held[0].shared
                limiter.finish(ticket, None, answered=True)
                await asyncio.sleep(0.01)
            new = await switched
            assert new != old
            # Until the old master is a replica too (the sentinels reconfigure it after the promotion) and the
            # limiter writes to the new one: no restart, no error to any caller meanwhile.
            await asyncio.to_thread(wait_until, lambda: _role(old) == b"slave", 15)
            await asyncio.sleep(1.5)  # one follow() of the limiter at least
            ticket = await limiter.admit(after, "chat/completions", BODY)
            assert ticket is not None and ticket.held[0].shared
            limiter.finish(ticket, None, answered=True)
            assert _role(new) == b"master"
            with redis.Redis(new[0], new[1], socket_timeout=2) as master:
                assert master.exists(k_rpm)  # written on the new master, not on the old one
        finally:
            stop.set()
            await prober
            await limiter.close()
        return answered, local

    answered, local = asyncio.run(scenario())
    assert answered > 0
    print(f"\nplanned failover: {answered} admissions during it, {local} of them on local limits")


def _role(address: tuple[str, int]) -> bytes:
    with redis.Redis(address[0], address[1], socket_timeout=2) as conn:
        return bytes(conn.execute_command("ROLE")[0])
