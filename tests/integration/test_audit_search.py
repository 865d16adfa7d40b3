"""Audit records in PostgreSQL for search (migrations/0002_audit.sql, audit/table_sink.py, GET /v1/admin/audit):
a real gateway and the harness's real PostgreSQL. Records land in the table in batches and are found by actor,
action, target and time, paged without repeats; PostgreSQL down → the spool's shipped copy has every record and
the table catches up when it returns; a full queue or records unwritten at exit are counted, never silent."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway
from harness.postgres_server import PostgresServer, upgraded
from harness.processes import wait_until
from harness.sidecar_process import parse_metrics
from prometheus_client import CollectorRegistry
from routeiq_gateway.audit.metrics import AuditMetrics
from routeiq_gateway.audit.record import Actor, audit_record
from routeiq_gateway.audit.table import AuditQuery, search
from routeiq_gateway.audit.table_sink import TableSink
from routeiq_gateway.tenancy.database import Database, DatabaseSettings
from routeiq_shared.config_schema import AuditSettings

pytestmark = pytest.mark.integration

ADMIN = "sk-admin-search-break-glass"


def config(upstream: FakeUpstream, store: Path) -> dict[str, Any]:
    return {
        "model_list": [
            {"model_name": "fast", "litellm_params": {"model": "openai/fake", "api_base": upstream.base_url}}
        ],
        "general_settings": {"master_key": "sk-master"},
        "routeiq": {"audit": {"store": f"file://{store}/", "flush_seconds": 0.2, "table_flush_seconds": 0.2}},
    }


def admin(gw: GatewayHandle, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(
        method,
        gw.admin(path),
        headers={"Authorization": f"Bearer {ADMIN}"},
        content=orjson.dumps(body) if body is not None else None,
        timeout=10,
        trust_env=False,
    )


def found(gw: GatewayHandle, query: str = "") -> list[dict[str, Any]]:
    resp = admin(gw, "GET", f"/v1/admin/audit?{query}")
    assert resp.status_code == 200, resp.text
    return list(resp.json()["data"])


def shipped(store: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for f in sorted(store.rglob("*.jsonl")) for line in f.read_bytes().splitlines()]


def metric(gw: GatewayHandle, name: str, **labels: str) -> float:
    text = httpx.get(gw.url("/metrics"), timeout=10, trust_env=False).text
    return sum(v for n, lab, v in parse_metrics(text) if n == name and all(lab.get(k) == x for k, x in labels.items()))


def test_search_by_actor_action_target_and_time_paged(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_database: str, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    gw = start_gateway(
        config(fresh_upstream, store), env={"DATABASE_URL": upgraded(fresh_database), "ADMIN_API_KEYS": ADMIN}
    )
    start = datetime.now(UTC) - timedelta(seconds=1)
    for team in ("a", "b", "c"):
        assert admin(gw, "POST", "/v1/admin/teams", {"team_id": team}).status_code == 201
    key_id = admin(gw, "POST", "/v1/admin/keys", {"team_id": "b"}).json()["key_id"]
    assert admin(gw, "PATCH", "/v1/admin/teams/b", {"rpm_limit": 5}).status_code == 200
    assert admin(gw, "GET", "/admin/config").status_code == 200

    wait_until(lambda: len(found(gw)) == 6, timeout=10, detail=lambda: str(found(gw)))
    everything = found(gw)
    assert [r["action"] for r in everything] == [  # newest first
        "config.read",
        "team.update",
        "key.create",
        "team.create",
        "team.create",
        "team.create",
    ]
    wait_until(lambda: len(shipped(store)) == 6, timeout=10)
    assert sorted(everything, key=lambda r: r["id"]) == sorted(shipped(store), key=lambda r: r["id"])  # same records
    assert [r["target"] for r in found(gw, "action=team.create")] == ["team:c", "team:b", "team:a"]
    assert [r["action"] for r in found(gw, "target=team:b")] == ["team.update", "team.create"]
    assert found(gw, f"target=key:{key_id}")[0]["action"] == "key.create"
    subject = everything[0]["actor"]["subject"]
    assert subject.startswith("admin_key:") and len(found(gw, f"actor={subject}")) == 6
    assert found(gw, "actor=someone-else") == []
    assert found(gw, f"until={start.isoformat().replace('+00:00', 'Z')}") == []
    assert len(found(gw, f"since={start.date().isoformat()}&action=team.create")) == 3

    # pages of two: no record twice, none missed, the last page says there is no more
    seen: list[str] = []
    cursor = ""
    for _ in range(4):
        page = admin(gw, "GET", f"/v1/admin/audit?limit=2{cursor}").json()
        seen += [r["id"] for r in page["data"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == [r["id"] for r in everything]

    for bad, param in (
        ("limit=0", "limit"),
        ("limit=lots", "limit"),
        ("limit=1001", "limit"),
        ("since=yesterday", "since"),
        ("cursor=not-ours", "cursor"),
        ("since=2026-02-02&until=2026-01-01", "since"),
    ):
        resp = admin(gw, "GET", f"/v1/admin/audit?{bad}")
        assert resp.status_code == 400 and resp.json()["error"]["param"] == param, (bad, resp.text)
    assert httpx.get(gw.admin("/v1/admin/audit"), timeout=10, trust_env=False).status_code == 401


def test_postgres_down_spool_keeps_records_and_the_table_catches_up(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    postgres_server: PostgresServer,
    fresh_database: str,
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    gw = start_gateway(
        config(fresh_upstream, store), env={"DATABASE_URL": upgraded(fresh_database), "ADMIN_API_KEYS": ADMIN}
    )
    postgres_server.pause()
    try:
        for _ in range(3):  # config reads need no database: they are answered, and audited
            assert admin(gw, "GET", "/admin/config").status_code == 200
        wait_until(lambda: len(shipped(store)) == 3, timeout=10)  # the spool and the store have them
        wait_until(lambda: metric(gw, "routeiq_audit_table_write_failures_total") >= 1, timeout=10)
        assert metric(gw, "routeiq_audit_table_pending") == 3
        assert admin(gw, "GET", "/v1/admin/audit").json()["error"]["code"] == "key_store_down"
    finally:
        postgres_server.resume()
    wait_until(lambda: len(found(gw, "action=config.read")) == 3, timeout=40)  # retried with backoff
    assert {r["id"] for r in found(gw)} == {r["id"] for r in shipped(store)}
    assert metric(gw, "routeiq_audit_table_pending") == 0
    assert metric(gw, "routeiq_audit_records_dropped_total") == 0


def test_a_full_queue_and_records_unwritten_at_exit_are_counted(
    postgres_server: PostgresServer, fresh_database: str
) -> None:
    async def scenario() -> tuple[list[str | None], float, float, int]:
        db = Database(DatabaseSettings(upgraded(fresh_database)))
        await db.open()
        metrics = AuditMetrics(CollectorRegistry())
        sink = TableSink(db, AuditSettings, metrics, max_pending=2)
        records = [audit_record(Actor("ops", "admin_key"), "config.read", "config", result="ok") for _ in range(3)]
        verdicts = [sink.write(r) for r in records]
        assert await sink.flush()
        assert await sink.flush()  # nothing left: a second flush writes nothing twice
        stored = len(await search(db, AuditQuery()))
        postgres_server.pause()
        try:
            sink.write(audit_record(Actor("ops", "admin_key"), "config.read", "config", result="ok"))
            await sink.close(grace=3)
        finally:
            postgres_server.resume()
            await db.close()
        unwritten = metrics.dropped.labels("table_unwritten")._value.get()
        return verdicts, unwritten, metrics.table_write_failures._value.get(), stored

    verdicts, unwritten, failures, stored = asyncio.run(scenario())
    assert verdicts == [None, None, "table_queue_full"]  # the trail counts this one as dropped
    assert stored == 2
    assert unwritten == 1 and failures >= 1
