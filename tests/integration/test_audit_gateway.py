"""The real gateway process with OIDC admin identity and the audit trail on moto's S3: roles enforced on the
admin port's config and reload routes (config = viewer, reload = admin), and every admin action and reload —
by token, by break-glass key, by SIGHUP, refused or not — reaches S3 as one encrypted record holding digests,
never secrets."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway
from harness.moto_s3 import MotoS3
from harness.oidc_issuer_control import AUDIENCE, FakeIssuer
from harness.processes import wait_until
from harness.sidecar_process import parse_metrics

pytestmark = pytest.mark.integration

MASTER_KEY = "sk-master-audit-secret-1"
UPSTREAM_KEY = "sk-upstream-audit-secret-2"
BREAK_GLASS = "break-glass-audit-secret-3"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _config(upstream: FakeUpstream, issuer: FakeIssuer, bucket: str, model: str = "m1") -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {"model": "openai/fake", "api_base": upstream.base_url, "api_key": UPSTREAM_KEY},
            }
        ],
        "general_settings": {"master_key": MASTER_KEY},
        "routeiq": {
            "admin": {
                "oidc": {
                    "issuer": issuer.url,
                    "audience": AUDIENCE,
                    "role_map": {"ops-read": "viewer", "ops-edit": "editor", "ops-root": "admin"},
                }
            },
            "audit": {"store": f"s3://{bucket}/gw/", "flush_seconds": 0.3},
        },
    }


def _call(gw: GatewayHandle, method: str, path: str, credential: str | None, **headers: str) -> httpx.Response:
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    return httpx.request(method, gw.admin(path), headers=headers, timeout=10)


def _records(moto: MotoS3, bucket: str) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    s3 = moto.client()
    bodies = {
        o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for o in s3.list_objects_v2(Bucket=bucket, Prefix="gw/audit/").get("Contents", [])
    }
    records = [orjson.loads(line) for body in bodies.values() for line in body.splitlines()]
    return sorted(records, key=lambda r: r["at"]), bodies


def _metric(gw: GatewayHandle, name: str, **labels: str) -> float:
    text = httpx.get(gw.url("/metrics"), timeout=10).text
    return sum(v for n, lab, v in parse_metrics(text) if n == name and all(lab.get(k) == x for k, x in labels.items()))


def test_roles_on_admin_endpoints_and_every_action_audited_in_s3(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, moto_s3: MotoS3, tmp_path: Path
) -> None:
    issuer = FakeIssuer(tmp_path / "issuer").start()
    try:
        bucket = moto_s3.new_bucket("audit-gw")
        config = _config(fresh_upstream, issuer, bucket)
        gw = start_gateway(config, env={**moto_s3.env(), "ADMIN_API_KEYS": BREAK_GLASS})
        viewer = issuer.token(issuer.claims(["ops-read"], sub="val"))
        editor = issuer.token(issuer.claims(["ops-edit"], sub="ed"))
        admin = issuer.token(issuer.claims(["ops-read", "ops-root"], sub="alice"))
        now = issuer.claims()["iat"]
        expired = issuer.token(issuer.claims(["ops-root"], exp=now - 600))
        wrong_aud = issuer.token(issuer.claims(["ops-root"], aud="another-app"))
        no_role = issuer.token(issuer.claims(["marketing"]))

        # the auth matrix of the admin port's config and reload routes
        expected = {
            None: (401, 401),
            "wrong-key": (401, 401),
            expired: (401, 401),
            wrong_aud: (401, 401),
            no_role: (403, 403),
            viewer: (200, 403),
            editor: (200, 403),
            BREAK_GLASS: (200, 200),
        }
        for credential, (config_status, reload_status) in expected.items():
            assert _call(gw, "GET", "/admin/config", credential).status_code == config_status, credential
            assert _call(gw, "POST", "/admin/reload", credential).status_code == reload_status, credential
        denied = _call(gw, "POST", "/admin/reload", viewer).json()["error"]
        assert denied["code"] == "insufficient_role" and "admin role" in denied["message"]

        version = _call(gw, "GET", "/admin/config", viewer).json()["version"]
        traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
        gw.write_config(_config(fresh_upstream, issuer, bucket, model="m2"))
        ok = _call(gw, "POST", "/admin/reload", admin, traceparent=traceparent)
        assert ok.status_code == 200 and ok.json()["reloaded"] is True
        new_version = ok.json()["version"]
        assert new_version != version

        gw.write_config("model_list: not-a-list\n")
        gw.send_signal(signal.SIGHUP)
        gw.wait_for_log(lambda r: r.get("event") == "config_reload" and r.get("trigger") == "SIGHUP")

        def reloads() -> list[dict[str, Any]]:
            return [r for r in _records(moto_s3, bucket)[0] if r["action"] == "config.reload"]

        # reads: viewer 2, editor 1, break-glass 1; reloads: break-glass, admin token, SIGHUP (refused)
        wait_until(lambda: len(reloads()) == 3, timeout=15, detail=lambda: str(_records(moto_s3, bucket)[0]))
        records, bodies = _records(moto_s3, bucket)
        reads = [r for r in records if r["action"] == "config.read"]
        assert sorted(r["actor"]["subject"] for r in reads if r["actor"]["how"] == "oidc") == ["ed", "val", "val"]
        assert len(reads) == 4
        by_key, by_token, by_signal = reloads()
        assert by_key["actor"]["how"] == "admin_key" and by_key["actor"]["subject"].startswith("admin_key:")
        assert by_key["result"] == "unchanged" and by_key["before_digest"] == by_key["after_digest"] == version
        assert by_token["actor"] == {"subject": "alice", "how": "oidc"} and by_token["trace_id"] == TRACE_ID
        assert (by_token["before_digest"], by_token["after_digest"], by_token["result"]) == (
            version,
            new_version,
            "reloaded",
        )
        assert by_signal["actor"] == {"subject": "signal:SIGHUP", "how": "signal"}
        assert by_signal["result"] == "refused" and by_signal["after_digest"] is None
        assert all(r["schema_version"] == 1 and len(r["id"]) == 32 for r in records)
        assert len({r["id"] for r in records}) == len(records)

        s3 = moto_s3.client()
        for key, body in bodies.items():
            assert s3.head_object(Bucket=bucket, Key=key)["ServerSideEncryption"] == "AES256"
            for secret in (MASTER_KEY, UPSTREAM_KEY, BREAK_GLASS, viewer, admin):
                assert secret.encode() not in body, f"a secret is in {key}"
        assert _metric(gw, "routeiq_audit_records_total", action="config.reload") == 3
        assert _metric(gw, "routeiq_audit_records_shipped_total") == len(records)
        assert _metric(gw, "routeiq_audit_records_dropped_total") == 0
        wait_until(lambda: _metric(gw, "routeiq_audit_records_pending") == 0, timeout=10)
        assert all(secret not in gw.log_text() for secret in (BREAK_GLASS, viewer, admin))
    finally:
        issuer.stop()
