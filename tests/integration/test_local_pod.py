"""`make run`'s launcher: a working local pod on embedded defaults, and Ctrl-C stops everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from harness.processes import ManagedProcess, child_env, free_port, port_accepts, wait_until

ROOT = Path(__file__).resolve().parents[2]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _route(client: openai.OpenAI, text: str) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": text}])
    return raw.headers["x-routeiq-model"], raw.headers["x-routeiq-router-version"]


def _router_version(client: openai.OpenAI) -> str:
    return _route(client, "hello")[1]


def _answers(client: openai.OpenAI, model: str) -> bool:
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}])
    except openai.NotFoundError:
        return False
    return True


def test_local_pod_serves_the_demo_rolls_config_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    gateway_port, provider_port, s3_port, sync_port = free_port(), free_port(), free_port(), free_port()
    models_port, redis_port, pg_port, admin_port = free_port(), free_port(), free_port(), free_port()
    env = child_env(
        {
            "ROUTEIQ_PORT": str(gateway_port),
            "DEMO_PROVIDER_PORT": str(provider_port),
            "LOCAL_S3_PORT": str(s3_port),
            "CONFIG_SYNC_HEALTH_PORT": str(sync_port),
            "MODEL_SYNC_HEALTH_PORT": str(models_port),
            "LOCAL_REDIS_PORT": str(redis_port),
            "LOCAL_PG_PORT": str(pg_port),
            "ROUTEIQ_ADMIN_PORT": str(admin_port),
            "ROUTEIQ_LOCAL_POD_DIR": str(tmp_path / "pod"),
        }
    )
    pod = ManagedProcess([sys.executable, ROOT / "scripts" / "local_pod.py"], tmp_path / "pod.log", env=env)
    pod.start()
    try:
        pod.wait_http_ok(f"http://127.0.0.1:{gateway_port}/health/readiness", timeout=60)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{gateway_port}/v1", api_key="sk-routeiq-demo")
        for model in ("gpt-4o-mini", "claude-3-haiku"):  # the native path and the LiteLLM path
            reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}])
            assert "demo response" in (reply.choices[0].message.content or "")
        gateway_pid = int((tmp_path / "pod" / "run" / "gateway.pid").read_text())

        # The local PostgreSQL: a virtual key made on the admin port works on the API.
        made = httpx.post(
            f"http://127.0.0.1:{admin_port}/key/generate",
            headers={"Authorization": "Bearer sk-routeiq-admin-demo"},
            json={"models": ["gpt-4o-mini"]},
            timeout=10,
            trust_env=False,
        )
        assert made.status_code == 200, made.text
        keyed = openai.OpenAI(base_url=f"http://127.0.0.1:{gateway_port}/v1", api_key=made.json()["key"])
        assert keyed.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        with pytest.raises(openai.PermissionDeniedError):
            keyed.chat.completions.create(model="claude-3-haiku", messages=[{"role": "user", "content": "Hi"}])

        # The learned router: model-sync installs the signed DEMO router, the gateway swaps it in.
        wait_until(lambda: _router_version(client) == "v1", timeout=30, message="router v1 serving")
        hard = "Prove that the square root of two is irrational"
        assert _route(client, hard) == ("claude-3-haiku", "v1")
        assert _route(client, "Tell me a joke about cats") == ("gpt-4o-mini", "v1")

        # Roll the pod's config as the README shows: the operator's aws CLI against the embedded S3.
        s3_url = f"http://127.0.0.1:{s3_port}"
        aws_env = child_env(
            {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1"}
        )
        aws = [str(Path(sys.executable).with_name("aws")), "--endpoint-url", s3_url, "s3", "cp"]
        current = tmp_path / "config.yaml"
        subprocess.run([*aws, "s3://routeiq-local/prod/config.yaml", str(current)], env=aws_env, check=True)
        cfg = yaml.safe_load(current.read_text())
        alias = {**cfg["model_list"][0], "model_name": "my-new-model"}
        cfg["model_list"].append(alias)
        current.write_text(yaml.safe_dump(cfg))
        subprocess.run([*aws, str(current), "s3://routeiq-local/prod/config.yaml"], env=aws_env, check=True)
        wait_until(lambda: _answers(client, "my-new-model"), timeout=15, message="the rolled config is served")

        pod.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the launcher
        assert pod.wait_exit(timeout=45) == 0
        wait_until(lambda: not pid_alive(gateway_pid), timeout=5, message="gateway process gone")
        assert not port_accepts("127.0.0.1", gateway_port)
        assert not port_accepts("127.0.0.1", provider_port)
        assert not port_accepts("127.0.0.1", pg_port)
        assert "Graceful shutdown" in (tmp_path / "pod.log").read_text()
    finally:
        pod.stop()
