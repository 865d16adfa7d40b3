"""charts/routeiq: Helm's lint, the values schema, and every rendered manifest validated strictly against the
Kubernetes 1.29 and 1.32 schemas, for the defaults and each value set the issue names."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from harness import helm_chart
from harness.helm_chart import CRD_KINDS, KUBE_VERSIONS, render, value_sets

SETS = value_sets()


def test_the_issue_s_value_sets_exist() -> None:
    assert set(SETS) >= {"default", "minimal", "production", "keda", "ingress-netpol"}


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", sorted(SETS))
def test_lint_strict(name: str, kube_version: str) -> None:
    report = helm_chart.lint(SETS[name], kube_version)
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 = warning, 3 = error
    assert report["total_charts_linted"] == 1
    assert not problems and not report["errors"], (problems, report["errors"])


@pytest.mark.parametrize("name", sorted(SETS))
def test_value_sets_pass_the_schema(name: str) -> None:
    helm_chart.validate_schema(SETS[name])


@pytest.mark.parametrize(
    ("values", "refused"),
    [
        ({"redis": {"url": "redis://:hunter2@redis:6379"}}, "url"),  # a secret as a value: no such key
        ({"gateway": {"masterKey": "sk-live-123"}}, "masterKey"),
        ({"store": {"configSource": "https://bucket.s3.amazonaws.com/prod/"}}, "configSource"),
        ({"gateway": {"port": 0}}, "port"),
        ({"modelSync": {"publicKeySecret": {"name": "Not_A_Name", "key": "k"}}}, "name"),
        ({"replicaCount": "two"}, "replicaCount"),
    ],
)
def test_schema_refuses_bad_values_by_name(values: dict[str, Any], refused: str) -> None:
    from helm_python.errors import HelmValuesError

    with pytest.raises(HelmValuesError, match=refused):
        helm_chart.validate_schema(values)


@pytest.mark.parametrize("name", sorted(SETS))
def test_every_manifest_validates_strictly(name: str) -> None:
    objects = render(SETS[name]).objects()
    assert objects
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue  # add-on kinds: their fields are asserted in test_chart_contracts.py
        for kube_version in KUBE_VERSIONS:
            helm_chart.validate_manifest(obj, kube_version)


def test_strict_validation_catches_an_unknown_field() -> None:
    # The validator itself must be strict, or the test above proves nothing.
    deployment = copy.deepcopy(render({}).one("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFS"] = True
    for kube_version in KUBE_VERSIONS:
        with pytest.raises(Exception, match="readOnlyRootFS"):
            helm_chart.validate_manifest(deployment, kube_version)


def test_only_core_and_known_add_on_kinds_are_rendered() -> None:
    core_groups = {"apps", "policy", "autoscaling", "networking.k8s.io", "batch"}
    for values in SETS.values():
        for obj in render(values).objects():
            api, kind = obj["apiVersion"], obj["kind"]
            assert api == "v1" or api.split("/")[0] in core_groups or (api, kind) in CRD_KINDS, (api, kind)


def test_the_value_sets_render_what_they_name() -> None:
    kinds = {name: {o["kind"] for o in render(values).objects()} for name, values in SETS.items()}
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"} <= kinds["production"]
    assert "ScaledObject" in kinds["keda"] and "HorizontalPodAutoscaler" not in kinds["keda"]
    assert {"Ingress", "NetworkPolicy"} <= kinds["ingress-netpol"]
    add_ons = {"HorizontalPodAutoscaler", "ScaledObject", "ServiceMonitor", "PodMonitor", "PrometheusRule", "Ingress"}
    assert not kinds["default"] & add_ons and not kinds["minimal"] & add_ons  # off by default


def test_conflicting_or_incomplete_values_fail_with_a_message() -> None:
    from helm_python.errors import HelmRenderError

    with pytest.raises(HelmRenderError, match="enable one"):
        render({"autoscaling": {"enabled": True}, "keda": {"enabled": True}})
    with pytest.raises(HelmRenderError, match=r"modelSync\.publicKeySecret\.name is required"):
        render({"store": {"modelRegistry": "s3://b/models/"}})


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (model) (rate(routeiq_requests_total{status=~"5..", ns="$x"}[$__rate_interval]))',
            {"routeiq_requests_total"},
        ),
        ("histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m]))) > 0.05", {"a_bucket"}),
        ("time() - b_seconds > 900", {"b_seconds"}),
        ('x:ratio_rate1h > 14.4 * 0.0005 and y{a="b"} or on (pod) z offset 1h', {"x:ratio_rate1h", "y", "z"}),
        ("1 - c / d > 1e-3", {"c", "d"}),
    ],
)
def test_metric_names_of_a_query(expr: str, names: set[str]) -> None:
    assert helm_chart.metric_names(expr) == names
