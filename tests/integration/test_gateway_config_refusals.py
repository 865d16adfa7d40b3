"""The real gateway refusing configs it cannot serve safely (issue 7 items 4, 5, 6): at start (exit 2, one JSON
error line naming the key, no traceback), on /admin/reload (JSON 422), and what it tells config-sync in
`gateway.status.json`; with no master key at all it serves, but says so loudly and in a metric."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway, VolumeDirs, config_text, gateway_script
from harness.processes import child_env, wait_until
from prometheus_client.parser import text_string_to_metric_families
from routeiq_shared.config_schema import content_version
from routeiq_shared.gateway_files import IDENTITY_FILE, STATUS_FILE, process_start_time

pytestmark = pytest.mark.integration

MASTER_KEY = "sk-refusals-master"
ADMIN_KEY = "admin-refusals"


def config(upstream: FakeUpstream, *, model: str = "openai/fake-fast", master_key: str | None = MASTER_KEY) -> dict:
    cfg: dict[str, Any] = {
        "model_list": [
            {
                "model_name": "fast",
                "litellm_params": {"model": model, "api_base": upstream.base_url, "api_key": "sk-up"},
            }
        ],
        "router_settings": {"num_retries": 0},
    }
    if master_key is not None:
        cfg["general_settings"] = {"master_key": master_key}
    return cfg


def run_to_exit(tmp_path: Path, cfg: dict, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    dirs = VolumeDirs(tmp_path).create()
    dirs.config_path.write_text(config_text(cfg))
    argv = [str(gateway_script()), "--config", str(dirs.config_path), "--host", "127.0.0.1", "--port", "0"]
    return subprocess.run(
        argv, env=child_env({**dirs.env(), **env}), capture_output=True, text=True, timeout=60, check=False
    )


def metric(gw: GatewayHandle, name: str) -> float | None:
    text = httpx.get(gw.url("/metrics"), timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return None


def status_file(gw: GatewayHandle) -> dict[str, Any]:
    return json.loads((gw.dirs.run_dir / STATUS_FILE).read_text())


@pytest.mark.parametrize(
    ("field", "env", "path"),
    [
        ("model", {"EMPTY_MODEL": ""}, "model_list[0].litellm_params.model"),
        ("master_key", {"EMPTY_MASTER": ""}, "general_settings.master_key"),
        ("master_key", {"EMPTY_MASTER": "short\n"}, "general_settings.master_key"),
    ],
)
def test_start_with_an_empty_env_value_exits_2_with_one_json_line_naming_the_key(
    tmp_path: Path, fresh_upstream: FakeUpstream, field: str, env: dict[str, str], path: str
) -> None:
    cfg = config(fresh_upstream)
    if field == "model":
        cfg["model_list"][0]["litellm_params"]["model"] = "os.environ/EMPTY_MODEL"
    else:
        cfg["general_settings"]["master_key"] = "os.environ/EMPTY_MASTER"

    proc = run_to_exit(tmp_path, cfg, env)

    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]  # every line is JSON
    failures = [r for r in records if r.get("event") == "startup_failed"]
    assert len(failures) == 1 and failures[0]["key_path"] == path, proc.stderr
    status = json.loads((tmp_path / "run" / STATUS_FILE).read_text())
    assert status["loaded_version"] is None
    assert status["last_attempt"]["result"] == "failure" and status["last_attempt"]["key_path"] == path


def test_admin_reload_to_an_empty_env_value_is_a_json_422_naming_the_key(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    gw = start_gateway(config(fresh_upstream), env={"ADMIN_API_KEYS": ADMIN_KEY, "EMPTY_MODEL": ""})
    old_version = status_file(gw)["loaded_version"]
    gw.write_config(config(fresh_upstream, model="os.environ/EMPTY_MODEL"))

    refused = httpx.post(gw.admin("/admin/reload"), headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)

    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/json")
    assert refused.json()["reloaded"] is False
    assert "model_list[0].litellm_params.model" in refused.json()["detail"]
    status = status_file(gw)
    assert status["loaded_version"] == old_version
    assert status["last_attempt"]["result"] == "failure"
    assert status["last_attempt"]["version"] == content_version(gw.config_path.read_bytes(), b"")
    assert status["last_attempt"]["key_path"] == "model_list[0].litellm_params.model"


def test_reload_to_an_empty_master_key_is_refused_and_auth_stays_on(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    gw = start_gateway(config(fresh_upstream), env={"ADMIN_API_KEYS": ADMIN_KEY, "EMPTY_MASTER": ""})
    gw.write_config(config(fresh_upstream, master_key="os.environ/EMPTY_MASTER"))

    refused = httpx.post(gw.admin("/admin/reload"), headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)

    assert refused.status_code == 422, refused.text
    assert "general_settings.master_key" in refused.json()["detail"]
    assert httpx.get(gw.url("/v1/models"), timeout=10).status_code == 401  # still closed to keyless clients
    assert metric(gw, "routeiq_auth_disabled") == 0.0


def test_no_master_key_warns_at_start_and_every_reload_and_sets_the_gauge(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    gw = start_gateway(config(fresh_upstream, master_key=None))
    gw.wait_for_log(lambda r: r.get("event") == "auth_disabled" and r.get("level") == "WARNING")
    assert metric(gw, "routeiq_auth_disabled") == 1.0
    assert status_file(gw)["auth_disabled"] is True

    gw.write_config(config(fresh_upstream, master_key=None) | {"router_settings": {"num_retries": 1}})
    gw.reload()
    wait_until(
        lambda: sum(r.get("event") == "auth_disabled" for r in gw.json_logs()) == 2,
        timeout=10,
        detail=lambda: gw.log_text()[-2000:],
    )

    gw.write_config(config(fresh_upstream))  # a key again
    gw.reload()
    wait_until(lambda: metric(gw, "routeiq_auth_disabled") == 0.0, timeout=10)
    assert status_file(gw)["auth_disabled"] is False


def test_identity_beside_the_pidfile_names_this_process(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    gw = start_gateway(config(fresh_upstream))
    identity = json.loads((gw.dirs.run_dir / IDENTITY_FILE).read_text())
    assert identity["pid"] == gw.pid == int((gw.dirs.run_dir / "gateway.pid").read_text())
    assert identity["start_time"] == process_start_time(gw.pid)
    assert identity["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    status = status_file(gw)
    assert status["last_attempt"]["result"] == "success" and status["last_attempt"]["trigger"] == "start"
    assert status["loaded_version"] == content_version(gw.config_path.read_bytes(), b"")
