"""Routing strategies in a running gateway: deployment strategies keep what they measured across a SIGHUP,
routers of every kind answer from config (a signed scorer artifact with its threshold knob, a custom router
imported from tests/harness/routing_plugins.py, latency, random), a custom router that does not import or
raises hands over to its fallback and says so, and every routed request's span carries the decision."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import joblib
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway
from harness.otlp_collector import OtlpCollector, SpanRecord
from harness.router_artifacts import keygen
from harness.routing_plugins import KeywordScorer, ScoredArtifact
from prometheus_client.parser import text_string_to_metric_families
from routeiq_model_sync.registry import build_manifest
from routeiq_shared.atomic import atomic_write
from routeiq_shared.signing import load_private_key, sign_manifest

pytestmark = pytest.mark.integration

MASTER = "sk-routing-master-key"
TESTS_DIR = Path(__file__).resolve().parents[1]  # so the gateway imports harness.routing_plugins
ROUTER_ATTRIBUTES = (
    "router.strategy",
    "router.candidates",
    "router.selected_model",
    "router.score",
    "router.latency_ms",
    "router.model_version",
)


def plugin_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, **(extra or {})}


def dep(upstream: FakeUpstream, name: str, model: str) -> dict[str, Any]:
    params = {"model": f"openai/{model}", "api_base": upstream.base_url, "api_key": "sk-up"}
    return {"model_name": name, "litellm_params": params}


def ask(gw: GatewayHandle, model: str, text: str = "hello") -> httpx.Response:
    response = httpx.post(
        gw.url("/v1/chat/completions"),
        json={"model": model, "messages": [{"role": "user", "content": text}]},
        headers={"authorization": f"Bearer {MASTER}"},
        timeout=10,
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    return response


def metric(gw: GatewayHandle, name: str, **labels: str) -> float:
    text = httpx.get(gw.url("/metrics"), timeout=5, trust_env=False).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def reload_and_wait(gw: GatewayHandle) -> None:
    mark = len(gw.json_logs())
    gw.reload()
    gw.wait_for_log(lambda r: r.get("event") == "config_reload" and r.get("result") == "success", after=mark)


# -- deployment strategy state across a reload ---------------------------------------------------------------


def test_latency_based_routing_keeps_its_measurements_across_sighup(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    fresh_upstream.add_rule(model="sluggish", delay_ms=150)

    def config(extra_groups: int) -> dict[str, Any]:
        return {
            "model_list": [
                dep(fresh_upstream, "g", "quick"),
                dep(fresh_upstream, "g", "sluggish"),
                *(dep(fresh_upstream, f"other{i}", "quick") for i in range(extra_groups)),
            ],
            "router_settings": {"num_retries": 0, "routing_strategy": "latency-based-routing"},
            "general_settings": {"master_key": MASTER},
        }

    gw = start_gateway(config(0))

    def served() -> list[str]:
        return [r["body"]["model"] for r in fresh_upstream.requests("/v1/chat/completions")]

    for _ in range(6):
        ask(gw, "g")
    # Both measured once (unmeasured first), then the quick one only.
    assert sorted(served()[:2]) == ["quick", "sluggish"] and set(served()[2:]) == {"quick"}, served()

    gw.write_config(config(1))  # a different config: the state object is rebuilt, the deployments are not
    reload_and_wait(gw)
    fresh_upstream.clear_requests()
    for _ in range(4):
        ask(gw, "g")
    # Had the reload dropped the EWMAs, both deployments would be unmeasured again and tried first.
    assert served() == ["quick"] * 4


# -- routers, end to end -------------------------------------------------------------------------------------


def install_scorer_artifact(gw_root: Path, keys_dir: Path, name: str, version: str, threshold: float) -> Path:
    """A ScoredArtifact (the router-artifact contract's shape) signed into the models directory."""
    models = gw_root / "models"
    models.mkdir(parents=True, exist_ok=True)
    keys = keygen(keys_dir)
    path = models / f"{name}.pkl"
    joblib.dump(ScoredArtifact("keyword", KeywordScorer(fail_on="unscorable"), threshold), path)
    manifest = build_manifest(name, version, path, {}, "sha256:test", 1)
    signed = sign_manifest(manifest, load_private_key(keys.private))
    atomic_write(models / f"{name}.manifest.json", signed.to_json())
    return keys.public


def routers_config(upstream: FakeUpstream, threshold: float) -> dict[str, Any]:
    return {
        "model_list": [dep(upstream, "fast", "fake-fast"), dep(upstream, "strong", "fake-strong")],
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER},
        "routeiq": {
            "routers": [
                {"name": "auto", "artifact": "kw-router", "candidates": ["fast", "strong"], "threshold": threshold},
                {
                    "name": "kw",
                    "strategy": "custom",
                    "import_path": "harness.routing_plugins:KeywordRouter",
                    "params": {"keyword": "urgent", "target": "strong"},
                    "candidates": ["fast", "strong"],
                },
                {
                    "name": "broken",
                    "strategy": "custom",
                    "import_path": "harness.routing_plugins:raising_router",
                    "candidates": ["fast", "strong"],
                    "fallback": "strong",
                },
                {
                    "name": "missing",
                    "strategy": "custom",
                    "import_path": "harness.no_such_module:router",
                    "candidates": ["strong", "fast"],
                    "fallback": "random",
                },
                {"name": "lat", "strategy": "latency", "candidates": ["fast", "strong"]},
                {"name": "rnd", "strategy": "random", "candidates": ["fast", "strong"], "weights": {"strong": 1}},
            ]
        },
    }


