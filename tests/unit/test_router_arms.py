"""A/B and canary of routers (`routeiq.routers[].arms`, routing/arms.py): the split lands on its weights, is
sticky per caller (the request's `user`, else its API key), each arm is a complete router, and validation
names the key path."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from routeiq_gateway.routing.arms import ArmSplit, caller_of
from routeiq_gateway.routing.offloop import ScoringRunner
from routeiq_gateway.routing.routers import RouterPlan
from routeiq_gateway.routing.runtime import RuntimeState
from routeiq_gateway.state import build_state
from routeiq_model_sync.wanted import wanted_models
from routeiq_shared.config_schema import ConfigError, load_config

BASE = """
model_list:
  - {model_name: cheap, litellm_params: {model: openai/cheap, api_key: sk-x}}
  - {model_name: pricey, litellm_params: {model: openai/pricey, api_key: sk-x}}
routeiq:
  routers:
    - %s
"""


def arms_share(weights: list[float], users: int = 2000) -> list[float]:
    split = ArmSplit.of("auto", [(f"arm{i}", w) for i, w in enumerate(weights)])
    rng = random.Random(0)
    picks = Counter(split.pick(caller_of({"user": f"user-{n}"}, None), rng) for n in range(users))
    return [picks[i] / users for i in range(len(weights))]


@pytest.mark.parametrize("weights", [[90, 10], [50, 30, 20], [0.9, 0.1]])
def test_the_split_lands_within_3_percent_of_its_weights_over_2000_users(weights: list[float]) -> None:
    total = sum(weights)
    for share, weight in zip(arms_share(weights), weights, strict=True):
        assert abs(share - weight / total) <= 0.03, (weights, arms_share(weights))


def test_a_weight_of_zero_drains_its_arm() -> None:
    assert arms_share([0, 100]) == [0.0, 1.0]
    assert arms_share([100, 0]) == [1.0, 0.0]
    assert arms_share([50, 0, 50])[1] == 0.0


def test_the_same_user_always_gets_the_same_arm_and_the_api_key_stands_in_without_one() -> None:
    split = ArmSplit.of("auto", [("a", 50), ("b", 50)])
    rng = random.Random(1)
    for n in range(50):
        user = {"user": f"u{n}"}
        assert len({split.pick(caller_of(user, b"sk-any"), rng) for _ in range(20)}) == 1
    # Without `user`, the presented key decides: the same key, the same arm; keys spread over both arms.
    by_key = {k: {split.pick(caller_of({}, f"sk-{k}".encode()), rng) for _ in range(10)} for k in range(40)}
    assert all(len(arms) == 1 for arms in by_key.values())
    assert {next(iter(arms)) for arms in by_key.values()} == {0, 1}
    # The user, when there is one, wins over the key; an empty user does not count.
    assert caller_of({"user": "alice"}, b"sk-1") == caller_of({"user": "alice"}, b"sk-2")
    assert caller_of({"user": ""}, b"sk-1") != caller_of({"user": ""}, b"sk-2")
    # Neither: a random draw, so an anonymous caller may land on either arm.
    assert caller_of({}, None) is None
    assert {split.pick(None, rng) for _ in range(100)} == {0, 1}


def test_the_hash_is_stable_across_processes_and_salted_by_router() -> None:
    # blake2b, not hash(): a fixed input has a fixed arm in every process (PYTHONHASHSEED does not matter).
    a = ArmSplit.of("auto", [("a", 50), ("b", 50)])
    b = ArmSplit.of("other", [("a", 50), ("b", 50)])
    users = [caller_of({"user": f"u{n}"}, None) for n in range(200)]
    rng = random.Random(0)
    assert [a.pick(u, rng) for u in users] == [a.pick(u, rng) for u in users]
    assert [a.pick(u, rng) for u in users] != [b.pick(u, rng) for u in users]


ARMED = (
    "{name: auto, candidates: [cheap, pricey], fallback: pricey, arms: ["
    "{name: control, weight: 90, strategy: cost},"
    "{name: canary, weight: 10, strategy: custom, import_path: 'harness.routing_plugins:last_candidate'}]}"
)


def decide(plan: RouterPlan, body: dict[str, Any], key: bytes | None) -> tuple[str, str]:
    arm_plan, arm = plan.for_caller(caller_of(body, key), random.Random(0))
    decision = asyncio.run(arm_plan.decide(body, {}, {}, RuntimeState(), ScoringRunner(), random.Random(0)))
    assert decision.router == "auto"
    return arm, decision.group


def test_each_arm_is_a_complete_router_inheriting_candidates_and_fallback() -> None:
    state = build_state(load_config((BASE % ARMED).encode(), None, {}), created=0)
    plan = state.router_plans["auto"]
    assert plan.arms is not None and plan.arms.names == ("control", "canary")
    assert [p.strategy for p in plan.arm_plans] == ["cost", "custom"]
    assert all(p.spec.candidates == ["cheap", "pricey"] and p.spec.fallback == "pricey" for p in plan.arm_plans)
    seen = {decide(plan, {"user": f"u{n}", "messages": []}, None) for n in range(200)}
    assert seen == {("control", "cheap"), ("canary", "pricey")}  # cost → cheapest; last_candidate → pricey
    # A router without arms decides as itself.
    plain = build_state(load_config((BASE % "{name: auto, strategy: cost, candidates: [cheap]}").encode(), None, {}), 0)
    assert plain.router_plans["auto"].for_caller(b"u:x", random.Random(0)) == (plain.router_plans["auto"], "")


@pytest.mark.parametrize(
    ("arms", "path", "words"),
    [
        ("[{name: a, weight: 1, strategy: cost}]", "routeiq.routers[0].arms", "at least 2"),
        ("[{name: a, weight: 1, strategy: cost}, {name: a, weight: 1, strategy: random}]", "arms[1].name", "unique"),
        ("[{name: a, weight: 0, strategy: cost}, {name: b, weight: 0, strategy: random}]", "arms", "positive"),
        ("[{name: a, weight: -1, strategy: cost}, {name: b, weight: 1, strategy: random}]", "arms[0].weight", "0"),
        ("[{name: a, weight: 1, strategy: cost}, {name: b, weight: 1, strategy: custom}]", "arms[1]", "import_path"),
        ("[{name: a, weight: 1, strategy: cost}, {name: b, weight: 1, strategy: learned}]", "arms[1]", "artifact"),
        ("[{name: a, weight: 1, strategy: cost}, {name: b, weight: 1, threshold: 2, artifact: r}]", "arms[1]", "1"),
        (
            "[{name: a, weight: 1, strategy: cost}, {name: b, weight: 1, strategy: random, weights: {x: 1}}]",
            "arms[1]",
            "'x'",
        ),
        (
            "[{name: a, weight: 1, strategy: cost}, {name: b, weight: 1, strategy: cost, candidates: [x]}]",
            "arms[1].candidates",
            "unknown key",
        ),
        (
            "[{name: a, weight: 1, artifact: r, model_version: v1},"
            " {name: b, weight: 1, artifact: r, model_version: v2}]",
            "arms[1].model_version",
            "two artifact names",
        ),
    ],
)
def test_arms_are_validated_and_errors_name_the_key_path(arms: str, path: str, words: str) -> None:
    router = f"{{name: auto, candidates: [cheap, pricey], arms: {arms}}}"
    with pytest.raises(ConfigError) as err:
        load_config((BASE % router).encode(), None, {})
    full = path if path.startswith("routeiq") else f"routeiq.routers[0].{path}"
    assert err.value.path.startswith(full), err.value
    assert words in str(err.value)


def test_model_sync_and_the_gateway_want_every_arms_artifact(tmp_path: Path) -> None:
    router = (
        "{name: auto, artifact: base, candidates: [cheap, pricey], arms: ["
        "{name: control, weight: 90}, {name: canary, weight: 10, artifact: challenger, model_version: v9},"
        "{name: cheap, weight: 0, strategy: cost, artifact: base}]}"
    )
    config = tmp_path / "config.yaml"
    config.write_text(BASE % router)
    assert wanted_models(config, ()) == {"base": None, "challenger": "v9"}
    state = build_state(load_config(config.read_bytes(), None, {}), created=0)
    assert state.router_artifacts == {"base", "challenger"}
