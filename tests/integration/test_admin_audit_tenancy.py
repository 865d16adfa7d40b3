"""Teams and keys changed on the admin port are audited: a real gateway with a real PostgreSQL, its audit records
shipped to a file store. Each change is one record — the actor from the caller's principal, the trace id, and
digests of the team's or key's record before and after — and no record holds a key's secret."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway
from harness.oidc_issuer_control import AUDIENCE, FakeIssuer
from harness.postgres_server import upgraded
from harness.processes import wait_until

pytestmark = pytest.mark.integration

ADMIN = "sk-admin-audit-break-glass"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def config(upstream: FakeUpstream, store: Path) -> dict[str, Any]:
    return {
        "model_list": [
            {"model_name": "fast", "litellm_params": {"model": "openai/fake", "api_base": upstream.base_url}},
        ],
        "general_settings": {"master_key": "sk-master"},
        "routeiq": {"audit": {"store": f"file://{store}/", "flush_seconds": 0.2}},
    }


def admin(gw: GatewayHandle, method: str, path: str, body: Any = None, **headers: str) -> httpx.Response:
    return httpx.request(
        method,
        gw.admin(path),
        headers={"Authorization": f"Bearer {ADMIN}", **headers},
        content=orjson.dumps(body) if body is not None else None,
        timeout=10,
        trust_env=False,
    )


def shipped(store: Path) -> list[dict[str, Any]]:
    lines = [line for f in sorted(store.rglob("*.jsonl")) for line in f.read_bytes().splitlines()]
    return sorted((orjson.loads(line) for line in lines), key=lambda r: r["at"])


def test_team_and_key_changes_are_audited_with_digests_never_secrets(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_database: str, tmp_path: Path
) -> None:
    store = tmp_path / "audit-store"
    gw = start_gateway(
        config(fresh_upstream, store),
        env={"DATABASE_URL": upgraded(fresh_database), "ADMIN_API_KEYS": ADMIN},
        root=tmp_path / "gw",
    )
    assert admin(gw, "POST", "/v1/admin/teams", {"team_id": "search", "models": ["fast"]}).status_code == 201
    made = admin(gw, "POST", "/key/generate", {"team_id": "search", "key_alias": "ci"})
    assert made.status_code == 200, made.text
    secret, key_id = made.json()["key"], made.json()["key_id"]
    assert admin(gw, "PATCH", f"/v1/admin/keys/{key_id}", {"rpm_limit": 10}).status_code == 200
    assert admin(gw, "POST", "/key/update", {"key": secret, "blocked": True}).status_code == 200
    assert admin(gw, "PATCH", "/v1/admin/teams/search", {"tpm_limit": 1000}).status_code == 200
    # refused: nothing changed, nothing recorded
    assert admin(gw, "PATCH", f"/v1/admin/keys/{key_id}", {"rpm_limit": -1}).status_code == 400
    assert admin(gw, "DELETE", "/v1/admin/keys/no-such-key").status_code == 404
    traced = {"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"}
    deleted = admin(gw, "POST", "/key/delete", {"keys": [key_id]}, **traced)
    assert deleted.status_code == 200
    assert admin(gw, "DELETE", "/v1/admin/teams/search").status_code == 200

    actions = ["team.create", "key.create", "key.update", "key.revoke", "team.update", "key.delete", "team.delete"]
    wait_until(lambda: len(shipped(store)) >= len(actions), timeout=10, detail=lambda: str(shipped(store)))
    records = shipped(store)
    assert [r["action"] for r in records] == actions
    by_action = {r["action"]: r for r in records}
    for r in records:
        assert r["actor"]["how"] == "admin_key" and r["actor"]["subject"].startswith("admin_key:")
        assert r["result"] == "ok" and r["target"] in ("team:search", f"key:{key_id}")
    # a key's digests chain: each change starts from the record the previous one left
    key_chain = [by_action[a] for a in ("key.create", "key.update", "key.revoke", "key.delete")]
    assert key_chain[0]["before_digest"] is None and key_chain[-1]["after_digest"] is None
    for prev, nxt in itertools.pairwise(key_chain):
        assert prev["after_digest"] == nxt["before_digest"] and len(prev["after_digest"]) == 64
    assert by_action["key.update"]["before_digest"] != by_action["key.update"]["after_digest"]
    assert by_action["team.update"]["after_digest"] == by_action["team.delete"]["before_digest"]
    assert by_action["key.delete"]["trace_id"] == TRACE_ID
    for f in store.rglob("*.jsonl"):
        assert secret.encode() not in f.read_bytes() and ADMIN.encode() not in f.read_bytes()
    assert secret not in gw.log_text()


def test_oidc_roles_on_tenancy_routes_and_the_token_subject_as_actor(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_database: str, tmp_path: Path
) -> None:
    issuer = FakeIssuer(tmp_path / "issuer").start()
    try:
        store = tmp_path / "audit-store"
        cfg = config(fresh_upstream, store)
        cfg["routeiq"]["admin"] = {
            "oidc": {"issuer": issuer.url, "audience": AUDIENCE, "role_map": {"ro": "viewer", "rw": "editor"}}
        }
        gw = start_gateway(cfg, env={"DATABASE_URL": upgraded(fresh_database)}, root=tmp_path / "gw")  # no keys
        viewer = issuer.token(issuer.claims(["ro"], sub="val"))
        editor = issuer.token(issuer.claims(["rw"], sub="ed"))
        expired = issuer.token(issuer.claims(["rw"], exp=issuer.claims()["iat"] - 600))

        def call(token: str, method: str, path: str, body: Any = None) -> httpx.Response:
            return httpx.request(
                method,
                gw.admin(path),
                headers={"Authorization": f"Bearer {token}"},
                content=orjson.dumps(body) if body is not None else None,
                timeout=10,
                trust_env=False,
            )

        assert call(viewer, "POST", "/team/new", {"team_id": "t"}).status_code == 403
        assert call(expired, "POST", "/team/new", {"team_id": "t"}).status_code == 401
        assert call(editor, "POST", "/team/new", {"team_id": "t"}).status_code == 200
        assert call(editor, "POST", "/key/generate", {"team_id": "t"}).status_code == 200
        assert call(viewer, "GET", "/v1/admin/keys").json()["data"][0]["team_id"] == "t"
        assert call(viewer, "POST", "/admin/reload").status_code == 403  # admin only
        wait_until(lambda: len(shipped(store)) >= 2, timeout=10)
        records = shipped(store)
        assert [r["action"] for r in records] == ["team.create", "key.create"]  # refusals change nothing
        assert all(r["actor"] == {"subject": "ed", "how": "oidc"} for r in records)
    finally:
        issuer.stop()