def routed_spans(collector: OtlpCollector, count: int) -> list[SpanRecord]:
    def done(spans: list[SpanRecord]) -> bool:
        return sum(1 for s in spans if s.kind == "SERVER" and "router.strategy" in s.attributes) >= count

    spans = collector.wait_for_spans(done, timeout=15)
    return [s for s in spans if s.kind == "SERVER" and s.name == "POST /v1/chat/completions"]


def test_routers_of_every_kind_answer_from_config_and_every_routed_span_says_why(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, otlp_collector: OtlpCollector, tmp_path: Path
) -> None:
    public = install_scorer_artifact(tmp_path, tmp_path / "keys", "kw-router", "v5", threshold=0.5)
    env = plugin_env({"MODEL_SIGNING_PUBLIC_KEY": str(public), **otlp_collector.env("routeiq-gateway")})
    gw = start_gateway(routers_config(fresh_upstream, 0.5), env=env)
    gw.wait_for_log(lambda r: r.get("event") == "model_load" and r.get("result") == "ok", timeout=30)

    # learned: score 1/3 for one hard word, 1.0 for three; threshold 0.5
    easy, hard = ask(gw, "auto", "please prove this"), ask(gw, "auto", "prove, derive, theorem")
    assert (easy.headers["x-routeiq-model"], hard.headers["x-routeiq-model"]) == ("fast", "strong")
    assert easy.headers["x-routeiq-router"] == "auto" and easy.headers["x-routeiq-router-version"] == "v5"
    unscorable = ask(gw, "auto", "unscorable prove derive theorem")  # the scorer raises: default = first candidate
    assert unscorable.headers["x-routeiq-model"] == "fast"
    # custom, plugged in from config
    assert ask(gw, "kw", "urgent: the site is down").headers["x-routeiq-model"] == "strong"
    assert ask(gw, "kw", "whenever you can").headers["x-routeiq-model"] == "fast"
    # a custom router that raises, and one that does not import: their fallbacks answer
    assert ask(gw, "broken", "x").headers["x-routeiq-model"] == "strong"
    assert ask(gw, "missing", "x").headers["x-routeiq-model"] in ("fast", "strong")
    assert ask(gw, "lat").headers["x-routeiq-model"] in ("fast", "strong")
    assert {ask(gw, "rnd").headers["x-routeiq-model"] for _ in range(5)} == {"strong"}
    routed = 13

    spans = routed_spans(otlp_collector, routed)
    with_router = [s for s in spans if "router.strategy" in s.attributes]
    assert len(with_router) == routed == len(spans)  # 100% of routed requests carry the decision
    for span in with_router:
        missing = [a for a in ROUTER_ATTRIBUTES if a not in span.attributes]
        assert not missing, (span.attributes, missing)
        assert span.attributes["router.selected_model"] == span.attributes["routeiq.model_group"]
        assert span.attributes["router.candidates"] in (["fast", "strong"], ["strong", "fast"])
    by_reason = Counter((s.attributes["router.name"], s.attributes.get("router.fallback_reason")) for s in with_router)
    assert by_reason[("auto", "score_failed")] == 1
    assert by_reason[("broken", "custom_failed")] == 1
    assert by_reason[("missing", "import_failed")] == 1
    scores = sorted(s.attributes["router.score"] for s in with_router if s.attributes["router.name"] == "auto")
    assert scores[1:] == pytest.approx([1 / 3, 1.0]) and scores[0] == -1.0  # -1: the failed one has none
    assert all(
        s.attributes["router.model_version"] == "v5" for s in with_router if s.attributes["router.name"] == "auto"
    )

    assert metric(gw, "routeiq_router_decisions_total", router="broken", reason="custom_failed") == 1.0
    assert metric(gw, "routeiq_router_decisions_total", router="missing", reason="import_failed") == 1.0
    assert metric(gw, "routeiq_router_decisions_total", router="auto", model="strong", reason="model") == 1.0
    assert metric(gw, "routeiq_router_decision_seconds_count", strategy="learned") == 3.0
    assert metric(gw, "routeiq_router_decision_seconds_count", strategy="custom") == 4.0
    load_error = gw.wait_for_log(lambda r: r.get("event") == "router_load" and r.get("router") == "missing")
    assert "ModuleNotFoundError" in load_error["reason"]

    # The knob: a lower threshold by reload sends the one-hard-word prompt to the strong model, same artifact.
    gw.write_config(routers_config(fresh_upstream, 0.3))
    reload_and_wait(gw)
    again = ask(gw, "auto", "please prove this")
    assert (again.headers["x-routeiq-model"], again.headers["x-routeiq-router-version"]) == ("strong", "v5")


