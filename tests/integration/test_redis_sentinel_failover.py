"""Redis Sentinel, for real: a master, a replica and three Debian `redis-sentinel` processes. The master is killed
(SIGKILL) under steady load through two gateways' virtual-key limits; Sentinel promotes the replica; the gateways
follow without a restart. No request fails — during the failover window they are admitted on local limits (the
degraded path) — and afterwards the limits are shared again on the new master, the response cache is on it, key
changes are announced on it, and model-sync's download permits (the very client the agent builds) are taken on
it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway
from harness.processes import wait_until
from harness.redis_topologies import SentinelSet, kill
from routeiq_model_sync.cli import make_syncer
from routeiq_model_sync.settings import ModelSyncSettings
from routeiq_shared.lease import LeaseSemaphore, LeaseUnavailable
from test_rate_limits import call, metric, new_key
from test_virtual_keys import ADMIN, MASTER, admin, config, upgraded

DEGRADED = 'gateway_degraded_mode{service="redis"}'


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    made = SentinelSet.start(tmp_path / "sentinel")
    yield made
    made.stop()


def _gateway(
    start_gateway: StartGateway, upstream: FakeUpstream, db: str, root: Path, env: dict[str, str]
) -> GatewayHandle:
    cfg = config(upstream)
    cfg["routeiq"]["limits"] = {"replicas": 2, "redis_timeout_seconds": 0.05}
    cfg["litellm_settings"] = {"cache": True, "cache_params": {"type": "redis", "ttl": 60}}
    return start_gateway(cfg, env={"DATABASE_URL": db, "ADMIN_API_KEYS": ADMIN, **env}, root=root)


def _ask(gw: GatewayHandle, text: str) -> httpx.Response:
    return httpx.post(
        gw.url("/v1/chat/completions"),
        headers={"Authorization": f"Bearer {MASTER}"},
        json={"model": "fast", "messages": [{"role": "user", "content": text}]},
        timeout=10,
        trust_env=False,
    )


class Load:
    """Requests through both gateways from a few threads until stopped: (time sent, status) of each."""

    def __init__(self, gateways: list[GatewayHandle], key: str, threads: int = 6, pause: float = 0.02) -> None:
        self.results: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(gateways[i % len(gateways)], key, pause), daemon=True)
            for i in range(threads)
        ]

    def _run(self, gw: GatewayHandle, key: str, pause: float) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                status = call(gw, key, timeout=10).status_code
            except httpx.HTTPError:
                status = -1
            self.results.append((sent, status))
            time.sleep(pause)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)


def test_master_killed_under_load_the_gateways_follow_the_failover(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    fresh_database: str,
    sentinels: SentinelSet,
    tmp_path: Path,
) -> None:
    db = upgraded(fresh_database)
    a = _gateway(start_gateway, fresh_upstream, db, tmp_path / "a", sentinels.env())
    b = _gateway(start_gateway, fresh_upstream, db, tmp_path / "b", sentinels.env())
    key = new_key(a, rpm_limit=1_000_000)  # limits checked on every request, never reached
    revoked = admin(a, "POST", "/v1/admin/keys", {}).json()
    assert call(b, revoked["key"]).status_code == 200  # b holds it in its cache
    old = sentinels.master_address()
    assert old == (sentinels.master.host, sentinels.master.port)

    with Load([a, b], key) as load:
        time.sleep(2)
        assert metric(a, DEGRADED) == 0.0 and metric(b, DEGRADED) == 0.0
        killed = time.monotonic()
        kill(sentinels.master)
        new = sentinels.wait_failover(old)
        promoted = time.monotonic()
        assert new == (sentinels.replica.host, sentinels.replica.port)
        wait_until(lambda: metric(a, DEGRADED) == 0.0 and metric(b, DEGRADED) == 0.0, timeout=15)
        shared = time.monotonic()
        time.sleep(2)  # steady load on the new master
    before = [s for t, s in load.results if t < killed]
    during = [s for t, s in load.results if killed <= t < shared]
    after = [s for t, s in load.results if t >= shared]
    assert before and during and after
    failed = [s for _, s in load.results if s != 200]
    rate = len(load.results) / (max(t for t, _ in load.results) - min(t for t, _ in load.results))
    print(
        f"\nsentinel failover: {len(load.results)} requests ({rate:.0f}/s), {len(during)} in the window, "
        f"{len(failed)} failed; "
        f"kill -> promoted {promoted - killed:.2f} s, kill -> limits shared again {shared - killed:.2f} s"
    )
    assert failed == []  # the window's requests were admitted locally, none refused or failed

    for gw in (a, b):  # limits and cache each went degraded and came back, once each
        for service in ("redis", "cache"):
            events = [
                r["degraded"]
                for r in gw.json_logs()
                if r.get("event") == "degraded_mode" and r.get("service") == service
            ]
            assert events == [True, False], (service, events)

    # Shared on the new master: replica a alone gets the whole 4 (locally it would get 4 / 2).
    fresh = new_key(a, rpm_limit=4)
    assert [call(a, fresh).status_code for _ in range(5)] == [200] * 4 + [429]
    assert call(b, fresh).status_code == 429
    with sentinels.replica.client() as conn:
        assert conn.execute_command("ROLE")[0] == b"master" and conn.keys("routeiq:*")

    # The response cache back on Redis, the new master: an answer stored by a is found by b.
    cache_degraded = 'gateway_degraded_mode{service="cache"}'
    wait_until(lambda: metric(a, cache_degraded) == 0.0 and metric(b, cache_degraded) == 0.0, timeout=10)
    assert _ask(a, "after the failover").headers["x-routeiq-cache"] == "miss"
    assert _ask(b, "after the failover").headers["x-routeiq-cache"] == "hit"

    # Invalidation re-subscribed on the new master: a revocation on a reaches b at once (its refresh is 30 s).
    wait_until(lambda: any(r.get("event") == "key_invalidation_resubscribed" for r in b.json_logs()), timeout=15)
    t0 = time.monotonic()
    assert admin(a, "PATCH", f"/v1/admin/keys/{revoked['key_id']}", {"revoked": True}).status_code == 200
    wait_until(lambda: call(b, revoked["key"]).status_code == 401, timeout=2.0)
    assert time.monotonic() - t0 < 2.0


def test_model_sync_permits_follow_the_failover(sentinels: SentinelSet, tmp_path: Path) -> None:
    env = {"MODEL_REGISTRY": f"file://{tmp_path}/registry/", **sentinels.env()}
    settings = ModelSyncSettings.from_env(env)
    assert settings.redis is not None and settings.redis.mode == "sentinel"

    async def run() -> float:
        syncer, client = make_syncer(settings)  # the agent's own client, as it builds it
        try:
            semaphore = LeaseSemaphore(client, "model-download:router", permits=1, ttl_ms=5_000)
            lease = await semaphore.acquire(timeout_s=5)
            assert lease is not None and await semaphore.holders() == 1
            await lease.release()
            old = sentinels.master_address()
            assert old is not None
            kill(sentinels.master)
            killed = time.monotonic()
            await asyncio.to_thread(sentinels.wait_failover, old)
            deadline = time.monotonic() + 20
            while True:  # the same client, no restart: it asks the sentinels again
                try:
                    lease = await semaphore.acquire(timeout_s=1)
                    break
                except LeaseUnavailable:
                    assert time.monotonic() < deadline, "no permit from the new master"
                    await asyncio.sleep(0.2)
            assert lease is not None and await semaphore.holders() == 1
            await lease.release()
            return time.monotonic() - killed
        finally:
            await client.aclose()
            await syncer.store.close()

    took = asyncio.run(run())
    with sentinels.replica.client() as conn:
        assert conn.execute_command("ROLE")[0] == b"master"
    print(f"\nmodel-sync permit again {took:.2f} s after the master was killed")
