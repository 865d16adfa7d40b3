"""gateway.providerSecretFiles: Secrets mounted as files where the gateway reads `os.file/` secrets by default, in
the gateway only, read-only, whole (a subPath mount would never see the kubelet's updates); off by default."""

from __future__ import annotations

import os
from typing import Any

import pytest
from harness import helm_chart
from harness.helm_chart import KUBE_VERSIONS, render
from routeiq_shared.config_schema import check_config, load_config
from routeiq_shared.secret_files import DEFAULT_SECRET_DIRS

VALUES = {"gateway": {"providerSecretFiles": ["provider-keys", "other.keys"]}}


def _secret_mounts(container: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in container.get("volumeMounts", []) if m["name"].startswith("secret-files-")]


def test_nothing_is_mounted_by_default() -> None:
    r = render({})
    assert not [v for v in r.pod_spec()["volumes"] if "secret" in v]
    assert not _secret_mounts(r.container("gateway"))


def test_each_secret_is_mounted_read_only_in_the_gateway_under_an_allowed_directory() -> None:
    r = render(VALUES)
    spec = r.pod_spec()
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = _secret_mounts(r.container("gateway"))
    assert [(m["mountPath"], m["readOnly"]) for m in mounts] == [
        ("/var/run/secrets/routeiq/provider-keys", True),
        ("/var/run/secrets/routeiq/other.keys", True),
    ]
    for mount, name in zip(mounts, VALUES["gateway"]["providerSecretFiles"], strict=True):
        assert "subPath" not in mount
        assert volumes[mount["name"]]["secret"] == {"secretName": name, "defaultMode": 0o440}
        assert os.path.dirname(mount["mountPath"]) == DEFAULT_SECRET_DIRS[0]  # the gateway's own default
    others = [c for c in list(spec["initContainers"]) + list(spec["containers"]) if c["name"] != "gateway"]
    assert all(not _secret_mounts(c) for c in others)
    for obj in r.objects():
        if obj["kind"] == "Deployment":
            for kube_version in KUBE_VERSIONS:
                helm_chart.validate_manifest(obj, kube_version)
    for kube_version in KUBE_VERSIONS:
        report = helm_chart.lint(VALUES, kube_version)
        assert not [m for m in report["messages"] if m["severity"] >= 2] and not report["errors"], report


@pytest.mark.parametrize("bad", [["Provider_Keys"], ["a", "a"], [""]])
def test_the_schema_refuses_what_is_not_a_secret_name(bad: list[str]) -> None:
    from helm_python.errors import HelmValuesError

    with pytest.raises(HelmValuesError, match="providerSecretFiles"):
        helm_chart.validate_schema({"gateway": {"providerSecretFiles": bad}})


def test_a_bootstrap_config_may_name_a_mounted_file(tmp_path: Any) -> None:
    key = "/var/run/secrets/routeiq/provider-keys/OPENAI_API_KEY"
    config = {
        "model_list": [
            {"model_name": "m", "litellm_params": {"model": "openai/m", "api_key": f"os.file{key}"}},
        ],
        "general_settings": {"master_key": "os.file/var/run/secrets/routeiq/provider-keys/MASTER_KEY"},
    }
    raw = render({**VALUES, "bootstrapConfig": config}).one("ConfigMap")["data"]["config.yaml"].encode()
    check_config(raw)  # config-sync's check: the syntax only
    secrets = tmp_path / "provider-keys"
    secrets.mkdir()
    (secrets / "OPENAI_API_KEY").write_text("sk-from-the-file\n")
    (secrets / "MASTER_KEY").write_text("a-master-key-of-enough-length\n")
    moved = raw.replace(b"/var/run/secrets/routeiq/", f"{tmp_path}/".encode())
    loaded = load_config(moved, None, {"ROUTEIQ_SECRET_DIRS": str(tmp_path)})  # the gateway's load
    assert loaded.config.model_list[0].litellm_params.api_key == "sk-from-the-file"
