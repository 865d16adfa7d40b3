"""The rendered init container, run for real: the chart's own command and environment (the pod's paths moved
under a temporary directory), the bootstrap ConfigMap laid out as the kubelet mounts one (files behind `..data`
symlinks), and the real `routeiq-config-sync --once` installs the config a gateway then starts on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from harness.config_sync_process import run_config_sync
from harness.helm_chart import render
from harness.processes import child_env

pytestmark = pytest.mark.integration


def mount_configmap(data: dict[str, str], target: Path) -> None:
    """A ConfigMap volume as the kubelet writes it: a timestamped dir, `..data` → it, each key → `..data/key`."""
    stamped = target / "..2026_01_01_00_00_00.000000001"
    stamped.mkdir(parents=True)
    for key, text in data.items():
        (stamped / key).write_text(text)
    (target / "..data").symlink_to(stamped.name)
    for key in data:
        (target / key).symlink_to(f"..data/{key}")


def pod_env(container: dict[str, Any], root: Path) -> dict[str, str]:
    """The container's plain env with every /app/… and /tmp path moved under root."""
    pod_path = re.compile(r"/app/|/tmp(?=/|$)")
    return {var["name"]: pod_path.sub(lambda m: f"{root}{m.group(0)}", var["value"]) for var in container["env"]}


def test_the_rendered_init_container_installs_the_bootstrap_config(start_gateway: Any, tmp_path: Path) -> None:
    rendered = render({"gateway": {"masterKeySecret": {"name": "master", "key": "k"}}})
    init = rendered.container("config-sync-init")
    bootstrap = rendered.one("ConfigMap")["data"]
    volume = tmp_path  # the gateway fixture's volume: tmp_path/config, run, models
    for mount in init["volumeMounts"]:
        (volume / mount["mountPath"].removeprefix("/")).mkdir(parents=True, exist_ok=True)
    mount_configmap(bootstrap, volume / "app" / "bootstrap")
    env = pod_env(init, volume)
    assert env["CONFIG_SOURCE"] == f"file://{volume}/app/bootstrap/"
    env.update(ROUTEIQ_CONFIG_DIR=str(volume / "config"), ROUTEIQ_RUN_DIR=str(volume / "run"))

    done = run_config_sync(init["command"][1:], child_env(env))
    assert done.returncode == 0, done.stderr
    installed = (volume / "config" / "config.yaml").read_text()
    assert installed == bootstrap["config.yaml"]

    # The gateway starts on it, with the secrets the pod's Secrets would give it.
    gateway = start_gateway(installed, env={"OPENAI_API_KEY": "test-key", "ROUTEIQ_MASTER_KEY": "m" * 24})
    models = gateway.openai_client(api_key="m" * 24).models.list()
    assert [m.id for m in models.data] == ["gpt-4o-mini"]
