"""The limits' RESP client on a real three-master Redis Cluster: a pipelined batch split per node and answered in
order; a slot being migrated (ASK: sent once to the importing node behind ASKING) and then moved (MOVED: the map
read again, the command sent where it lives now), with no error reaching the caller."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.redis_topologies import ClusterSet
from routeiq_gateway.admission.limit_scripts import redis_keys
from routeiq_gateway.admission.redis_wire import ClusterWire, pack
from routeiq_shared.redis_settings import RedisSettings

INCR = b"return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterSet]:
    made = ClusterSet.start(tmp_path / "cluster")
    yield made
    made.stop()


def _wire(cluster: ClusterSet) -> ClusterWire:
    settings = RedisSettings.from_env(cluster.env())
    assert settings is not None and settings.mode == "cluster"
    return ClusterWire(settings)


def _incr(key: str, by: int = 1) -> bytes:
    return pack(b"EVAL", INCR, b"1", key.encode(), str(by).encode())


def test_a_batch_is_split_per_node_and_answered_in_order(cluster: ClusterSet) -> None:
    keys = [f"routeiq:{{k:key-{i}}}:rpm" for i in range(60)]

    async def run() -> list[object]:
        wire = _wire(cluster)
        try:
            return await wire.roundtrip([_incr(k, i + 1) for i, k in enumerate(keys)])
        finally:
            wire.close()

    assert asyncio.run(run()) == list(range(1, 61))
    holders = {cluster.node_of(k).port for k in keys}
    assert len(holders) == 3  # every master served part of the one batch
    for i, key in enumerate(keys):
        with cluster.node_of(key).client() as conn:
            assert conn.get(key) == str(i + 1).encode()


def test_a_key_and_its_team_share_a_slot() -> None:
    from redis.crc import key_slot

    slots = {key_slot(k.encode()) for k in (*redis_keys("k", "key-1", "team-a"), *redis_keys("t", "team-a"))}
    assert len(slots) == 1  # one script checks both in one slot
    assert len({key_slot(k.encode()) for k in redis_keys("k", "key-2")}) == 1


def test_ask_during_a_migration_then_moved_after_it(cluster: ClusterSet) -> None:
    first, second = "routeiq:{k:migrating}:rpm", "routeiq:{k:migrating}:tpm"  # one slot
    source = cluster.node_of(first)
    target = next(n for n in cluster.nodes if n is not source)
    with source.client(decode_responses=True) as conn:
        slot = int(conn.execute_command("CLUSTER", "KEYSLOT", first))
        source_id = conn.execute_command("CLUSTER", "MYID")
    with target.client(decode_responses=True) as conn:
        target_id = conn.execute_command("CLUSTER", "MYID")

    async def run() -> None:
        wire = _wire(cluster)
        try:
            assert await wire.roundtrip([_incr("routeiq:{k:other}:rpm")]) == [1]  # the map is read
            with target.client() as conn:
                conn.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            with source.client() as conn:
                conn.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            # The key is not on the source (migrating): -ASK, answered by the target behind ASKING.
            assert await wire.roundtrip([_incr(first, 5)]) == [5]
            with target.client() as conn:
                assert conn.execute_command("ASKING") and conn.get(first) == b"5"
            for node in cluster.nodes:  # the migration ends: the slot is the target's
                with node.client() as conn:
                    conn.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            # The wire's map still says source: -MOVED, then sent to the target, the map read again.
            assert await wire.roundtrip([_incr(second, 7), _incr(first, 1)]) == [7, 6]
            with target.client() as conn:
                assert conn.get(second) == b"7"
            with source.client() as conn:
                assert conn.dbsize() == 0 or conn.get(first) is None
        finally:
            wire.close()

    asyncio.run(run())
