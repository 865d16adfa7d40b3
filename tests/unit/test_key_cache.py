"""The key cache's rules, with the store faked (tests/integration/test_virtual_keys.py runs the real PostgreSQL):
one lookup per unknown key however many requests present it, a negative cache, a cap on lookups, staleness,
and degraded mode with its metric and one log line each way."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.tenancy import key_cache as kc
from routeiq_gateway.tenancy.database import DatabaseSettings
from routeiq_gateway.tenancy.records import Limits, Team, VirtualKey, key_hash
from routeiq_shared.config_schema import KeysSettings

KNOWN = key_hash(b"sk-riq-known")
NEW = key_hash(b"sk-riq-new")


def vkey(key_id: str) -> VirtualKey:
    team = Team("t", None, frozenset(), Limits(rpm=10), 0.0)
    return VirtualKey(key_id, None, team, frozenset(), Limits(tpm=100), 0.0, None, False)


class FakeStore:
    def __init__(self) -> None:
        self.keys: dict[bytes, VirtualKey] = {KNOWN: vkey("known")}
        self.down = False
        self.finds = 0
        self.find_delay = 0.0
        self.loads: list[bool] = []  # primary? for each full load
        self.loaded = asyncio.Event()

    async def load_all(self, db: Any, primary: bool = False) -> tuple[dict[str, Team], dict[bytes, VirtualKey]]:
        self.loads.append(primary)
        self.loaded.set()
        if self.down:
            raise psycopg.OperationalError("connection refused")
        return {}, dict(self.keys)

    async def find_key(self, db: Any, digest: bytes) -> VirtualKey | None:
        self.finds += 1
        await asyncio.sleep(self.find_delay)
        if self.down:
            raise psycopg.OperationalError("connection refused")
        return self.keys.get(digest)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    store = FakeStore()
    monkeypatch.setattr(kc.store, "load_all", store.load_all)
    monkeypatch.setattr(kc.store, "find_key", store.find_key)
    return store


def cache(settings: KeysSettings | None = None) -> tuple[kc.KeyCache, Clock, GatewayMetrics]:
    clock, metrics = Clock(), GatewayMetrics()
    s = settings or KeysSettings()
    db = SimpleNamespace(settings=DatabaseSettings("postgresql://u:pw@h/db"))  # the store is faked: no pool
    return kc.KeyCache(db, lambda: s, metrics, clock), clock, metrics  # type: ignore[arg-type]


def degraded_gauge(metrics: GatewayMetrics) -> float:
    return metrics.degraded_mode.labels("postgres")._value.get()  # type: ignore[attr-defined,no-any-return]


def test_known_keys_come_from_memory_with_their_limits(fake: FakeStore) -> None:
    async def run() -> None:
        c, _, _ = cache()
        assert await c.refresh()
        key = await c.resolve(KNOWN)
        assert key is not None and key.limits.tpm == 100 and key.team is not None and key.team.limits.rpm == 10
        assert fake.finds == 0

    asyncio.run(run())


def test_a_new_key_is_looked_up_once_for_all_requests_presenting_it(fake: FakeStore) -> None:
    async def run() -> None:
        c, _, _ = cache()
        await c.refresh()
        fake.keys[NEW] = vkey("new")  # created on another replica after our refresh
        fake.find_delay = 0.05
        found = await asyncio.gather(*(c.resolve(NEW) for _ in range(50)))
        assert all(k is not None and k.id == "new" for k in found)
        assert fake.finds == 1
        assert c.cached(NEW) is not None  # and cached since

    asyncio.run(run())


def test_an_unknown_key_is_not_looked_up_again_until_its_ttl(fake: FakeStore) -> None:
    async def run() -> None:
        c, clock, _ = cache(KeysSettings(negative_ttl_seconds=30))
        await c.refresh()
        assert await c.resolve(NEW) is None
        assert await c.resolve(NEW) is None
        assert fake.finds == 1
        clock.now += 31
        assert await c.resolve(NEW) is None
        assert fake.finds == 2

    asyncio.run(run())


def test_lookups_are_capped_per_second(fake: FakeStore) -> None:
    async def run() -> None:
        c, clock, metrics = cache(KeysSettings(lookups_per_second=5))
        await c.refresh()
        for i in range(20):
            assert await c.resolve(key_hash(f"sk-riq-guess-{i}".encode())) is None
        assert fake.finds == 5
        assert metrics.key_lookups.labels("throttled")._value.get() == 15  # type: ignore[attr-defined]
        clock.now += 1
        await c.resolve(key_hash(b"sk-riq-later"))
        assert fake.finds == 6

    asyncio.run(run())


def test_a_slow_lookup_answers_no_within_its_timeout(fake: FakeStore) -> None:
    async def run() -> None:
        c, _, _ = cache(KeysSettings(lookup_timeout_seconds=0.05))
        await c.refresh()
        fake.keys[NEW] = vkey("new")
        fake.find_delay = 1.0
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await c.resolve(NEW) is None
        assert loop.time() - t0 < 0.5

    asyncio.run(run())


def test_degraded_serves_known_refuses_new_then_recovers(fake: FakeStore, caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        c, clock, metrics = cache(KeysSettings(max_stale_seconds=3600))
        await c.refresh()
        fake.down = True
        fake.keys[NEW] = vkey("new")
        with caplog.at_level(logging.INFO, logger="routeiq.gateway"):
            assert not await c.refresh()
            assert not await c.refresh()  # still down: no second line
            assert degraded_gauge(metrics) == 1
            clock.now += 3000
            assert await c.resolve(KNOWN) is not None  # within max_stale
            assert await c.resolve(NEW) is None and fake.finds == 0  # never seen: refused, no lookup tried
            clock.now += 1000
            with pytest.raises(GatewayError) as stale:
                await c.resolve(KNOWN)
            assert stale.value.status == 503
            fake.down = False
            assert await c.refresh()
            assert degraded_gauge(metrics) == 0
            assert await c.resolve(NEW) is not None
        lines = [r for r in caplog.records if getattr(r, "event", None) == "degraded_mode"]
        assert [r.degraded for r in lines] == [True, False]  # type: ignore[attr-defined]

    asyncio.run(run())


def test_drop_refuses_a_key_at_once(fake: FakeStore) -> None:
    async def run() -> None:
        c, _, _ = cache()
        await c.refresh()
        del fake.keys[KNOWN]
        c.drop({"known"})
        assert c.cached(KNOWN) is None
        assert await c.resolve(KNOWN) is None  # the lookup finds it gone

    asyncio.run(run())


def test_the_reload_after_a_change_reads_the_primary(fake: FakeStore) -> None:
    async def run() -> None:
        c, _, _ = cache(KeysSettings(refresh_seconds=0.05))
        stop = asyncio.Event()
        task = asyncio.create_task(c.run(stop))
        await asyncio.wait_for(fake.loaded.wait(), 5)  # a periodic reload: the replica
        c.invalidate()
        while True not in fake.loads:
            fake.loaded.clear()
            await asyncio.wait_for(fake.loaded.wait(), 5)
        stop.set()
        await task
        assert fake.loads[0] is False

    asyncio.run(run())
