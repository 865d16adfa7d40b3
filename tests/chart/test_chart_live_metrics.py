"""Every metric the chart's dashboards, alerts and autoscalers read is one the services really export, and every
endpoint the chart probes or `helm test` calls answers: checked against the live gateway and both agents.

Real processes over loopback: the gateway (with the fake upstream), config-sync on a file:// source, model-sync
on a file:// registry with a signing key, all three on one volume as in the pod.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.helm_chart import CHART_DIR, alert_rules, dashboard_queries, metric_names, render
from harness.router_artifacts import keygen
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}


def exported_names(metrics_text: str) -> set[str]:
    """Sample names an exposition declares: a family exports its samples' names even before its first sample
    (a labelled counter with no child yet still has its # TYPE line)."""
    names = set()
    for family in text_string_to_metric_families(metrics_text):
        suffixes = SAMPLE_SUFFIXES.get(family.type)
        names |= {family.name + s for s in suffixes} if suffixes else {family.name}
        names |= {sample.name for sample in family.samples}
    return names


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


@dataclass
class Pod:
    bases: dict[str, str]  # container name → http://127.0.0.1:port

    def exported(self) -> set[str]:
        names: set[str] = set()
        for base in self.bases.values():
            status, text = get(f"{base}/metrics")
            assert status == 200
            names |= exported_names(text)
        return names


@pytest.fixture
def pod(start_gateway: Any, start_config_sync: Any, start_model_sync: Any, fresh_upstream: Any, tmp_path: Path) -> Pod:
    """The three processes on one volume, one chat completion served."""
    deployment = {"model": "openai/gpt-4o-mini", "api_base": fresh_upstream.base_url, "api_key": "x"}
    config = {"model_list": [{"model_name": "fast", "litellm_params": deployment}]}
    source, registry = tmp_path / "store", tmp_path / "registry"
    source.mkdir()
    registry.mkdir()
    (source / "config.yaml").write_text(yaml.safe_dump(config))
    keys = keygen(tmp_path / "keys")
    gateway = start_gateway(config)
    config_sync = start_config_sync(f"file://{source}/")
    model_sync = start_model_sync(f"file://{registry}/", public_key=keys.public, env={"MODEL_NAMES": "router"})
    reply = gateway.openai_client().chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    return Pod({"gateway": gateway.base_url, "config-sync": config_sync.base_url, "model-sync": model_sync.base_url})


def value_set(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART_DIR / "ci" / f"{name}-values.yaml").read_text())
    return values


def test_dashboards_alerts_and_autoscalers_read_exported_metrics(pod: Pod) -> None:
    exported = pod.exported()
    assert metric_names("rate(routeiq_no_such_metric_total[5m])") - exported  # the check can fail
    recorded = {rule["record"] for rule in alert_rules() if "record" in rule}

    missing = {}
    for dashboard, queries in dashboard_queries().items():
        assert queries, dashboard
        for query in queries:
            if unknown := metric_names(query) - exported:
                missing[f"{dashboard}: {query}"] = sorted(unknown)
    for rule in alert_rules():
        if unknown := metric_names(rule["expr"]) - exported - recorded:
            missing[rule.get("alert") or rule["record"]] = sorted(unknown)
    assert not missing, missing

    hpa = render(value_set("production")).one("HorizontalPodAutoscaler")["spec"]
    pods_metrics = {m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"}
    assert pods_metrics and pods_metrics <= exported
    keda = render(value_set("keda")).one("ScaledObject")["spec"]
    assert metric_names(keda["triggers"][0]["metadata"]["query"]) <= exported


def test_the_chart_s_probe_and_helm_test_endpoints_answer(pod: Pod) -> None:
    r = render(value_set("minimal"))
    for container in ("gateway", "config-sync", "model-sync"):
        c = r.container(container)
        probes = [c[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe") if p in c]
        assert probes, container
        for path in probes:
            assert get(pod.bases[container] + path)[0] == 200, (container, path)
    ports = {str(port["port"]): port["targetPort"] for port in r.one("Service")["spec"]["ports"]}
    target_container = {"http": "gateway", "config-sync": "config-sync", "model-sync": "model-sync"}
    urls = r.one("Pod")["spec"]["containers"][0]["args"][1:]  # the `helm test` pod's URLs
    assert len(urls) == 4
    for url in urls:
        port, path = url.split(":", 2)[2].split("/", 1)
        assert get(f"{pod.bases[target_container[ports[port]]]}/{path}")[0] == 200, url
