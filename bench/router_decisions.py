"""Decision latency of the gateway's router strategies, in process, on one core: p50/p99 of one `RouterPlan.decide`
per strategy, and what a thread hand-off costs on the event loop (the number routing/offloop.py's inline-or-pool
choice rests on).

    PYTHONPATH=shared:gateway python bench/router_decisions.py [--n 5000] [--cpu 1]

The learned router here is a stand-in of the built-in kind (hashed word n-grams + logistic regression, via
scikit-learn) wrapped in a scorer with score(texts) -> [0, 1]; it is trained on random text, because only its
cost matters. Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from routeiq_gateway.routing.offloop import ScoringRunner
from routeiq_gateway.routing.router_models import LoadedModel
from routeiq_gateway.routing.routers import build_plan
from routeiq_gateway.routing.runtime import RuntimeState
from routeiq_shared.config_schema import Candidate, RouterSpec

WORDS = [f"w{i}" for i in range(3000)]


class HashedLogisticScorer:
    def __init__(self, seed: int = 0) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer
        from sklearn.linear_model import LogisticRegression

        rng = random.Random(seed)
        texts = [" ".join(rng.choices(WORDS, k=rng.randint(5, 60))) for _ in range(2000)]
        labels = [rng.random() < 0.4 for _ in texts]
        self.vectorizer = HashingVectorizer(n_features=2**18, ngram_range=(1, 2), alternate_sign=False)
        self.model = LogisticRegression(max_iter=200).fit(self.vectorizer.transform(texts), labels)

    def score(self, texts: list[str]) -> np.ndarray:
        return self.model.predict_proba(self.vectorizer.transform(texts))[:, 1]


@dataclass(frozen=True)
class Artifact:
    kind: str
    scorer: Any
    default_threshold: float


def first_candidate(text: str, candidates: list[str]) -> str:
    return candidates[0]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 4),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 4),
    }


async def measure(n: int) -> dict[str, Any]:
    prices = {
        "weak": Candidate(input_price=0.1, output_price=0.2, model="weak"),
        "strong": Candidate(input_price=5, output_price=15, model="strong"),
    }
    loaded = LoadedModel("r", "v1", "0" * 64, Artifact("hashed-logistic", HashedLogisticScorer(), 0.5), 0.0)
    specs = {
        "learned": RouterSpec(name="auto", artifact="r", candidates=["weak", "strong"]),
        "cost": RouterSpec(name="auto", strategy="cost", artifact="r", candidates=["weak", "strong"]),
        "latency": RouterSpec(name="auto", strategy="latency", candidates=["weak", "strong"]),
        "random": RouterSpec(name="auto", strategy="random", candidates=["weak", "strong"]),
        "custom": RouterSpec(
            name="auto", strategy="custom", import_path="__main__:first_candidate", candidates=["weak", "strong"]
        ),
    }
    rng = random.Random(1)
    bodies = [
        {"messages": [{"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(5, 60)))}]}
        for _ in range(256)
    ]
    out: dict[str, Any] = {}
    for name, spec in specs.items():
        plan = build_plan(spec, prices)
        runner, runtime = ScoringRunner(), RuntimeState()
        for body in bodies[:50]:  # warm up: the runner measures the scorer and settles inline or pool
            await plan.decide(body, {"r": loaded}, {}, runtime, runner, rng)
        samples = []
        for i in range(n):
            t0 = time.perf_counter()
            await plan.decide(bodies[i % len(bodies)], {"r": loaded}, {}, runtime, runner, rng)
            samples.append(time.perf_counter() - t0)
        out[name] = {**percentiles(samples), "offloaded": runner.offloaded}
        runner.close()
    # The price of running a call in a worker instead of inline: a no-op through run_in_executor.
    pool = ScoringRunner(inline_below=0.0)
    hops = []
    for _ in range(n):
        t0 = time.perf_counter()
        await pool.run("noop", lambda x: x, 1)
        hops.append(time.perf_counter() - t0)
    pool.close()
    out["thread_hop_noop"] = percentiles(hops)
    scorer = loaded.model.scorer
    raw = []
    for i in range(n):
        text = bodies[i % len(bodies)]["messages"][0]["content"]
        t0 = time.perf_counter()
        scorer.score([text])
        raw.append(time.perf_counter() - t0)
    out["scorer_call_only"] = percentiles(raw)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (one core)")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    import uvloop  # the gateway's loop

    print(json.dumps(uvloop.run(measure(args.n))))


if __name__ == "__main__":
    main()
