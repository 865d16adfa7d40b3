"""The limiter on a real three-master Redis Cluster when one master is killed (SIGKILL) and started again: every
admission is answered meanwhile (local limits while the cluster is not whole), and the limiter is shared again, on
every node's slots, once the node is back, without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.processes import wait_until
from harness.redis_topologies import ClusterSet, kill
from routeiq_gateway.admission.limit_scripts import redis_keys
from routeiq_gateway.admission.limits import Limiter
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.tenancy.records import Limits, VirtualKey
from routeiq_shared.config_schema import LimitsSettings
from routeiq_shared.redis_settings import RedisSettings

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterSet]:
    made = ClusterSet.start(tmp_path / "cluster")
    yield made
    made.stop()


def _key(ident: str) -> VirtualKey:
    return VirtualKey(ident, None, None, frozenset(), Limits(rpm=2), 0.0, None, False)  # its TAT lives 30 s


def test_a_master_lost_and_back(cluster: ClusterSet) -> None:
    settings = RedisSettings.from_env(cluster.env())
    assert settings is not None
    # One key per node, so each node's slots are used.
    by_node: dict[int, str] = {}
    for i in range(200):
        by_node.setdefault(cluster.node_of(redis_keys("k", f"key-{i}")[0]).port, f"key-{i}")
    assert len(by_node) == 3
    lost = next(i for i, n in enumerate(cluster.nodes) if n.port != cluster.nodes[0].port)
    lost_port = cluster.nodes[lost].port

    async def scenario() -> int:
        limiter = Limiter(settings, lambda: LimitsSettings(redis_timeout_seconds=0.2), GatewayMetrics())
        stop = asyncio.Event()
        prober = asyncio.create_task(limiter.run(stop))
        local = 0
        try:
            for ident in by_node.values():
                ticket = await limiter.admit(_key(ident), "chat/completions", BODY)
                assert ticket is not None and ticket.held[0].shared
            kill(cluster.nodes[lost])
            deadline = time.monotonic() + 10
            while limiter.shared and time.monotonic() < deadline:  # until a call meets the loss
                for ident in by_node.values():
                    ticket = await limiter.admit(_key(ident + "-x"), "chat/completions", BODY)
                    assert ticket is not None
                    limiter.finish(ticket, None, answered=False)
                await asyncio.sleep(0.05)
            assert not limiter.shared
            for ident in by_node.values():  # answered locally meanwhile
                ticket = await limiter.admit(_key(ident + "-y"), "chat/completions", BODY)
                assert ticket is not None and not ticket.held[0].shared
                local += 1
            await asyncio.to_thread(cluster.restart, lost)
            await asyncio.to_thread(wait_until, cluster.whole, 30)
            await asyncio.to_thread(wait_until, lambda: limiter.shared, 15)
            for ident in by_node.values():  # shared on every node again, the restarted one's too (2nd of 2)
                ticket = await limiter.admit(_key(ident), "chat/completions", BODY)
                assert ticket is not None and ticket.held[0].shared
        finally:
            stop.set()
            await prober
            await limiter.close()
        return local

    assert asyncio.run(scenario()) == 3
    restarted = cluster.nodes[lost]
    assert restarted.port == lost_port
    with restarted.client() as conn:  # written there after the restart (the node kept nothing: no persistence)
        tat = conn.get(redis_keys("k", by_node[lost_port])[0])
        assert tat is not None and float(tat) > time.time() * 1000 + 15_000
