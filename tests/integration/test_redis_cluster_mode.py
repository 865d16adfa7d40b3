"""A Redis Cluster of three masters (`redis-server --cluster-enabled yes`, `redis-cli --cluster create`) behind two
gateways: rpm and team limits enforced across both replicas with each scope's script on its slot's node, key
changes announced through the cluster's pub/sub, the response cache shared through it, and model-sync's download
permits spread over its slots."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway
from harness.processes import wait_until
from harness.redis_topologies import ClusterSet
from routeiq_model_sync.cli import make_syncer
from routeiq_model_sync.settings import ModelSyncSettings
from routeiq_shared.lease import LeaseSemaphore
from test_rate_limits import assert_rate_limited, call, metric, new_key
from test_virtual_keys import ADMIN, MASTER, admin, config, upgraded

DEGRADED = 'gateway_degraded_mode{service="redis"}'


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterSet]:
    made = ClusterSet.start(tmp_path / "cluster")
    yield made
    made.stop()


def _gateway(
    start_gateway: StartGateway, upstream: FakeUpstream, db: str, root: Path, cluster: ClusterSet
) -> GatewayHandle:
    cfg = config(upstream)
    cfg["routeiq"]["limits"] = {"replicas": 2}
    cfg["litellm_settings"] = {"cache": True, "cache_params": {"type": "redis", "ttl": 60}}
    return start_gateway(cfg, env={"DATABASE_URL": db, "ADMIN_API_KEYS": ADMIN, **cluster.env()}, root=root)


def _ask(gw: GatewayHandle, text: str) -> httpx.Response:
    return httpx.post(
        gw.url("/v1/chat/completions"),
        headers={"Authorization": f"Bearer {MASTER}"},
        json={"model": "fast", "messages": [{"role": "user", "content": text}]},
        timeout=10,
        trust_env=False,
    )


def test_limits_invalidation_and_cache_on_a_cluster(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    fresh_database: str,
    cluster: ClusterSet,
    tmp_path: Path,
) -> None:
    db = upgraded(fresh_database)
    a = _gateway(start_gateway, fresh_upstream, db, tmp_path / "a", cluster)
    b = _gateway(start_gateway, fresh_upstream, db, tmp_path / "b", cluster)
    limit = 7
    keys = [new_key(a, rpm_limit=limit) for _ in range(6)]  # six scopes: over the three nodes' slots
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        for key in keys:
            replies = list(pool.map(lambda gw, k=key: call(gw, k), itertools.islice(itertools.cycle([a, b]), 12)))
            assert sum(r.status_code == 200 for r in replies) == limit, [r.status_code for r in replies]
            for refused in (r for r in replies if r.status_code != 200):
                assert_rate_limited(refused)
    assert metric(a, DEGRADED) == 0.0 and metric(b, DEGRADED) == 0.0  # shared all along, never local
    holding = [n.port for n in cluster.nodes if n.client().keys("routeiq:*")]
    assert len(holding) >= 2, holding  # the scopes' scripts ran on more than one node

    # A key of a team: one script takes both scopes on the team's slot; the team's rpm (3) binds first.
    assert admin(a, "POST", "/v1/admin/teams", {"id": "team-c", "rpm_limit": 3}).status_code in (200, 201)
    member = admin(a, "POST", "/v1/admin/keys", {"team_id": "team-c", "rpm_limit": 10}).json()["key"]
    statuses = [call(gw, member).status_code for gw in (a, b, a, b, a)]
    assert statuses == [200, 200, 200, 429, 429], statuses

    # Key changes through the cluster's pub/sub (b's refresh is 30 s).
    made = admin(a, "POST", "/v1/admin/keys", {}).json()
    assert call(b, made["key"]).status_code == 200
    t0 = time.monotonic()
    assert admin(a, "PATCH", f"/v1/admin/keys/{made['key_id']}", {"revoked": True}).status_code == 200
    wait_until(lambda: call(b, made["key"]).status_code == 401, timeout=1.0)
    assert time.monotonic() - t0 < 1.0

    # The response cache on the cluster: an answer stored by a is found by b (each has its own LRU otherwise).
    for i in range(6):  # entries over several slots
        assert _ask(a, f"cluster cache {i}").headers["x-routeiq-cache"] == "miss"
        assert _ask(b, f"cluster cache {i}").headers["x-routeiq-cache"] == "hit"
    cache_degraded = 'gateway_degraded_mode{service="cache"}'
    assert metric(a, cache_degraded) == 0.0 and metric(b, cache_degraded) == 0.0


def test_model_sync_permits_on_a_cluster(cluster: ClusterSet, tmp_path: Path) -> None:
    settings = ModelSyncSettings.from_env({"MODEL_REGISTRY": f"file://{tmp_path}/registry/", **cluster.env()})
    assert settings.redis is not None and settings.redis.mode == "cluster"

    async def run() -> None:
        syncer, client = make_syncer(settings)  # the agent's own client
        try:
            semaphore = LeaseSemaphore(client, "model-download:router", permits=3, ttl_ms=5_000)
            leases = [await semaphore.try_acquire() for _ in range(3)]
            assert all(leases) and await semaphore.holders() == 3
            assert await semaphore.try_acquire() is None  # the fleet-wide bound holds across slots
            for lease in leases:
                assert lease is not None and await lease.release()
            assert await semaphore.holders() == 0
        finally:
            await client.aclose()
            await syncer.store.close()

    asyncio.run(run())
    assert len({cluster.node_of(f"routeiq:lease:model-download:router:{i}").port for i in range(3)}) >= 2
