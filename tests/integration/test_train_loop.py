"""The closed loop, end to end (issue 8, "Show"): `routeiq-train` trains a router on a sample and publishes it,
signed, to moto's S3 as CURRENT; the model-sync agent fetches and installs it; a running gateway swaps it in and
answers `auto` with that version. A second version then takes over the same way, with no restart of anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import StartGateway
from harness.model_sync_process import StartModelSync
from harness.moto_s3 import MotoS3
from harness.processes import wait_until
from harness.router_artifacts import keygen
from harness.train_data import make_rows, run_train, write_csv

pytestmark = pytest.mark.integration

NAME = "loop-router"
MASTER = "sk-loop-master"


def train(*args: str | Path, env: dict[str, str] | None = None) -> str:
    done = run_train(*args, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def config(upstream: FakeUpstream) -> dict[str, Any]:
    def group(name: str) -> dict[str, Any]:
        params = {"model": f"openai/fake-{name}", "api_base": upstream.base_url, "api_key": "sk-up"}
        return {"model_name": name, "litellm_params": params}

    return {
        "model_list": [group("weak"), group("strong")],
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER},
        "routeiq": {
            "routers": [{"name": "auto", "artifact": NAME, "strategy": "learned", "candidates": ["weak", "strong"]}]
        },
    }


def router_version(client: openai.OpenAI) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "What is the derivative of x^2?"}]
    )
    assert raw.status_code == 200
    assert raw.headers["x-routeiq-model"] in ("weak", "strong")
    return raw.headers["x-routeiq-router-version"]


def test_a_trained_router_reaches_a_running_gateway_through_the_registry_and_model_sync(
    start_gateway: StartGateway,
    start_model_sync: StartModelSync,
    moto_s3: MotoS3,
    s3_bucket: str,
    fresh_upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    keys = keygen(tmp_path / "keys")
    registry = f"s3://{s3_bucket}/models/"
    s3 = moto_s3.env()
    data = write_csv(tmp_path / "sample.csv", make_rows(300, seed=11))

    gw = start_gateway(config(fresh_upstream), env={"MODEL_SIGNING_PUBLIC_KEY": str(keys.public)})
    client = gw.openai_client(api_key=MASTER)
    assert router_version(client) == "none"  # no model yet: the router's default answers

    agent = start_model_sync(registry, s3_env=s3, public_key=keys.public, fallback_delay_max=0.0)
    for version, seed in (("v1", "1"), ("v2", "2")):
        artifact = tmp_path / f"{version}.joblib"
        train("train", "--router", "logistic", "--data", data, "--out", artifact, "--seed", seed)
        train(
            "publish", "--artifact", artifact, "--name", NAME, "--version", version, "--registry", registry,
            "--key", keys.private, "--set-current", "--force",  # --force: the gate compares seeds' noise here
            env=s3,
        )  # fmt: skip
        agent.wait_version(NAME, version, timeout=60)
        wait_until(lambda v=version: router_version(client) == v, 30, message=f"gateway routes with {version}")
