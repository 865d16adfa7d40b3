"""S3 down, a pod keeps serving and says how stale it is: moto's S3 server stopped under a running gateway,
config-sync and model-sync — the volume keeps the last good config and router model (the gateway still routes with
it), each agent's store breaker opens after its failed polls, `store.staleness_seconds` in its health and
`<prefix>_store_staleness_seconds` grow, and the gateway's /health/dependencies shows both; moto started again at
the same address and the objects put back: the breakers close and staleness is back to one poll."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from harness.config_sync_process import AwsCli, StartConfigSync, start_moto_at
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway, VolumeDirs
from harness.model_sync_process import StartModelSync
from harness.moto_s3 import MotoS3
from harness.processes import free_port, wait_until
from harness.router_artifacts import ModelRegistry, keygen, write_router
from routeiq_shared.config_schema import content_version

pytestmark = pytest.mark.integration

INTERVAL = 0.5
BREAKER = {"FAILURES": "2", "COOLDOWN": "3"}  # opens after 2 failed polls, one probe every 3 s
NAME = "router"
BUCKET = "routeiq-staleness"


def _config(upstream: FakeUpstream) -> bytes:
    config = {
        "model_list": [
            {"model_name": g, "litellm_params": {"model": f"openai/fake-{g}", "api_base": upstream.base_url}}
            for g in ("fast", "strong")
        ],
        "router_settings": {"num_retries": 0},
        "routeiq": {"routers": [{"name": "auto", "artifact": NAME, "candidates": ["fast", "strong"]}]},
    }
    return yaml.safe_dump(config, sort_keys=False).encode()


def _fill(moto: MotoS3, aws: AwsCli, config: bytes, registry: ModelRegistry, artifact: Path, key: Path) -> None:
    """What the store holds (again, after a restart: moto keeps nothing)."""
    moto.client().create_bucket(Bucket=BUCKET)
    aws.upload(config, f"s3://{BUCKET}/config/config.yaml")
    registry.publish(NAME, "v1", artifact, key, set_current=True)


def _dependencies(gw: GatewayHandle) -> dict[str, Any]:
    resp = httpx.get(gw.url("/health/dependencies"), timeout=5, trust_env=False)
    assert resp.status_code == 200, resp.text
    document: dict[str, Any] = resp.json()
    return document


def _routed_version(gw: GatewayHandle) -> str:
    resp = httpx.post(
        gw.url("/v1/chat/completions"),
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
        trust_env=False,
    )
    assert resp.status_code == 200, resp.text
    return resp.headers["x-routeiq-router-version"]


def test_s3_stopped_last_good_files_serve_staleness_reported_and_recovered(
    start_gateway: StartGateway,
    start_config_sync: StartConfigSync,
    start_model_sync: StartModelSync,
    fresh_upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    port = free_port()
    moto = start_moto_at(tmp_path / "moto", port)
    try:
        aws = AwsCli.for_moto(moto, tmp_path / "aws")
        keys = keygen(tmp_path / "keys")
        artifact = write_router(tmp_path / "router.pkl", "strong")
        registry = ModelRegistry(f"s3://{BUCKET}/models/", moto.env())
        config = _config(fresh_upstream)
        _fill(moto, aws, config, registry, artifact, keys.private)
        root = tmp_path / "pod"
        gw = start_gateway(config.decode(), env={"MODEL_SIGNING_PUBLIC_KEY": str(keys.public)}, root=root)
        config_sync = start_config_sync(
            f"s3://{BUCKET}/config/",
            root=root,
            s3_env=moto.env(),
            interval=INTERVAL,
            env={f"CONFIG_SYNC_BREAKER_{k}": v for k, v in BREAKER.items()},
        )
        model_sync = start_model_sync(
            registry.uri,
            root=root,
            s3_env=moto.env(),
            interval=INTERVAL,
            public_key=keys.public,
            env={f"MODEL_SYNC_BREAKER_{k}": v for k, v in BREAKER.items()},
        )
        config_sync.wait_version(content_version(config, b""))
        model_sync.wait_version(NAME, "v1", timeout=30)
        wait_until(lambda: _routed_version(gw) == "v1", timeout=20)
        wait_until(lambda: "sync" in _dependencies(gw)["models"], timeout=10)
        healthy = _dependencies(gw)
        assert healthy["status"] == "ok" and healthy["config"]["sync"]["store"]["breaker"] == "closed"
        assert NAME in healthy["models"]["installed"]
        dirs = VolumeDirs(root)
        volume = {p.name: p.read_bytes() for d in (dirs.config_dir, dirs.models_dir) for p in d.iterdir()}

        moto.stop()
        for agent, prefix in ((config_sync, "routeiq_config_sync"), (model_sync, "routeiq_model_sync")):
            agent.wait_health(
                lambda h: h["store"]["breaker"] != "closed" and h["store"]["staleness_seconds"] > 3,
                timeout=30,
                message="store breaker open, staleness growing",
            )
            assert agent.metric(f"{prefix}_circuit_breaker_state", dependency="s3") in (1.0, 2.0)
            assert agent.metric(f"{prefix}_circuit_breaker_transitions_total", dependency="s3", to="open") >= 1
            assert agent.metric(f"{prefix}_store_staleness_seconds") > 3
            assert agent.readiness_status() == 200  # synced once: the last good files serve
        down = _dependencies(gw)
        assert down["status"] == "degraded", down
        for part in ("config", "models"):
            store = down[part]["sync"]["store"]
            assert store["breaker"] != "closed" and store["staleness_seconds"] > 3, down
        assert down["config"]["file_age_seconds"] > 3  # nothing rewrote the config meanwhile
        assert _routed_version(gw) == "v1"  # the last good model still routes
        assert {p.name: p.read_bytes() for d in (dirs.config_dir, dirs.models_dir) for p in d.iterdir()} == volume
        opened = [r for r in config_sync.process.json_logs() if r.get("event") == "circuit_breaker"]
        assert opened and opened[0]["to"] == "open" and opened[0]["dependency"] == "s3"

        moto = start_moto_at(tmp_path / "moto", port)  # the same address, empty
        _fill(moto, aws, config, registry, artifact, keys.private)
        for agent in (config_sync, model_sync):
            agent.wait_health(
                lambda h: h["store"]["breaker"] == "closed" and h["store"]["staleness_seconds"] < 3,
                timeout=30,
                message="store breaker closed again, fresh",
            )
        wait_until(lambda: _dependencies(gw)["status"] == "ok", timeout=10)
        assert _routed_version(gw) == "v1"
    finally:
        moto.stop()
