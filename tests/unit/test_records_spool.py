"""The records spool and its shipper: batches sealed by count and age, torn tails cut at start, a bounded spool,
a volume that refuses writes, and a store that is down (the segments stay and are shipped once it is back)."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path

import orjson
import pytest
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.records.recorder import Recorder
from routeiq_gateway.records.shipper import Shipper
from routeiq_gateway.records.spool import Spool
from routeiq_shared.config_schema import RecordsSettings
from routeiq_shared.objectstore import FileStore, StoreUnavailable, parse_store_uri
from routeiq_shared.routing_records import RecordSet, encode, feedback_record


def _rec(i: int) -> dict:
    return feedback_record(f"rq{i:06d}", 0.5, 1_780_000_000.0)  # one length for every record


def _sample(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_batch_is_sealed_when_full_and_each_record_is_whole(tmp_path: Path):
    spool = Spool(tmp_path / "spool", 10 * 1024 * 1024)
    spool.recover()
    recorder = Recorder(spool, GatewayMetrics())
    settings = RecordsSettings(enabled=True, batch_records=3)
    for i in range(7):
        assert recorder.write(_rec(i), settings)
    ready = spool.ready()
    assert [len(s.path.read_bytes().splitlines()) for s in ready] == [3, 3]  # the 7th is still open
    assert spool.pending == 1
    spool.seal()
    lines = [orjson.loads(line) for s in spool.ready() for line in s.path.read_bytes().splitlines()]
    assert [r["request_id"] for r in lines] == [f"rq{i:06d}" for i in range(7)]


def test_a_segment_left_open_by_a_dead_process_is_sealed_without_its_torn_line(tmp_path: Path):
    directory = tmp_path / "spool"
    directory.mkdir()
    left = directory / "seg-1780000000000-99-1.open.jsonl"
    left.write_bytes(encode(_rec(1)) + encode(_rec(2))[:25])
    (directory / "seg-1780000001000-99-2.open.jsonl").write_bytes(b"")  # opened, nothing written
    spool = Spool(directory, 10 * 1024 * 1024)
    assert spool.recover() == 1
    (segment,) = spool.ready()
    assert segment.path.read_bytes() == encode(_rec(1))
    assert segment.first_time == 1_780_000_000.0
    assert list(directory.glob("*.open.jsonl")) == []


def test_a_full_spool_drops_new_records_and_counts_them(tmp_path: Path):
    line = encode(_rec(0))
    spool = Spool(tmp_path / "spool", 1024 * 1024)
    spool.recover()
    metrics = GatewayMetrics()
    recorder = Recorder(spool, metrics)
    settings = RecordsSettings(enabled=True, spool_max_bytes=1024 * 1024, batch_records=100)
    kept = sum(recorder.write(_rec(i), settings) for i in range(1024 * 1024 // len(line) + 50))
    assert kept == 1024 * 1024 // len(line)
    assert _sample(metrics, "routeiq_records_dropped_total", reason="spool_full") == 50
    assert spool.size <= 1024 * 1024
    assert _sample(metrics, "routeiq_records_spool_bytes") == spool.size


def test_a_volume_that_refuses_a_write_loses_that_record_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    spool = Spool(tmp_path / "spool", 10 * 1024 * 1024)
    spool.recover()
    metrics = GatewayMetrics()
    recorder = Recorder(spool, metrics)
    settings = RecordsSettings(enabled=True)
    assert recorder.write(_rec(1), settings)
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        real_write(fd, data[:10])  # part of the line reached the disk before it filled
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    assert not recorder.write(_rec(2), settings)
    monkeypatch.setattr(os, "write", real_write)
    assert recorder.write(_rec(3), settings)  # the disk has room again
    spool.seal()
    records = RecordSet()
    for segment in spool.ready():
        records.add_lines(segment.path.name, segment.path.read_bytes())
    assert records.bad == []  # the torn part was cut off
    assert _sample(metrics, "routeiq_records_dropped_total", reason="write_error") == 1
    assert _sample(metrics, "routeiq_records_total", type="feedback") == 2


class _DownStore:
    """A store that refuses every put until `up` (unit test of the shipper's retry; the S3 outage itself is
    tested against moto in tests/integration/test_routing_records_flow.py)."""

    def __init__(self, inner: FileStore) -> None:
        self.inner = inner
        self.up = False
        self.location = inner.location

    async def put(self, name: str, data: bytes, *, metadata: dict[str, str] | None = None) -> str:
        if not self.up:
            raise StoreUnavailable(f"{name}: connection refused")
        return await self.inner.put(name, data, metadata=metadata)

    async def close(self) -> None:
        await self.inner.close()


def test_while_the_store_is_down_segments_stay_and_are_shipped_once_it_is_back(tmp_path: Path):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    uri = f"file://{store_dir}/"
    store = _DownStore(FileStore(parse_store_uri(uri)))
    spool = Spool(tmp_path / "spool", 10 * 1024 * 1024)
    spool.recover()
    metrics = GatewayMetrics()
    settings = RecordsSettings(enabled=True, store=uri, batch_records=2)
    recorder = Recorder(spool, metrics)
    shipper = Shipper(spool, metrics, lambda: settings, store_factory=lambda _: store)  # type: ignore[arg-type,return-value]

    async def scenario() -> None:
        for i in range(4):
            recorder.write(_rec(i), settings)
        assert await shipper.ship_ready(uri) == 0
        assert len(spool.ready()) == 2
        assert _sample(metrics, "routeiq_records_ship_failures_total", reason="store_unavailable") == 1
        store.up = True
        assert await shipper.ship_ready(uri) == 2
        assert spool.ready() == [] and spool.size == 0

    today = tuple(time.strftime("%Y/%m/%d", time.gmtime()).split("/"))  # segments are dated when opened
    asyncio.run(scenario())
    shipped = sorted(store_dir.rglob("*.jsonl"))
    assert [p.relative_to(store_dir).parts[:4] for p in shipped] == [("records", *today)] * 2
    ids = [orjson.loads(line)["request_id"] for p in shipped for line in p.read_bytes().splitlines()]
    assert sorted(ids) == [f"rq{i:06d}" for i in range(4)]
    assert _sample(metrics, "routeiq_records_shipped_objects_total") == 2