# -- A/B and canary ------------------------------------------------------------------------------------------


def ab_config(upstream: FakeUpstream, last_weight: float, cost_weight: float) -> dict[str, Any]:
    arms = [
        {"name": "last", "weight": last_weight, "strategy": "custom", "import_path": LAST_CANDIDATE},
        {"name": "cheapest", "weight": cost_weight, "strategy": "cost"},
    ]
    return {
        "model_list": [dep(upstream, "fast", "fake-fast"), dep(upstream, "strong", "fake-strong")],
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER},
        "routeiq": {"routers": [{"name": "ab", "candidates": ["fast", "strong"], "arms": arms}]},
    }


LAST_CANDIDATE = "harness.routing_plugins:last_candidate"
ARM_SERVES = {"last": "strong", "cheapest": "fast"}  # custom last_candidate → strong; cost, no prices → first


def ask_as(gw: GatewayHandle, user: str | None) -> tuple[str, str]:
    body: dict[str, Any] = {"model": "ab", "messages": [{"role": "user", "content": "hi"}]}
    if user is not None:
        body["user"] = user
    response = httpx.post(
        gw.url("/v1/chat/completions"),
        json=body,
        headers={"authorization": f"Bearer {MASTER}"},
        timeout=10,
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    return response.headers["x-routeiq-router-arm"], response.headers["x-routeiq-model"]


def test_router_arms_split_callers_sticky_per_user_on_header_span_and_metric_and_reload_drains_an_arm(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, otlp_collector: OtlpCollector
) -> None:
    gw = start_gateway(ab_config(fresh_upstream, 50, 50), env=plugin_env(otlp_collector.env("routeiq-gateway")))
    users = [f"user-{n}" for n in range(30)]
    first = {u: ask_as(gw, u) for u in users}
    assert all(ARM_SERVES[arm] == model for arm, model in first.values()), first  # each arm is its own router
    assert {arm for arm, _ in first.values()} == {"last", "cheapest"}  # 30 users over 50/50: both arms serve
    assert {u: ask_as(gw, u) for u in users} == first  # sticky per user
    # No user: the API key decides, and every request here presents the same one.
    assert len({ask_as(gw, None) for _ in range(5)}) == 1
    routed = 2 * len(users) + 5

    spans = routed_spans(otlp_collector, routed)
    arms_on_spans = Counter(s.attributes["router.arm"] for s in spans if "router.arm" in s.attributes)
    headers_count = Counter(arm for arm, _ in first.values())
    for arm in ("last", "cheapest"):
        assert (
            metric(gw, "routeiq_router_decisions_total", router="ab", arm=arm, model=ARM_SERVES[arm])
            == (arms_on_spans[arm])
        )
        assert arms_on_spans[arm] >= 2 * headers_count[arm]
    assert sum(arms_on_spans.values()) == routed
    assert all(s.attributes["router.selected_model"] == ARM_SERVES[s.attributes["router.arm"]] for s in spans)

    # Drain the "last" arm by reload: everyone, whichever arm they had, now gets "cheapest".
    gw.write_config(ab_config(fresh_upstream, 0, 100))
    reload_and_wait(gw)
    assert {ask_as(gw, u) for u in users} == {("cheapest", "fast")}
