"""charts/routeiq's Redis values (Sentinel, Cluster, TLS, ACL user): the env they render for the gateway and
model-sync is exactly what routeiq_shared.redis_settings accepts, the manifests validate, passwords come only from
Secret keys, and conflicting values fail at render naming the value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import helm_chart
from harness.helm_chart import KUBE_VERSIONS, render
from harness.redis_topologies import make_tls_files
from routeiq_shared.redis_settings import RedisSettings

SIGNED = {"store": {"modelRegistry": "s3://b/models/"}, "modelSync": {"publicKeySecret": {"name": "k", "key": "k"}}}
SENTINEL_TLS = {
    **SIGNED,
    "redis": {
        "username": "routeiq",
        "passwordSecret": {"name": "redis-auth", "key": "password"},
        "sentinel": {
            "hosts": ["sentinel-0.redis:26379", "sentinel-1.redis:26379", "sentinel-2.redis:26379"],
            "masterName": "mymaster",
            "passwordSecret": {"name": "redis-auth", "key": "sentinel-password"},
            "tls": True,
        },
        "tls": {"enabled": True, "secretName": "redis-tls", "clientCertificate": True},
    },
}
CLUSTER = {**SIGNED, "redis": {"urlSecret": {"name": "redis-url", "key": "url"}, "cluster": True}}


def _env(values: dict[str, Any], container: str) -> dict[str, Any]:
    pod = render(values).one("Deployment")["spec"]["template"]["spec"]
    (found,) = [c for c in pod["containers"] if c["name"] == container]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in found.get("env", []) if "REDIS" in e["name"]}


@pytest.mark.parametrize("values", [SENTINEL_TLS, CLUSTER], ids=["sentinel-tls", "cluster"])
def test_values_pass_the_schema_and_manifests_validate(values: dict[str, Any]) -> None:
    helm_chart.validate_schema(values)
    for obj in render(values).objects():
        if obj["kind"] == "Deployment":
            for kube_version in KUBE_VERSIONS:
                helm_chart.validate_manifest(obj, kube_version)


def test_sentinel_tls_env_is_what_the_processes_accept(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    local = {"ca.crt": files.ca, "tls.crt": files.client_cert, "tls.key": files.client_key}
    gateway, model_sync = _env(SENTINEL_TLS, "gateway"), _env(SENTINEL_TLS, "model-sync")
    assert gateway == model_sync  # one set of settings for both
    for name, value in gateway.items():
        assert "password" not in name.lower() or value["secretKeyRef"]["name"] == "redis-auth"  # only from Secrets
    env = {}
    for name, value in gateway.items():
        if isinstance(value, dict):
            env[name] = "from-secret"
        elif value.startswith("/etc/routeiq/redis-tls/"):
            env[name] = str(local[value.rsplit("/", 1)[1]])  # the mounted Secret's files, here
        else:
            env[name] = value
    settings = RedisSettings.from_env(env)
    assert settings is not None and settings.mode == "sentinel"
    assert settings.sentinels == (("sentinel-0.redis", 26379), ("sentinel-1.redis", 26379), ("sentinel-2.redis", 26379))
    assert settings.tls is not None and settings.tls.cert_file and settings.sentinel_tls is not None
    pod = render(SENTINEL_TLS).one("Deployment")["spec"]["template"]["spec"]
    assert {"name": "redis-tls", "secret": {"secretName": "redis-tls"}} in pod["volumes"]
    for container in pod["containers"]:
        mounted = any(m["name"] == "redis-tls" for m in container.get("volumeMounts", []))
        assert mounted == (container["name"] in ("gateway", "model-sync")), container["name"]


def test_cluster_env_and_default_off() -> None:
    env = _env(CLUSTER, "gateway")
    assert env["REDIS_CLUSTER"] == "1" and env["REDIS_URL"] == {"secretKeyRef": {"name": "redis-url", "key": "url"}}
    settings = RedisSettings.from_env({"REDIS_URL": "redis://10.0.0.1:6379/0", "REDIS_CLUSTER": env["REDIS_CLUSTER"]})
    assert settings is not None and settings.mode == "cluster"
    assert _env(SIGNED, "gateway") == {} and _env(SIGNED, "model-sync") == {}  # off by default


@pytest.mark.parametrize(
    ("redis", "message"),
    [
        ({"sentinel": {"hosts": ["s:26379"]}}, r"redis\.sentinel\.masterName is required"),
        (
            {"sentinel": {"hosts": ["s:26379"], "masterName": "m"}, "urlSecret": {"name": "u", "key": "url"}},
            "both set",
        ),
        ({"cluster": True}, r"redis\.cluster needs redis\.urlSecret"),
        ({"urlSecret": {"name": "u", "key": "url"}, "tls": {"enabled": True}}, r"redis\.tls\.enabled is for Sentinel"),
    ],
)
def test_conflicting_redis_values_fail_naming_the_value(redis: dict[str, Any], message: str) -> None:
    from helm_python.errors import HelmRenderError

    with pytest.raises(HelmRenderError, match=message):
        render({"redis": redis})


def test_a_password_as_a_value_is_refused_by_the_schema() -> None:
    from helm_python.errors import HelmValuesError

    with pytest.raises(HelmValuesError, match="password"):
        helm_chart.validate_schema({"redis": {"sentinel": {"password": "hunter2"}}})
