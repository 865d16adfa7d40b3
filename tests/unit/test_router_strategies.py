"""Router strategies among a virtual model's candidates (routing/routers.py), their config validation, and the
off-loop scoring runner (routing/offloop.py), on constructed cases."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest
from harness.routing_plugins import KeywordScorer, ScoredArtifact
from routeiq_gateway.routing.offloop import ScoringRunner
from routeiq_gateway.routing.router_models import LoadedModel
from routeiq_gateway.routing.routers import Decision, RouterPlan, build_plan
from routeiq_gateway.routing.runtime import RuntimeState
from routeiq_gateway.state import build_state
from routeiq_shared.config_schema import Candidate, ConfigError, RouterSpec, load_config

PRICES = {
    "cheap": Candidate(input_price=0.1, output_price=0.2, model="cheap"),
    "mid": Candidate(input_price=1.0, output_price=2.0, model="mid"),
    "pricey": Candidate(input_price=10.0, output_price=20.0, model="pricey"),
}


def chat(text: str) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


def artifact(threshold: float = 0.5, fail_on: str | None = None) -> LoadedModel:
    model = ScoredArtifact("test", KeywordScorer(fail_on), threshold)
    return LoadedModel("router", "v3", "0" * 64, model, 0.0)


def run(
    plan: RouterPlan,
    text: str,
    models: dict[str, LoadedModel] | None = None,
    runtime: RuntimeState | None = None,
    groups: dict[str, Any] | None = None,
    rng: random.Random | None = None,
) -> Decision:
    return asyncio.run(
        plan.decide(
            chat(text),
            models or {},
            groups or {},
            runtime or RuntimeState(),
            ScoringRunner(),
            rng or random.Random(0),
        )
    )


def spec(**kw: Any) -> RouterSpec:
    return RouterSpec(name="auto", **{"candidates": ["cheap", "pricey"], **kw})


# -- learned -------------------------------------------------------------------------------------------------


def test_learned_scorer_uses_the_artifact_threshold_and_config_overrides_it() -> None:
    plan = build_plan(spec(artifact="router"), PRICES)
    models = {"router": artifact(threshold=0.5)}
    hard = run(plan, "prove and derive this theorem", models)  # score 1.0
    easy = run(plan, "prove it", models)  # score 1/3 < 0.5
    assert (hard.group, hard.score, hard.reason, hard.version, hard.strategy) == (
        "pricey",
        1.0,
        "model",
        "v3",
        "learned",
    )
    assert (easy.group, easy.fallback_reason) == ("cheap", None)
    assert easy.score == pytest.approx(1 / 3)
    # The knob: a lower threshold in config sends the same prompt to the strong model, without retraining.
    lowered = build_plan(spec(artifact="router", threshold=0.3), PRICES)
    assert run(lowered, "prove it", models).group == "pricey"


@pytest.mark.parametrize(
    ("models", "text", "reason"),
    [
        ({}, "prove", "no_model"),
        ({"router": artifact(fail_on="boom")}, "boom prove", "score_failed"),
        ({"router": artifact()}, "", "no_text"),
    ],
)
def test_learned_falls_back_and_says_why(models: dict[str, LoadedModel], text: str, reason: str) -> None:
    plan = build_plan(spec(artifact="router", fallback="pricey"), PRICES)
    decision = run(plan, text, models)
    assert (decision.group, decision.reason, decision.fallback_reason, decision.answered_by) == (
        "pricey",
        reason,
        reason,
        "group",
    )


def test_a_score_out_of_range_is_a_scoring_failure() -> None:
    class Broken:
        def score(self, texts: list[str]) -> list[float]:
            return [1.7]

    models = {"router": LoadedModel("router", "v1", "0" * 64, ScoredArtifact("x", Broken(), 0.5), 0.0)}
    assert run(build_plan(spec(artifact="router"), PRICES), "hi", models).fallback_reason == "score_failed"


# -- cost ----------------------------------------------------------------------------------------------------


def test_cost_without_a_model_is_the_cheapest_by_llm_candidates_prices() -> None:
    plan = build_plan(spec(strategy="cost", candidates=["mid", "pricey", "cheap"]), PRICES)
    assert plan.by_price == ("cheap", "mid", "pricey")
    decision = run(plan, "anything")
    assert (decision.group, decision.reason, decision.strategy) == ("cheap", "strategy", "cost")


def test_cost_with_a_binary_scorer_is_weak_unless_the_score_clears() -> None:
    plan = build_plan(spec(strategy="cost", artifact="router", candidates=["pricey", "cheap"], threshold=0.6), PRICES)
    models = {"router": artifact()}
    assert run(plan, "prove it", models).group == "cheap"  # 0.33 < 0.6: the cheap one clears
    assert run(plan, "prove, derive", models).group == "pricey"  # 0.67 >= 0.6


def test_unknown_prices_go_last() -> None:
    plan = build_plan(spec(strategy="cost", candidates=["unpriced", "pricey"]), PRICES)
    assert plan.by_price == ("pricey", "unpriced")


# -- latency, random -----------------------------------------------------------------------------------------


def test_latency_picks_the_lowest_ewma_candidate_and_unmeasured_first() -> None:
    st = build_state(
        load_config(
            b"""
