"""config-sync and the gateway on one volume (issue 7 items 1, 2, 5): the gateway's reload result is what the agent
reports, and files it refused are taken back off the volume; a write the volume refused is applied once it can
be; a pidfile naming a stranger signals nobody.

Real processes over loopback: moto's S3 server, `routeiq-config-sync`, `routeiq-gateway`, the fake upstream.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from harness.config_sync_process import AwsCli, StartConfigSync
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import StartGateway
from harness.moto_s3 import MotoS3
from harness.processes import wait_until
from routeiq_shared.config_schema import content_version

pytestmark = pytest.mark.integration

MASTER_KEY = "sk-verdict-master"


def config_bytes(upstream: FakeUpstream, models: dict[str, str]) -> bytes:
    """Each model group with its own api_key (a literal, or an os.environ/ reference)."""
    config: dict[str, Any] = {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {"model": f"openai/fake-{name}", "api_base": upstream.base_url, "api_key": key},
            }
            for name, key in models.items()
        ],
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER_KEY},
    }
    return yaml.safe_dump(config, sort_keys=False).encode()


def ask(client: openai.OpenAI, model: str) -> str:
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    return reply.choices[0].message.content or ""


@pytest.fixture
def aws(moto_s3: MotoS3, tmp_path: Path) -> AwsCli:
    return AwsCli.for_moto(moto_s3, tmp_path / "aws")


def test_a_secret_set_only_in_the_agent_is_refused_by_the_gateway_and_the_files_it_replaced_are_put_back(
    start_gateway: StartGateway,
    start_config_sync: StartConfigSync,
    moto_s3: MotoS3,
    s3_bucket: str,
    fresh_upstream: FakeUpstream,
    aws: AwsCli,
) -> None:
    source = f"s3://{s3_bucket}/prod/"
    v1 = config_bytes(fresh_upstream, {"steady": "sk-up"})
    aws.upload(v1, f"{source}config.yaml")
    gw = start_gateway(v1.decode())
    agent = start_config_sync(source, s3_env=moto_s3.env(), env={"AGENT_ONLY_KEY": "sk-up"})
    agent.wait_version(content_version(v1, b""))
    before = gw.config_path.read_bytes()
    assert not gw.candidates_path.exists()

    v2 = config_bytes(fresh_upstream, {"steady": "sk-up", "more": "os.environ/AGENT_ONLY_KEY"})
    aws.upload(v2, f"{source}config.yaml")

    health = agent.wait_health(
        lambda h: h["gateway"]["state"] == "rejected_by_gateway", timeout=10, message="the gateway's refusal"
    )
    assert health["status"] == "rejected_by_gateway"
    assert health["version"] == content_version(v1, b"")  # the refused files were taken back off the volume
    assert health["gateway"]["loaded_version"] == content_version(v1, b"")
    assert "model_list[1].litellm_params.api_key" in health["gateway"]["reason"]
    assert "AGENT_ONLY_KEY is not set" in health["gateway"]["reason"]
    assert gw.config_path.read_bytes() == before  # byte for byte
    assert not gw.candidates_path.exists()
    restored = agent.wait_for_log(lambda r: r.get("result") == "restored")
    assert restored["event"] == "config_sync"
    assert restored["version"] == content_version(v1, b"")
    assert restored["refused_version"] == content_version(v2, b"")
    assert agent.metric("routeiq_config_sync_gateway_state", state="rejected_by_gateway") == 1.0
    assert agent.metric("routeiq_config_sync_gateway_state", state="ok") == 0.0
    assert ask(gw.openai_client(MASTER_KEY), "steady")  # the gateway serves v1 on

    # The next polls neither write nor signal the refused upload again, and keep reporting the refusal.
    signals = agent.metric("routeiq_config_sync_reload_signals_total", method="signal", result="ok")
    polls = agent.metric("routeiq_config_sync_attempts_total", result="unchanged")
    wait_until(lambda: agent.metric("routeiq_config_sync_attempts_total", result="unchanged") > polls + 1, timeout=5)
    assert agent.health()["status"] == "rejected_by_gateway"
    assert agent.metric("routeiq_config_sync_reload_signals_total", method="signal", result="ok") == signals
    assert gw.config_path.read_bytes() == before
    assert len([r for r in agent.json_logs() if r.get("result") in ("rejected_by_gateway", "restored")]) == 2

    # A restart of the gateway's container reads the volume: it starts, on v1 (before: it exited 2 on v2).
    port = gw.port
    gw.stop()
    gw = start_gateway(gw.config_path.read_text(), port=port)  # rewrites the very bytes the volume holds
    assert ask(gw.openai_client(MASTER_KEY), "steady")
    with pytest.raises(openai.NotFoundError):
        ask(gw.openai_client(MASTER_KEY), "more")
    polls = agent.metric("routeiq_config_sync_attempts_total", result="unchanged")
    wait_until(lambda: agent.metric("routeiq_config_sync_attempts_total", result="unchanged") > polls, timeout=5)
    health = agent.health()
    assert health["status"] == "rejected_by_gateway" and "AGENT_ONLY_KEY" in health["gateway"]["reason"]

    v3 = config_bytes(fresh_upstream, {"steady": "sk-up", "more": "sk-up"})
    aws.upload(v3, f"{source}config.yaml")
    health = agent.wait_version(content_version(v3, b""))
    assert health["gateway"] == {"state": "ok", "loaded_version": content_version(v3, b""), "reason": None}
    assert ask(gw.openai_client(MASTER_KEY), "more")


def test_a_secret_set_only_in_the_gateway_is_accepted_loaded_and_reported_ok(
    start_gateway: StartGateway,
    start_config_sync: StartConfigSync,
    moto_s3: MotoS3,
    s3_bucket: str,
    fresh_upstream: FakeUpstream,
    aws: AwsCli,
) -> None:
    source = f"s3://{s3_bucket}/prod/"
    v1 = config_bytes(fresh_upstream, {"steady": "sk-up"})
    aws.upload(v1, f"{source}config.yaml")
    gw = start_gateway(v1.decode(), env={"GATEWAY_ONLY_KEY": "sk-up\n"})  # as `echo` leaves a mounted secret
    agent = start_config_sync(source, s3_env=moto_s3.env())
    agent.wait_version(content_version(v1, b""))

    v2 = config_bytes(fresh_upstream, {"steady": "sk-up", "secret": "os.environ/GATEWAY_ONLY_KEY"})
    aws.upload(v2, f"{source}config.yaml")

    health = agent.wait_version(content_version(v2, b""))
    wait_until(lambda: agent.health()["gateway"]["state"] == "ok", timeout=10)
    assert agent.health()["gateway"]["loaded_version"] == content_version(v2, b"")
    assert ask(gw.openai_client(MASTER_KEY), "secret")
    # The real gateway, verified through its identity file, is still signalled.
    reloaded = gw.wait_for_log(
        lambda r: r.get("message") == "Config reloaded" and r.get("version") == health["version"]
    )
    assert reloaded["trigger"] == "SIGHUP"
    assert agent.metric("routeiq_config_sync_reload_signals_total", method="signal", result="ok") >= 1
    sent = fresh_upstream.requests("/v1/chat/completions")[-1]
    assert sent["headers"]["authorization"] == "Bearer sk-up"  # one trailing newline dropped
    assert health["last_error"] is None


def _chattr(flag: str, path: Path) -> bool:
    return subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False).returncode == 0


@pytest.fixture
def immutable_dirs() -> Iterator[list[Path]]:
    """Directories made immutable (chattr +i refuses new files even to root), made writable again at teardown."""
    made: list[Path] = []
    yield made
    for path in made:
        _chattr("-i", path)


def test_a_write_refused_by_the_volume_is_applied_once_it_is_writable_again(
    start_gateway: StartGateway,
    start_config_sync: StartConfigSync,
    moto_s3: MotoS3,
    s3_bucket: str,
    fresh_upstream: FakeUpstream,
    aws: AwsCli,
    immutable_dirs: list[Path],
) -> None:
    source = f"s3://{s3_bucket}/prod/"
    v1 = config_bytes(fresh_upstream, {"steady": "sk-up"})
    aws.upload(v1, f"{source}config.yaml")
    gw = start_gateway(v1.decode())
    agent = start_config_sync(source, s3_env=moto_s3.env())
    first = agent.wait_version(content_version(v1, b""))
    config_dir = gw.dirs.config_dir
    if not _chattr("+i", config_dir):
        pytest.skip("chattr +i is not supported on this file system")
    immutable_dirs.append(config_dir)

    v2 = config_bytes(fresh_upstream, {"steady": "sk-up", "later": "sk-up"})
    aws.upload(v2, f"{source}config.yaml")
    failing = agent.wait_health(lambda h: h["last_result"] == "write_error", timeout=10, message="write_error")
    assert failing["version"] == content_version(v1, b"") and failing["etag"] == first["etag"]
    polls = failing["consecutive_failures"]
    again = agent.wait_health(lambda h: h["consecutive_failures"] > polls, timeout=5, message="next poll")
    assert again["last_result"] == "write_error"  # still failing, still saying so; never "unchanged"

    _chattr("-i", config_dir)
    health = agent.wait_version(content_version(v2, b""))
    assert health["etag"] != first["etag"]
    assert gw.config_path.read_bytes() == v2
    wait_until(lambda: agent.health()["gateway"]["state"] == "ok", timeout=10)
    assert ask(gw.openai_client(MASTER_KEY), "later")


def test_a_pidfile_naming_a_stranger_signals_nobody_and_the_admin_endpoint_reloads(
    start_gateway: StartGateway,
    start_config_sync: StartConfigSync,
    moto_s3: MotoS3,
    s3_bucket: str,
    fresh_upstream: FakeUpstream,
    aws: AwsCli,
    tmp_path: Path,
) -> None:
    source = f"s3://{s3_bucket}/prod/"
    v1 = config_bytes(fresh_upstream, {"steady": "sk-up"})
    aws.upload(v1, f"{source}config.yaml")
    gw = start_gateway(v1.decode(), env={"ADMIN_API_KEYS": "sk-admin"})
    stranger = subprocess.Popen(["sleep", "60"])  # SIGHUP would end it
    try:
        run_dir = tmp_path / "agent-run"
        run_dir.mkdir()
        (run_dir / "gateway.pid").write_text(f"{stranger.pid}\n")  # e.g. the pid reused after a restart
        agent = start_config_sync(
            source,
            s3_env=moto_s3.env(),
            env={"ROUTEIQ_RUN_DIR": str(run_dir), "GATEWAY_ADMIN_URL": gw.admin_url, "GATEWAY_ADMIN_KEY": "sk-admin"},
        )
        agent.wait_version(content_version(v1, b""))
        v2 = config_bytes(fresh_upstream, {"steady": "sk-up", "via-http": "sk-up"})
        aws.upload(v2, f"{source}config.yaml")
        health = agent.wait_version(content_version(v2, b""))
        wait_until(lambda: agent.health()["gateway"]["state"] == "ok", timeout=10)
        assert ask(gw.openai_client(MASTER_KEY), "via-http")
        assert agent.metric("routeiq_config_sync_reload_signals_total", method="signal", result="failed") >= 1
        assert agent.metric("routeiq_config_sync_reload_signals_total", method="http", result="ok") >= 1
        assert stranger.poll() is None  # never signalled
        assert health["last_error"] is None
    finally:
        stranger.kill()
        stranger.wait()


def test_health_answers_while_a_large_valid_config_validates(
    start_config_sync: StartConfigSync, moto_s3: MotoS3, s3_bucket: str, aws: AwsCli, tmp_path: Path
) -> None:
    source = f"s3://{s3_bucket}/prod/"
    small = yaml.safe_dump({"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x"}}]}).encode()
    aws.upload(small, f"{source}config.yaml")
    agent = start_config_sync(source, s3_env=moto_s3.env(), env={"CONFIG_MAX_BYTES": str(8 * 1024 * 1024)})
    agent.wait_version(content_version(small, b""))
    big = "model_list:\n" + "".join(
        f"  - {{model_name: m{i}, litellm_params: {{model: openai/x, api_key: sk-x, rpm: {i}}}}}\n" for i in range(8000)
    )
    aws.upload(big.encode(), f"{source}config.yaml")

    worst = 0.0
    version = content_version(big.encode(), b"")
    deadline = time.monotonic() + 30
    while agent.health().get("version") != version:
        assert time.monotonic() < deadline, "the large config was never applied"
        started = time.monotonic()
        with httpx.Client(timeout=10, trust_env=False) as http:
            assert http.get(agent.url("/health/liveness")).status_code == 200
        worst = max(worst, time.monotonic() - started)
    assert agent.health()["last_error"] is None
    assert worst < 1.0, f"liveness took {worst:.2f} s while the config validated"
