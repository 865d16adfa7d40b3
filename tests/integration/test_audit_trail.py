"""The audit trail against moto's S3: records reach `audit/YYYY/MM/DD/` encrypted (and locked when configured),
survive an outage and are replayed with no duplicates, and a crash between upload and spool delete writes no second
object or version. The pipeline is the gateway's own (audit/, records/spool.py, records/shipper.py) in-process;
the gateway process end to end is in test_audit_gateway.py."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness.config_sync_process import start_moto_at
from harness.moto_s3 import MotoS3
from harness.processes import free_port
from routeiq_gateway.audit.metrics import AuditMetrics
from routeiq_gateway.audit.record import SCHEMA_VERSION, Actor
from routeiq_gateway.audit.shipping import AuditTarget
from routeiq_gateway.audit.trail import AuditTrail, SpoolSink, pending_records
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.records.shipper import Shipper
from routeiq_gateway.records.spool import Spool, open_spool
from routeiq_shared.config_schema import AuditSettings
from routeiq_shared.objectstore import PutOptions, open_store

pytestmark = pytest.mark.integration

ALICE = Actor("alice", "oidc")


class Pipeline:
    """One gateway process's audit trail: spool (fsync), trail, shipper — on `spool_dir`."""

    def __init__(self, spool_dir: Path, settings: AuditSettings, endpoint: str) -> None:
        self.settings = settings
        self.spool: Spool = open_spool(spool_dir, settings.spool_max_bytes, fsync=True, what="audit record")
        self.metrics = GatewayMetrics()
        self.audit_metrics = AuditMetrics(self.metrics.registry)
        self.audit_metrics.pending.set_function(lambda: pending_records(self.spool))
        self.trail = AuditTrail(lambda: settings, self.audit_metrics, [SpoolSink(self.spool, lambda: settings)])
        self.shipper = Shipper(
            self.spool,
            self.metrics,
            lambda: settings,
            lambda uri: open_store(uri, endpoint),
            target=AuditTarget(lambda: settings),
            counters=self.audit_metrics.ship_counters(),
        )

    def record(self, n: int, action: str = "config.reload") -> list[str]:
        ids = []
        for i in range(n):
            rec = self.trail.record(ALICE, action, "config", result="reloaded", before_digest=f"v{i}", after_digest="x")
            assert rec is not None
            ids.append(rec["id"])
        return ids

    def ship(self) -> int:
        assert self.settings.store is not None

        async def go() -> int:
            try:
                return await self.shipper.ship_ready(self.settings.store or "")
            finally:
                await self.shipper.close()

        self.spool.seal()
        return asyncio.run(go())

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture(autouse=True)
def _aws_env(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in moto_s3.env().items():
        if name.startswith("AWS_") and "ENDPOINT" not in name:
            monkeypatch.setenv(name, value)


def objects(s3: Any, bucket: str, prefix: str = "") -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def ids_in(bodies: dict[str, bytes]) -> list[str]:
    return [orjson.loads(line)["id"] for body in bodies.values() for line in body.splitlines()]


def test_records_reach_s3_encrypted_locked_dated_and_whole(moto_s3: MotoS3, tmp_path: Path) -> None:
    s3 = moto_s3.client()
    bucket = f"audit-lock-{tmp_path.name[-20:].lower().replace('_', '-')}"[:63]
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    settings = AuditSettings(store=f"s3://{bucket}/fleet/", retention_days=2, retention_mode="GOVERNANCE")
    p = Pipeline(tmp_path / "spool", settings, moto_s3.endpoint_url)
    ids = p.record(3)
    assert p.sample("routeiq_audit_records_pending") == 3
    assert p.ship() == 1
    shipped = objects(s3, bucket)
    assert len(shipped) == 1
    key = next(iter(shipped))
    today = time.strftime("%Y/%m/%d", time.gmtime())
    assert key.startswith(f"fleet/audit/{today}/audit-") and key.endswith(".jsonl")
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ObjectLockMode"] == "GOVERNANCE"
    until = head["ObjectLockRetainUntilDate"]
    assert datetime.now(UTC) + timedelta(days=1, hours=23) < until < datetime.now(UTC) + timedelta(days=2, hours=1)
    lines = [orjson.loads(line) for line in shipped[key].splitlines()]
    assert [r["id"] for r in lines] == ids
    first = lines[0]
    assert set(first) == {
        "schema_version", "id", "at", "actor", "action", "target", "before_digest", "after_digest", "result",
        "trace_id",
    }  # fmt: skip
    assert first["schema_version"] == SCHEMA_VERSION and first["actor"] == {"subject": "alice", "how": "oidc"}
    assert first["action"] == "config.reload" and first["result"] == "reloaded" and first["before_digest"] == "v0"
    assert p.sample("routeiq_audit_records_total", action="config.reload") == 3
    assert p.sample("routeiq_audit_records_shipped_total") == 3
    assert p.sample("routeiq_audit_shipped_objects_total") == 1
    assert p.sample("routeiq_audit_records_pending") == 0


def test_s3_outage_records_are_kept_and_replayed_once(tmp_path: Path) -> None:
    port = free_port()
    moto = start_moto_at(tmp_path / "moto", port)
    try:
        bucket = "audit-outage"
        moto.client().create_bucket(Bucket=bucket)
        settings = AuditSettings(store=f"s3://{bucket}/", batch_records=2)
        p = Pipeline(tmp_path / "spool", settings, moto.endpoint_url)
        before = p.record(2)
        assert p.ship() == 1
        assert sorted(ids_in(objects(moto.client(), bucket))) == sorted(before)

        moto.stop()
        during = p.record(5)  # sealed every 2 records (batch_records) and at ship time: 3 segments
        assert p.ship() == 0
        assert p.sample("routeiq_audit_ship_failures_total", reason="store_unavailable") == 1
        assert len(p.spool.ready()) == 3
        assert p.sample("routeiq_audit_records_pending") == 5

        moto = start_moto_at(tmp_path / "moto", port)  # back, empty (moto keeps no state across restarts)
        moto.client().create_bucket(Bucket=bucket)
        assert p.ship() == 3
        assert sorted(ids_in(objects(moto.client(), bucket))) == sorted(during)  # all of them, each once
        assert p.spool.ready() == [] and p.sample("routeiq_audit_records_pending") == 0
        assert p.ship() == 0  # nothing left to ship twice
        assert sorted(ids_in(objects(moto.client(), bucket))) == sorted(during)
    finally:
        moto.stop()


def test_crash_between_upload_and_spool_delete_writes_no_duplicate(moto_s3: MotoS3, tmp_path: Path) -> None:
    s3 = moto_s3.client()
    bucket = f"audit-crash-{tmp_path.name[-20:].lower().replace('_', '-')}"[:63]
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)  # versioned: a second PUT would be kept
    settings = AuditSettings(store=f"s3://{bucket}/")
    spool_dir = tmp_path / "spool"
    first = Pipeline(spool_dir, settings, moto_s3.endpoint_url)
    ids = first.record(4)
    first.spool.seal()
    (segment,) = first.spool.ready()
    kept = tmp_path / "kept"
    shutil.copy2(segment.path, kept)
    assert first.ship() == 1
    # The crash: the object is in S3, but the process died before the segment was deleted
    shutil.copy2(kept, segment.path)

    restarted = Pipeline(spool_dir, settings, moto_s3.endpoint_url)  # a new process on the same volume
    assert len(restarted.spool.ready()) == 1
    assert restarted.ship() == 1  # the segment is done with...
    assert restarted.spool.ready() == []
    shipped = objects(s3, bucket)
    assert len(shipped) == 1 and ids_in(shipped) == ids  # ...and S3 has it once
    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert [v["Key"] for v in versions] == list(shipped)  # one version: nothing was written again