model_list:
  - {model_name: cheap, litellm_params: {model: openai/c, api_base: "http://127.0.0.1:1/v1"}}
  - {model_name: pricey, litellm_params: {model: openai/p, api_base: "http://127.0.0.1:2/v1"}}
routeiq:
  routers: [{name: auto, strategy: latency, candidates: [cheap, pricey]}]
""",
            None,
            {},
        ),
        created=0,
    )
    plan, runtime = st.router_plans["auto"], RuntimeState()
    (cheap,), (pricey,) = st.groups["cheap"], st.groups["pricey"]
    runtime.succeeded(cheap.id, 0.8, stream=False)
    assert run(plan, "x", runtime=runtime, groups=st.groups).group == "pricey"  # not measured yet
    runtime.succeeded(pricey.id, 0.2, stream=False)
    assert run(plan, "x", runtime=runtime, groups=st.groups).group == "pricey"
    for _ in range(10):
        runtime.succeeded(pricey.id, 2.0, stream=False)
    assert run(plan, "x", runtime=runtime, groups=st.groups).group == "cheap"
    assert st.measure  # a latency router makes requests measure


def test_random_follows_weights() -> None:
    plan = build_plan(
        spec(strategy="random", candidates=["cheap", "mid", "pricey"], weights={"cheap": 3, "mid": 1}), {}
    )
    rng = random.Random(11)
    counts = Counter(run(plan, "x", rng=rng).group for _ in range(2000))
    assert counts["pricey"] == 0  # not weighted: never
    assert 0.72 <= counts["cheap"] / 2000 <= 0.78, counts


# -- custom --------------------------------------------------------------------------------------------------


def test_custom_class_is_built_once_with_params_and_function_is_used_as_is() -> None:
    plan = build_plan(
        spec(
            strategy="custom",
            import_path="harness.routing_plugins:KeywordRouter",
            params={"keyword": "urgent", "target": "pricey"},
        ),
        {},
    )
    assert run(plan, "urgent: fix prod").group == "pricey"
    assert run(plan, "hello").group == "cheap"
    fn = build_plan(spec(strategy="custom", import_path="harness.routing_plugins:last_candidate"), {})
    assert (run(fn, "x").group, run(fn, "x").reason) == ("pricey", "strategy")


@pytest.mark.parametrize(
    ("import_path", "reason"),
    [
        ("harness.no_such_module:router", "import_failed"),
        ("harness.routing_plugins:no_such_name", "import_failed"),
        ("harness.routing_plugins:RefusesParams", "import_failed"),
        ("harness.routing_plugins:raising_router", "custom_failed"),
        ("harness.routing_plugins:HARD_WORDS", "import_failed"),  # not callable
    ],
)
def test_custom_router_that_does_not_import_or_raises_falls_back(import_path: str, reason: str) -> None:
    plan = build_plan(spec(strategy="custom", import_path=import_path, fallback="cost"), PRICES)
    decision = run(plan, "x")
    assert (decision.group, decision.fallback_reason, decision.answered_by) == ("cheap", reason, "cost")


def test_custom_router_answering_a_non_candidate_falls_back() -> None:
    plan = build_plan(
        spec(
            strategy="custom",
            import_path="harness.routing_plugins:KeywordRouter",
            params={"keyword": "", "target": "gpt-9"},
        ),
        {},
    )
    assert run(plan, "x").fallback_reason == "unknown_choice"


def test_fallback_strategy_random_answers() -> None:
    plan = build_plan(spec(artifact="router", fallback="random"), {})
    decision = run(plan, "x")
    assert decision.answered_by == "random" and decision.group in ("cheap", "pricey")


# -- config validation ---------------------------------------------------------------------------------------

BASE = """
model_list:
  - {model_name: cheap, litellm_params: {model: openai/c, api_base: "http://127.0.0.1:1/v1"}}
  - {model_name: pricey, litellm_params: {model: openai/p, api_base: "http://127.0.0.1:2/v1"}}
