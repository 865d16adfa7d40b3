"""`routeiq-config-sync rollout` validates what prod would hold, as the pods would, before changing it: a rollback
does not bring back an upload the fleet refused, and a promote does not need the pods' secrets in the operator's
shell (unless `--resolve-env`). Real moto S3 (versioned bucket), the real CLI and the `aws` CLI."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.config_sync_process import AwsCli, run_config_sync, sha256_hex
from harness.moto_s3 import MotoS3
from harness.processes import child_env

pytestmark = pytest.mark.integration


def config_bytes(models: list[str], **extra: Any) -> bytes:
    config = {
        "model_list": [
            {"model_name": m, "litellm_params": {"model": f"openai/{m}", "api_key": "os.environ/PROVIDER_KEY"}}
            for m in models
        ],
        **extra,
    }
    return yaml.safe_dump(config, sort_keys=False).encode()


@pytest.fixture
def aws(moto_s3: MotoS3, tmp_path: Path) -> AwsCli:
    return AwsCli.for_moto(moto_s3, tmp_path / "aws")


def prod_config(moto_s3: MotoS3, bucket: str) -> bytes:
    body: bytes = moto_s3.client().get_object(Bucket=bucket, Key="prod/config.yaml")["Body"].read()
    return body


def test_promote_checks_references_syntax_not_the_operators_environment(moto_s3: MotoS3, aws: AwsCli) -> None:
    bucket = moto_s3.new_bucket("promote-env")
    prod, canary = f"s3://{bucket}/prod/", f"s3://{bucket}/canary/"
    aws.upload(config_bytes(["steady"]), f"{prod}config.yaml")
    trial = config_bytes(["steady", "trial"])
    aws.upload(trial, f"{canary}config.yaml")
    env = child_env(moto_s3.env())  # PROVIDER_KEY is the pods' secret: not set here

    resolved = run_config_sync(["rollout", "promote", "--from", canary, "--to", prod, "--resolve-env"], env)
    assert resolved.returncode != 0
    assert "model_list[0].litellm_params.api_key" in resolved.stderr and "PROVIDER_KEY" in resolved.stderr
    assert prod_config(moto_s3, bucket) == config_bytes(["steady"])

    promoted = run_config_sync(["rollout", "promote", "--from", canary, "--to", prod], env)
    assert promoted.returncode == 0, promoted.stderr
    assert prod_config(moto_s3, bucket) == trial

    bad_ref = trial.replace(b"os.environ/PROVIDER_KEY", b"os.environ/PROVIDER-KEY")
    aws.upload(bad_ref, f"{canary}config.yaml")
    refused = run_config_sync(["rollout", "promote", "--from", canary, "--to", prod], env)
    assert refused.returncode != 0 and "os.environ/NAME" in refused.stderr
    assert prod_config(moto_s3, bucket) == trial


@pytest.mark.parametrize("bad", ["sha256-mismatch", "invalid"])
def test_rollback_refuses_a_version_the_fleet_refused(moto_s3: MotoS3, aws: AwsCli, bad: str) -> None:
    bucket = moto_s3.new_bucket("rollback-check")
    aws.enable_versioning(bucket)
    prod = f"s3://{bucket}/prod/"
    good = config_bytes(["steady"])
    aws.upload(good, f"{prod}config.yaml")
    time.sleep(1.1)  # S3's LastModified has one-second resolution: keep the versions in order
    if bad == "sha256-mismatch":
        # an upload whose bytes are not what the uploader declared (the agents refused it as incomplete)
        refused = config_bytes(["steady", "half"])
        aws.upload(refused, f"{prod}config.yaml", metadata={"sha256": sha256_hex(b"something else")})
        reason = "sha256"
    else:
        refused = config_bytes(["steady"], router_settings={"num_retrys": 1})
        aws.upload(refused, f"{prod}config.yaml")
        reason = "router_settings.num_retrys: unknown key"
    time.sleep(1.1)
    current = config_bytes(["steady", "current"])
    aws.upload(current, f"{prod}config.yaml")

    rolled = run_config_sync(["rollout", "rollback", "--source", prod], child_env(moto_s3.env()))

    assert rolled.returncode != 0, rolled.stdout
    assert reason in rolled.stderr, rolled.stderr
    assert prod_config(moto_s3, bucket) == current  # nothing restored

    two_back = run_config_sync(["rollout", "rollback", "--source", prod, "--steps", "2"], child_env(moto_s3.env()))
    assert two_back.returncode == 0, two_back.stderr
    assert prod_config(moto_s3, bucket) == good