def test_a_segment_left_open_by_a_killed_process_is_shipped_at_the_next_start(moto_s3: MotoS3, tmp_path: Path) -> None:
    s3 = moto_s3.client()
    bucket = moto_s3.new_bucket("audit-open")
    settings = AuditSettings(store=f"s3://{bucket}/")
    first = Pipeline(tmp_path / "spool", settings, moto_s3.endpoint_url)
    ids = first.record(2)  # appended with fsync, never sealed: the process "dies" here
    restarted = Pipeline(tmp_path / "spool", settings, moto_s3.endpoint_url)
    assert restarted.ship() == 1
    assert ids_in(objects(s3, bucket)) == ids


def test_disabled_trail_writes_nothing(moto_s3: MotoS3, tmp_path: Path) -> None:
    p = Pipeline(tmp_path / "spool", AuditSettings(enabled=False), moto_s3.endpoint_url)
    assert p.trail.record(ALICE, "config.read", "config", result="ok") is None
    assert p.spool.size == 0 and p.sample("routeiq_audit_records_total", action="config.read") == 0


def test_put_options_for_kms_and_no_lock_without_retention() -> None:
    kms = AuditTarget(lambda: AuditSettings(sse="aws:kms", kms_key_id="alias/audit")).options()
    assert kms.s3_args() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/audit"}
    assert PutOptions(sse="AES256").s3_args() == {"ServerSideEncryption": "AES256"}
    with pytest.raises(ValueError, match="kms_key_id"):
        AuditSettings(kms_key_id="alias/audit")  # would be silently unused with AES256