routeiq:
  routers: [%s]
"""


@pytest.mark.parametrize(
    ("router", "path", "words"),
    [
        ("{name: auto, strategy: smartest, candidates: [cheap]}", "routeiq.routers[0].strategy", "learned"),
        ("{name: auto, artifact: r, threshold: 1.5, candidates: [cheap]}", "routeiq.routers[0].threshold", "1"),
        ("{name: auto, artifact: r, threshold: -0.1, candidates: [cheap]}", "routeiq.routers[0].threshold", "0"),
        (
            "{name: auto, strategy: custom, import_path: 'not a path', candidates: [cheap]}",
            "routeiq.routers[0].import_path",
            "pattern",
        ),
        (
            "{name: auto, strategy: custom, import_path: 'pkg.mod', candidates: [cheap]}",
            "routeiq.routers[0].import_path",
            "pattern",
        ),
        ("{name: auto, strategy: custom, candidates: [cheap]}", "routeiq.routers[0]", "import_path"),
        ("{name: auto, strategy: learned, candidates: [cheap]}", "routeiq.routers[0]", "artifact"),
        ("{name: auto, candidates: [cheap]}", "routeiq.routers[0]", "strategy"),
        (
            "{name: auto, strategy: cost, candidates: [cheap, gpt-9]}",
            "routeiq.routers[0].candidates[1]",
            "not in model_list",
        ),
        ("{name: auto, strategy: random, weights: {gpt-9: 1}, candidates: [cheap]}", "routeiq.routers[0]", "gpt-9"),
        ("{name: auto, strategy: random, weights: {cheap: 0}, candidates: [cheap]}", "routeiq.routers[0]", "positive"),
        (
            "{name: auto, strategy: cost, fallback: fastest, candidates: [cheap]}",
            "routeiq.routers[0].fallback",
            "neither",
        ),
    ],
)
def test_router_config_is_validated(router: str, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config((BASE % router).encode(), None, {})
    assert err.value.path == path, err.value
    assert words in str(err.value)


def test_valid_router_configs_load() -> None:
    routers = ", ".join(
        [
            "{name: a1, artifact: r, threshold: 0.3, candidates: [cheap, pricey], fallback: latency}",
            "{name: a2, strategy: custom, import_path: 'harness.routing_plugins:last_candidate', candidates: [cheap]}",
            "{name: a3, strategy: random, weights: {cheap: 1}, candidates: [cheap, pricey], fallback: pricey}",
        ]
    )
    st = build_state(load_config((BASE % routers).encode(), None, {}), created=0)
    assert {n: p.strategy for n, p in st.router_plans.items()} == {"a1": "learned", "a2": "custom", "a3": "random"}
    assert st.router_artifacts == {"r"}


# -- off the loop --------------------------------------------------------------------------------------------


def test_scoring_runner_keeps_cheap_calls_inline_and_slow_ones_off_the_loop() -> None:
    runner = ScoringRunner(inline_below=0.005)
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def cheap(x: int) -> int:
        seen.append(threading.get_ident())
        return x + 1

    def slow(x: int) -> int:
        time.sleep(0.02)  # stands in for a heavy model; the assertion is on where it ran, not on time
        seen.append(threading.get_ident())
        return x

    async def main() -> None:
        assert await runner.run("cheap", cheap, 1) == 2  # unknown cost: measured in the pool first
        assert await runner.run("cheap", cheap, 1) == 2  # then known cheap: inline
        await runner.run("slow", slow, 0)
        await runner.run("slow", slow, 0)
        # While a slow call runs in the pool, the loop still runs other work.
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(ticker())
        await runner.run("slow", slow, 0)
        task.cancel()
        assert ticks > 10

    asyncio.run(main())
    assert seen[0] != loop_thread and seen[1] == loop_thread
    assert all(t != loop_thread for t in seen[2:])
    assert runner.offloaded == 4
    runner.close()


def test_scoring_runner_batches_requests_that_arrive_while_a_batch_is_scored() -> None:
    runner = ScoringRunner(inline_below=0.0)  # never inline: the batching path
    calls: list[list[str]] = []
    release = threading.Event()

    def score(texts: list[str]) -> list[float]:
        calls.append(list(texts))
        if len(calls) == 1:
            release.wait(5)  # the first batch is "slow" until every other request has queued behind it
        if "bad" in texts:
            raise ValueError("cannot score 'bad'")
        return [len(t) / 10 for t in texts]

    async def main() -> list[Any]:
        first = asyncio.ensure_future(runner.run_batched("m", score, "a"))
        await asyncio.sleep(0)  # the first batch starts with "a" alone
        rest = [asyncio.ensure_future(runner.run_batched("m", score, t)) for t in ("bb", "bad", "cccc")]
        await asyncio.sleep(0)
        release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    results = asyncio.run(main())
    assert results[0] == 0.1 and results[1] == 0.2 and results[3] == 0.4
    assert isinstance(results[2], ValueError)  # only the bad prompt failed
    # One call for "a", one batch for the three that queued, then one by one after that batch failed.
    assert calls[:2] == [["a"], ["bb", "bad", "cccc"]]
    assert calls[2:] == [["bb"], ["bad"], ["cccc"]]
    assert runner.largest_batch == 3
    runner.close()


def test_scoring_runner_scores_a_cheap_models_prompts_of_one_loop_turn_in_one_call_on_the_loop() -> None:
    runner = ScoringRunner(inline_below=10.0)  # every call counts as cheap once measured
    loop_thread = threading.get_ident()
    calls: list[tuple[int, list[str]]] = []

    def score(texts: list[str]) -> list[float]:
        calls.append((threading.get_ident(), list(texts)))
        if "bad" in texts:
            raise ValueError("cannot score 'bad'")
        return [len(t) / 10 for t in texts]

    async def main() -> list[Any]:
        assert await runner.run_batched("m", score, "a") == 0.1  # unknown cost: measured in the pool first
        # Requests reaching the router in one turn of the loop: one call for all of them, on the loop, after it.
        return await asyncio.gather(
            *(runner.run_batched("m", score, t) for t in ("bb", "bad", "cccc")), return_exceptions=True
        )

    results = asyncio.run(main())
    assert results[0] == 0.2 and results[2] == 0.4 and isinstance(results[1], ValueError)
    assert calls[0][0] != loop_thread and calls[0][1] == ["a"]
    assert calls[1] == (loop_thread, ["bb", "bad", "cccc"])
    assert [c[1] for c in calls[2:]] == [["bb"], ["bad"], ["cccc"]]  # the failed batch, one by one
    assert all(thread == loop_thread for thread, _ in calls[1:])
    assert runner.inline_batches == 1 and runner.offloaded == 1
    runner.close()


def test_scoring_runner_holds_the_loop_for_at_most_inline_batch_prompts_per_call() -> None:
    from routeiq_gateway.routing.offloop import INLINE_BATCH

    runner = ScoringRunner(inline_below=10.0)
    sizes: list[int] = []

    def score(texts: list[str]) -> list[int]:
        sizes.append(len(texts))
        return [len(t) for t in texts]

    async def main() -> list[int]:
        await runner.run_batched("m", score, "a")
        texts = ["x" * i for i in range(INLINE_BATCH + 6)]
        return list(await asyncio.gather(*(runner.run_batched("m", score, t) for t in texts)))

    assert asyncio.run(main()) == list(range(INLINE_BATCH + 6))
    assert sizes == [1, INLINE_BATCH, 6]
    runner.close()
