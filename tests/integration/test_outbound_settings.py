"""Outbound URLs from settings (issue 7, item 19): a process told to call a link-local or metadata address (the
sidecars' admin, S3 and Redis endpoints; every process's OTLP exporter) refuses to start, and says so as one JSON
line naming the variable — never a request to it, never a traceback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from harness.config_sync_process import agent_env, run_config_sync
from harness.gateway_process import VolumeDirs, config_text, gateway_script
from harness.model_sync_process import model_sync_env, run_model_sync
from harness.processes import child_env

pytestmark = pytest.mark.integration


def startup_failure(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]  # every line is JSON
    failures = [r for r in records if r.get("event") == "startup_failed"]
    assert len(failures) == 1, proc.stderr
    return failures[0]


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("GATEWAY_ADMIN_URL", "http://0251.0376.0251.0376:4001"),  # 169.254.169.254, octal
        ("AWS_ENDPOINT_URL_S3", "http://metadata.google.internal"),
    ],
)
def test_config_sync_refuses_a_metadata_endpoint_by_name(tmp_path: Path, variable: str, url: str) -> None:
    env = agent_env(VolumeDirs(tmp_path).create(), "s3://bucket/prod/", extra={variable: url})
    failure = startup_failure(run_config_sync(["--once"], env, timeout=30))
    assert str(failure["reason"]).startswith(f"{variable}: ") and "metadata" in str(failure["reason"])


def test_model_sync_refuses_a_metadata_redis_by_name(tmp_path: Path) -> None:
    env = model_sync_env(VolumeDirs(tmp_path).create(), "file:///nonexistent/", redis_url="redis://2852039166:6379/0")
    failure = startup_failure(run_model_sync(["--once"], env, timeout=30))
    assert str(failure["reason"]).startswith("REDIS_URL: ")


def test_gateway_refuses_an_otlp_endpoint_at_a_metadata_address(tmp_path: Path) -> None:
    dirs = VolumeDirs(tmp_path).create()
    dirs.config_path.write_text(config_text({"model_list": []}))
    argv = [str(gateway_script()), "--config", str(dirs.config_path), "--host", "127.0.0.1", "--port", "0"]
    env = child_env({**dirs.env(), "OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::ffff:169.254.169.254]:4318"})
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    failure = startup_failure(proc)
    assert str(failure["reason"]).startswith("OTEL_EXPORTER_OTLP_ENDPOINT: ")


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("HTTPS_PROXY", "https://user:hunter2@proxy.example:3128", "http:// proxy URL"),
        ("ROUTEIQ_UPSTREAM_POOL_WAIT_SECONDS", "-1", "expected a positive float"),
    ],
)
def test_gateway_refuses_upstream_settings_it_cannot_honour(
    tmp_path: Path, variable: str, value: str, words: str
) -> None:
    """A proxy the native client cannot use is refused at start, never ignored (its credentials never shown)."""
    dirs = VolumeDirs(tmp_path).create()
    dirs.config_path.write_text(config_text({"model_list": []}))
    argv = [str(gateway_script()), "--config", str(dirs.config_path), "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.run(
        argv, env=child_env({**dirs.env(), variable: value}), capture_output=True, text=True, timeout=60, check=False
    )
    failure = startup_failure(proc)
    assert str(failure["reason"]).startswith(f"{variable}") and words in str(failure["reason"])
    assert "hunter2" not in proc.stderr
