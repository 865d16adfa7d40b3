"""charts/routeiq for tests: rendered and linted by Helm's own engine (helm-python-sdk), offline; manifests
validated against Kubernetes' schemas (kubernetes-validate); PromQL metric names picked out of dashboards and rules.

The tools come from `make chart-tools` (part of `make setup`); a missing one fails with that hint, never a skip.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "routeiq"
VALUE_SETS_DIR = CHART_DIR / "ci"
RELEASE = "riq"
NAMESPACE = "routeiq"
KUBE_VERSIONS = ("1.29.0", "1.32.0")
TOOLS_HINT = "run `make chart-tools` (or `make setup`)"
# Kinds of cluster add-ons (prometheus-operator, KEDA): no schema in kubernetes-validate, checked by the tests.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}


def value_sets() -> dict[str, dict[str, Any]]:
    """The chart's defaults ({}) and every value set under charts/routeiq/ci/, by name."""
    sets: dict[str, dict[str, Any]] = {"default": {}}
    for path in sorted(VALUE_SETS_DIR.glob("*-values.yaml")):
        sets[path.name.removesuffix("-values.yaml")] = yaml.safe_load(path.read_text()) or {}
    return sets


def _helm() -> Any:
    try:
        import helm_python
    except ImportError as exc:
        raise AssertionError(f"helm-python-sdk is not installed: {TOOLS_HINT}") from exc
    return helm_python


@dataclass(frozen=True)
class Rendered:
    """One render of the chart: template path → text, and the parsed objects."""

    files: Mapping[str, str]

    @property
    def text(self) -> str:
        return "\n".join(self.files.values())

    def objects(self) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        for name, text in sorted(self.files.items()):
            if name.endswith("NOTES.txt"):
                continue
            docs.extend(d for d in yaml.safe_load_all(text) if d)
        return docs

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects() if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.kind(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    def pod_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.one("Deployment")["spec"]["template"]["spec"]
        return spec

    def container(self, name: str) -> dict[str, Any]:
        spec = self.pod_spec()
        for c in spec.get("initContainers", []) + spec["containers"]:
            if c["name"] == name:
                found: dict[str, Any] = c
                return found
        raise AssertionError(f"no container {name!r} in the Deployment")


def render(values: Mapping[str, Any] | None = None) -> Rendered:
    """`helm template` of the chart with these values (Helm's engine, no cluster)."""
    helm = _helm()
    with helm.Chart.load(str(CHART_DIR)) as chart:
        files = chart.render(values=dict(values or {}), name=RELEASE, namespace=NAMESPACE, is_install=True)
    return Rendered({k: v for k, v in files.items() if v.strip()})


def validate_schema(values: Mapping[str, Any]) -> None:
    """Raise (helm_python.HelmValuesError) when values.schema.json refuses these values."""
    helm = _helm()
    with helm.Chart.load(str(CHART_DIR)) as chart:
        chart.validate_schema(dict(values))


def lint(values: Mapping[str, Any], kube_version: str) -> dict[str, Any]:
    """`helm lint --strict` findings for these values at a Kubernetes version."""
    report: dict[str, Any] = _helm().lint(str(CHART_DIR), dict(values), strict=True, kube_version=f"v{kube_version}")
    return report


def validate_manifest(obj: Mapping[str, Any], kube_version: str) -> None:
    """Strict validation (no unknown fields) against that Kubernetes version's OpenAPI schemas."""
    try:
        import kubernetes_validate
    except ImportError as exc:
        raise AssertionError(f"kubernetes-validate is not installed: {TOOLS_HINT}") from exc
    kubernetes_validate.validate(dict(obj), kube_version, strict=True)


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, f"promtool is not installed (Debian's prometheus package): {TOOLS_HINT}"
    return path


# -- PromQL: which metric names a query reads --------------------------------------------------------------

_PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric (or recording-rule) names a PromQL expression selects. Grafana's $variables, strings, label
    matchers, grouping clauses, ranges and function calls are not names."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables ($__rate_interval, ${datasource})
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = m.group(0)
        rest = text[m.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _PROMQL_WORDS:
            continue  # a function or an operator
        if re.fullmatch(r"\d+[smhdwy]", word) or text[m.start() - 1 : m.start()].isdigit():
            continue  # a duration or a number's exponent
        names.add(word)
    return names


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def dashboard_queries() -> dict[str, list[str]]:
    """Every PromQL query of every dashboard (panel targets and template variables), by file name."""
    queries: dict[str, list[str]] = {}
    for path in sorted((CHART_DIR / "dashboards").glob("*.json")):
        found: list[str] = []
        for node in _walk(json.loads(path.read_text())):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            query = node.get("query")
            if isinstance(query, dict) and isinstance(query.get("query"), str):
                found.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", query["query"]))
        queries[path.name] = found
    return queries


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((CHART_DIR / "rules" / "alerts.yaml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]
