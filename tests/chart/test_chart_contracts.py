"""The rendered pod keeps DESIGN.md's contracts, taken from the services' own code where the code holds them:
volume paths and who writes each directory, ports, probe paths, the shared process namespace, non-root and
read-only root, the grace period against the drain timeout, and secrets by reference only."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest
import yaml
from harness.helm_chart import CHART_DIR, Rendered, render, value_sets
from routeiq_config_sync.settings import AgentSettings
from routeiq_model_sync.settings import ModelSyncSettings
from routeiq_shared.config_schema import ServerSettings, check_config, load_config
from routeiq_shared.volume import VolumePaths

SETS = value_sets()
PATHS = VolumePaths.from_env({})  # the services' defaults: /app/config, /app/models, /app/run
CONFIG, MODELS, RUN = str(PATHS.config_dir), str(PATHS.models_dir), str(PATHS.run_dir)
# Every directory of the shared volume has exactly one writer (DESIGN.md "Shared volume").
WRITER = {CONFIG: "config-sync", MODELS: "model-sync", RUN: "gateway"}
# Who mounts what: path → read-only?
MOUNTS: dict[str, dict[str, bool]] = {
    "config-sync-init": {CONFIG: False, RUN: True, "/tmp": False},
    "gateway": {CONFIG: True, MODELS: True, RUN: False, "/tmp": False},
    "config-sync": {CONFIG: False, RUN: True, "/tmp": False},
    "model-sync": {MODELS: False, CONFIG: True, "/tmp": False},
}
ALL_SECRETS = {
    "store": {"configSource": "s3://b/c/", "modelRegistry": "s3://b/m/", "credentialsSecret": "aws-keys"},
    "redis": {"urlSecret": {"name": "redis-url", "key": "url"}},
    "database": {"urlSecret": {"name": "pg", "key": "url"}, "readUrlSecret": {"name": "pg-ro", "key": "url"}},
    "gateway": {
        "masterKeySecret": {"name": "master", "key": "k"},
        "adminKeysSecret": {"name": "admin", "key": "k"},
        "providerSecrets": ["providers"],
    },
    "modelSync": {"publicKeySecret": {"name": "signing-pub", "key": "signing.pub"}},
    "configSync": {"gatewayAdminKeySecret": {"name": "admin-one", "key": "k"}},
    "training": {"enabled": True, "signingKeySecret": "signing-key"},
    "ingress": {"enabled": True, "tls": [{"secretName": "tls-cert", "hosts": ["a.example.com"]}]},
}
VALUES = {**SETS, "all-secrets": ALL_SECRETS}
NAMES = sorted(VALUES)


@cache
def rendered(name: str) -> Rendered:
    return render(VALUES[name])


def containers(r: Rendered) -> list[dict[str, Any]]:
    spec = r.pod_spec()
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("name", NAMES)
def test_init_container_and_three_containers_share_one_process_namespace(name: str) -> None:
    r = rendered(name)
    spec = r.pod_spec()
    assert spec["shareProcessNamespace"] is True  # config-sync sends the gateway SIGHUP by pid
    assert [c["name"] for c in spec["initContainers"]] == ["config-sync-init"]
    assert spec["initContainers"][0]["command"] == ["routeiq-config-sync", "--once"]
    names = [c["name"] for c in spec["containers"]]
    with_models = bool(VALUES[name].get("store", {}).get("modelRegistry"))
    assert names[:2] == ["gateway", "config-sync"]
    assert ("model-sync" in names) == with_models
    commands = {c["name"]: c["command"][0] for c in spec["containers"] if c["name"] != "otel-collector"}
    assert commands == {n: f"routeiq-{n}" for n in commands}


@pytest.mark.parametrize("name", NAMES)
def test_volume_mounts_follow_the_design(name: str) -> None:
    r = rendered(name)
    spec = r.pod_spec()
    volumes = {v["name"]: v for v in spec["volumes"]}
    by_path: dict[str, set[str]] = {}
    for c in containers(r):
        if c["name"] not in MOUNTS:
            continue
        mounts = {m["mountPath"]: (m["name"], m.get("readOnly", False)) for m in c["volumeMounts"]}
        expected = dict(MOUNTS[c["name"]])
        if "CONFIG_SOURCE" in env_of(c) and env_of(c)["CONFIG_SOURCE"]["value"].startswith("file:///app/bootstrap/"):
            expected["/app/bootstrap"] = True
        assert {p: ro for p, (_, ro) in mounts.items()} == expected, c["name"]
        for path, (volume, read_only) in mounts.items():
            by_path.setdefault(path, set()).add(volume)
            if path in WRITER and not read_only and c["name"] != "config-sync-init":
                assert WRITER[path] == c["name"], f"{c['name']} must not write {path}"
        # The paths the process looks for are the paths mounted.
        env = env_of(c)
        for var, path in (("ROUTEIQ_CONFIG_DIR", CONFIG), ("ROUTEIQ_MODELS_DIR", MODELS), ("ROUTEIQ_RUN_DIR", RUN)):
            assert env[var]["value"] == path
    for path in WRITER:  # one shared emptyDir per directory, the same volume in every container
        (volume,) = by_path[path]
        assert "emptyDir" in volumes[volume], path
    # podman kube play runs this Deployment: only emptyDir and ConfigMap volumes.
    assert all(set(v) - {"name"} <= {"emptyDir", "configMap"} for v in volumes.values())


@pytest.mark.parametrize("name", NAMES)
def test_ports_and_probes(name: str) -> None:
    r = rendered(name)
    config_sync_port = AgentSettings.from_env({}).health_port
    model_sync_port = ModelSyncSettings.from_env({}).health_port
    gw = r.container("gateway")
    assert gw["ports"] == [
        {"name": "http", "containerPort": 4000, "protocol": "TCP"},
        {"name": "admin", "containerPort": 4001, "protocol": "TCP"},  # the admin API, not in the Service
    ]
    assert gw["args"][gw["args"].index("--port") + 1] == "4000"
    assert gw["args"][gw["args"].index("--admin-port") + 1] == "4001"
    assert gw["readinessProbe"]["httpGet"] == {"path": "/health/readiness", "port": "http"}
    assert gw["livenessProbe"]["httpGet"] == {"path": "/health/liveness", "port": "http"}
    assert gw["startupProbe"]["httpGet"] == {"path": "/health/liveness", "port": "http"}
    sidecars = [("config-sync", config_sync_port)]
    if any(c["name"] == "model-sync" for c in containers(r)):
        sidecars.append(("model-sync", model_sync_port))
    for sidecar, port in sidecars:
        c = r.container(sidecar)
        assert c["ports"] == [{"name": sidecar, "containerPort": port, "protocol": "TCP"}]
        assert env_of(c)["HEALTH_PORT"]["value"] == str(port)
        assert c["livenessProbe"]["httpGet"] == {"path": "/health/liveness", "port": sidecar}
        # A store outage must not take the pod out of the Service: no readiness probe on a sidecar.
        assert "readinessProbe" not in c
    service = r.one("Service")
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports["http"] == (4000, "http")
    assert "admin" not in ports  # off the public path
    assert ports["config-sync"] == (config_sync_port, "config-sync")


def test_defaults_match_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    from routeiq_gateway.cli import parse_args

    for var in ("ROUTEIQ_PORT", "PORT", "ROUTEIQ_ADMIN_PORT"):
        monkeypatch.delenv(var, raising=False)
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["gateway"]["port"] == parse_args([]).port
    assert values["gateway"]["adminPort"] == parse_args([]).admin_port
    assert values["configSync"]["healthPort"] == AgentSettings.from_env({}).health_port
    assert values["modelSync"]["healthPort"] == ModelSyncSettings.from_env({}).health_port
    assert values["gateway"]["drainTimeoutSeconds"] == ServerSettings().drain_timeout_seconds
    assert values["configSync"]["interval"] == AgentSettings.from_env({}).interval
    assert values["modelSync"]["interval"] == ModelSyncSettings.from_env({}).interval


@pytest.mark.parametrize("name", NAMES)
def test_non_root_read_only_root_no_capabilities(name: str) -> None:
    r = rendered(name)
    pod = r.pod_spec()["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in containers(r):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], c["name"]
    # Same uid in every container: config-sync may signal the gateway only as the same user.
    assert not any("runAsUser" in c["securityContext"] for c in containers(r))


@pytest.mark.parametrize("drain", [0, 30, 120, 600])
def test_grace_period_outlasts_the_drain_timeout(drain: int) -> None:
    r = render({"gateway": {"drainTimeoutSeconds": drain}})
    assert r.pod_spec()["terminationGracePeriodSeconds"] > drain
    bootstrap = yaml.safe_load(r.one("ConfigMap")["data"]["config.yaml"])
    assert bootstrap["routeiq"]["server"]["drain_timeout_seconds"] == drain  # what the gateway will drain for


@pytest.mark.parametrize("name", NAMES)
def test_grace_period_in_every_value_set(name: str) -> None:
    values = VALUES[name]
    drain = values.get("gateway", {}).get("drainTimeoutSeconds", ServerSettings().drain_timeout_seconds)
    assert rendered(name).pod_spec()["terminationGracePeriodSeconds"] > drain


SECRET_ENV = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|^REDIS_URL$|^DATABASE")


@pytest.mark.parametrize("name", NAMES)
def test_secrets_by_reference_only(name: str) -> None:
    r = rendered(name)
    assert not r.kind("Secret")
    pods = [r.pod_spec()] + [cj["spec"]["jobTemplate"]["spec"]["template"]["spec"] for cj in r.kind("CronJob")]
    for pod in pods:
        for c in list(pod.get("initContainers", [])) + list(pod["containers"]):
            for var in c.get("env", []):
                if SECRET_ENV.search(var["name"]) and var["name"] != "MODEL_REQUIRE_SIGNATURE":
                    assert "value" not in var and "secretKeyRef" in var["valueFrom"], (c["name"], var["name"])


def test_all_secret_references_are_wired_by_name() -> None:
    r = rendered("all-secrets")
    gw = env_of(r.container("gateway"))
    refs = {n: (e["valueFrom"]["secretKeyRef"]["name"]) for n, e in gw.items() if "valueFrom" in e}
    assert refs == {
        "MODEL_SIGNING_PUBLIC_KEY": "signing-pub",
        "ROUTEIQ_MASTER_KEY": "master",
        "ADMIN_API_KEYS": "admin",
        "REDIS_URL": "redis-url",
        "DATABASE_URL": "pg",
        "DATABASE_READ_URL": "pg-ro",
    }
    assert r.container("gateway")["envFrom"] == [{"secretRef": {"name": "providers"}}]
    ms = env_of(r.container("model-sync"))
    assert ms["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "redis-url"
    assert r.container("config-sync")["envFrom"] == [{"secretRef": {"name": "aws-keys"}}]
    cs = env_of(r.container("config-sync"))  # its fallback reload: the admin port over loopback
    assert cs["GATEWAY_ADMIN_URL"]["value"] == "http://127.0.0.1:4001"
    assert cs["GATEWAY_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "admin-one"


# What secret material looks like: API keys, PEM keys, AWS key ids, credentials inside URLs.
LEAK = re.compile(r"sk-[A-Za-z0-9]{8,}|-----BEGIN|AKIA[0-9A-Z]{12,}|://[^/\s:@]+:[^/\s@]+@")


@pytest.mark.parametrize("name", NAMES)
def test_no_secret_value_anywhere_in_the_output(name: str) -> None:
    assert not LEAK.findall(rendered(name).text)


@pytest.mark.parametrize(
    "config",
    [
        {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m", "api_key": "sk-abcdefgh12345"}}]},
        {"model_list": [{"model_name": "m", "litellm_params": {"model": "x/m", "aws_secret_access_key": "s3cr3t"}}]},
        {
            "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}],
            "general_settings": {"master_key": "sk-master-key-literal"},
        },
    ],
)
def test_a_literal_secret_in_the_bootstrap_config_fails_the_render(config: dict[str, Any]) -> None:
    from helm_python.errors import HelmRenderError

    with pytest.raises(HelmRenderError, match=r"os\.environ/") as exc:
        render({"bootstrapConfig": config})
    assert "abcdefgh12345" not in str(exc.value) and "s3cr3t" not in str(exc.value)


@pytest.mark.parametrize("values", [{}, {"gateway": {"masterKeySecret": {"name": "m", "key": "k"}}}])
def test_the_bootstrap_config_is_one_the_gateway_loads(values: dict[str, Any]) -> None:
    data = render(values).one("ConfigMap")["data"]
    raw = data["config.yaml"].encode()
    check_config(raw)  # config-sync's check
    env = {"OPENAI_API_KEY": "test-key-value", "ROUTEIQ_MASTER_KEY": "a-master-key-of-enough-length"}
    loaded = load_config(raw, None, env)  # the gateway's load, secrets resolved from the pod's env
    assert loaded.config.routeiq.server.drain_timeout_seconds == ServerSettings().drain_timeout_seconds
    assert (loaded.config.general_settings.master_key is not None) == bool(values)


def test_images_come_from_values() -> None:
    images = {
        c: {"repository": f"registry.local/ri/{c}", "tag": "t1", "pullPolicy": "Never"}
        for c in ("gateway", "configSync", "modelSync")
    }
    values = {**ALL_SECRETS, "images": images}
    r = render(values)
    assert r.container("gateway")["image"] == "registry.local/ri/gateway:t1"
    assert (
        r.container("config-sync-init")["image"]
        == r.container("config-sync")["image"]
        == "registry.local/ri/configSync:t1"
    )
    assert r.container("model-sync")["image"] == "registry.local/ri/modelSync:t1"
    assert {c["imagePullPolicy"] for c in containers(r)} == {"Never"}


def test_add_ons_point_at_the_pod() -> None:
    prod, keda, netpol = rendered("production"), rendered("keda"), rendered("ingress-netpol")
    selector = prod.one("Deployment")["spec"]["selector"]["matchLabels"]
    hpa = prod.one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == prod.one("Deployment")["metadata"]["name"]
    assert {m["type"] for m in hpa["metrics"]} == {"Resource", "Pods"}
    assert [m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"] == ["active_streams_count"]
    assert "replicas" not in prod.one("Deployment")["spec"]  # the HPA owns the count
    assert prod.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    monitor = prod.one("ServiceMonitor")["spec"]
    assert {(e["port"], e["path"]) for e in monitor["endpoints"]} == {
        ("http", "/metrics"),
        ("config-sync", "/metrics"),
        ("model-sync", "/metrics"),
    }
    rule = prod.one("PrometheusRule")["spec"]
    assert rule == yaml.safe_load((CHART_DIR / "rules" / "alerts.yaml").read_text())
    scaled = keda.one("ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == keda.one("Deployment")["metadata"]["name"]
    assert "active_streams_count" in scaled["triggers"][0]["metadata"]["query"]
    ingress = netpol.one("Ingress")["spec"]
    assert ingress["tls"] == [{"secretName": "routeiq-tls", "hosts": ["llm.example.com"]}]
    assert ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] == {"name": "http"}
    policy = netpol.one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = sorted(p["port"] for rule in policy["egress"] for p in rule.get("ports", []))
    assert egress_ports == [53, 53, 443, 6379, 9000]  # DNS, providers and S3, Redis, the in-cluster store only


def test_dashboards_ship_as_configmaps_for_the_grafana_sidecar() -> None:
    maps = [m for m in rendered("production").kind("ConfigMap") if m["metadata"]["name"].count("-dashboard-")]
    assert len(maps) == 3
    for m in maps:
        assert m["metadata"]["labels"]["grafana_dashboard"] == "1"
        (body,) = m["data"].values()
        assert yaml.safe_load(body)["uid"].startswith("routeiq-")


URL_ENV = {"AWS_ENDPOINT_URL_S3", "OTEL_EXPORTER_OTLP_ENDPOINT"}


def test_url_settings_pass_the_services_own_check() -> None:
    # A URL the services would refuse at start (metadata or link-local address, bad scheme) must not be rendered.
    from routeiq_shared.egress import check_setting_url

    values = {
        **VALUES["ingress-netpol"],
        "telemetry": {"collector": {"enabled": True}},
    }
    seen = set()
    for c in containers(render(values)):
        for name, var in env_of(c).items():
            if name in URL_ENV:
                check_setting_url(name, var["value"])
                seen.add(name)
    assert seen == URL_ENV
