"""Decision latency of the gateway's router strategies, in process, on one core: p50/p99 of one
`RouterPlan.decide` (the gateway's path: prompt extraction, ScoringRunner inline-or-worker, the scorer, the
threshold) for every built-in learned kind and every model-free strategy, on real MMLU prompts.

    PYTHONPATH=shared:gateway:train .venv/bin/python bench/router_decisions.py --cpu 1

The learned kinds are trained here by routeiq-train's own fitters (FITTERS) on the fit part of its default
held-out split (seed 42, 20% held out) of ../shared/data/routellm-mmlu/train.csv, or read from `--artifacts DIR`
(files written by `routeiq-train train --out DIR/KIND.joblib`); the prompts timed are the held-out ones, which
no router trained on, cycled in a seeded random order. One BLAS thread (OPENBLAS_NUM_THREADS=1, as the gateway
scores) and, with --cpu, one core. Prints a Markdown table, the command that reproduces it, and one JSON object
on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MMLU = Path("data") / "routellm-mmlu" / "train.csv"
# ../shared beside the repository (a worktree's may be further up: /work/shared)
DEFAULT_DATA = next((p for p in (REPO.parent / "shared" / MMLU, Path("/work/shared") / MMLU) if p.is_file()), MMLU)
SYSTEM = "You are a helpful assistant."


def first_candidate(text: str, candidates: list[str]) -> str:
    return candidates[0]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 4),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 4),
        "max_ms": round(ordered[-1] * 1000, 4),
    }


def say(message: str) -> None:
    print(f"--> {message}", file=sys.stderr, flush=True)


def artifacts(args: argparse.Namespace, fit: Any) -> dict[str, Any]:
    """kind -> RouterArtifact: read from --artifacts, else trained here on the fit rows."""
    import joblib
    from routeiq_shared.routing_models import RouterArtifact

    out: dict[str, Any] = {}
    if args.artifacts is not None:
        for path in sorted(args.artifacts.iterdir()):
            if path.suffix in (".joblib", ".pkl") and not path.name.startswith("."):
                artifact = joblib.load(path)
                if isinstance(artifact, RouterArtifact) and (not args.kinds or artifact.kind in args.kinds):
                    out[artifact.kind] = artifact
        return out
    from routeiq_train.routers import FITTERS

    for kind, fitter in FITTERS.items():
        if args.kinds and kind not in args.kinds:
            continue
        started = time.perf_counter()
        out[kind] = RouterArtifact(kind=kind, scorer=fitter(fit, args.seed), default_threshold=0.5)
        say(f"trained {kind} on {len(fit.texts)} rows in {time.perf_counter() - started:.1f} s")
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            joblib.dump(out[kind], args.save / f"{kind}.joblib")
    return out


async def time_decisions(plan: Any, models: dict[str, Any], bodies: list[dict[str, Any]], n: int) -> dict[str, Any]:
    import random

    from routeiq_gateway.routing.offloop import ScoringRunner
    from routeiq_gateway.routing.runtime import RuntimeState

    runner, runtime, rng = ScoringRunner(), RuntimeState(), random.Random(1)
    for body in bodies[:100]:  # warm-up: the runner measures the scorer and settles inline or worker
        await plan.decide(body, models, {}, runtime, runner, rng)
    offloaded = runner.offloaded
    samples = []
    reasons: dict[str, int] = {}
    for i in range(n):
        body = bodies[i % len(bodies)]
        t0 = time.perf_counter()
        decision = await plan.decide(body, models, {}, runtime, runner, rng)
        samples.append(time.perf_counter() - t0)
        reasons[decision.reason] = reasons.get(decision.reason, 0) + 1
    runner.close()
    return {**percentiles(samples), "offloaded": runner.offloaded - offloaded, "reasons": reasons}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from routeiq_gateway.routing.offloop import ScoringRunner
    from routeiq_gateway.routing.router_models import LoadedModel
    from routeiq_gateway.routing.routers import build_plan, prompt_text
    from routeiq_shared.config_schema import Candidate, RouterSpec
    from routeiq_train.data import load_dataset
    from routeiq_train.splits import holdout_split

    dataset = load_dataset(args.data)
    fit, held = holdout_split(dataset.rows, 0.2, args.seed)
    order = np.random.default_rng(args.seed).permutation(len(held.texts))
    bodies = [
        {"model": "auto", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": t}]}
        for t in (held.texts[i] for i in order)
    ]
    say(f"{len(fit.texts)} fit rows, {len(bodies)} held-out prompts timed")
    prices = {
        "weak": Candidate(input_price=0.1, output_price=0.2, model="weak"),
        "strong": Candidate(input_price=5, output_price=15, model="strong"),
    }
    pair = ["weak", "strong"]
    out: dict[str, Any] = {"kinds": {}, "strategies": {}}
    for kind, artifact in artifacts(args, fit).items():
        models = {"r": LoadedModel("r", kind, "0" * 64, artifact, 0.0)}
        plan = build_plan(RouterSpec(name="auto", artifact="r", candidates=pair), prices)
        result = await time_decisions(plan, models, bodies, args.n)
        scorer_only = []
        for body in bodies[: min(args.n, len(bodies))]:
            text = prompt_text(body)
            t0 = time.perf_counter()
            artifact.scorer.score([text])
            scorer_only.append(time.perf_counter() - t0)
        result["scorer_call_only"] = percentiles(scorer_only)
        out["kinds"][kind] = result
        say(f"learned/{kind}: p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms")
    specs = {
        "latency": RouterSpec(name="auto", strategy="latency", candidates=pair),
        "random": RouterSpec(name="auto", strategy="random", candidates=pair),
        "custom": RouterSpec(name="auto", strategy="custom", import_path="__main__:first_candidate", candidates=pair),
    }
    for name, spec in specs.items():
        out["strategies"][name] = await time_decisions(build_plan(spec, prices), {}, bodies, args.n)
    # What a worker thread costs the caller, the number offloop.py's inline-or-worker choice rests on.
    pool = ScoringRunner(inline_below=0.0)
    hops = []
    for _ in range(args.n):
        t0 = time.perf_counter()
        await pool.run("noop", lambda x: x, 1)
        hops.append(time.perf_counter() - t0)
    pool.close()
    out["strategies"]["thread_hop_noop"] = percentiles(hops)
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| router | decide p50 ms | decide p99 ms | scorer alone p50 / p99 ms | decisions in a worker |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, r in result["kinds"].items():
        alone = r["scorer_call_only"]
        lines.append(
            f"| learned: {kind} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{alone['p50_ms']:.3f} / {alone['p99_ms']:.3f} | {r['offloaded']} |"
        )
    for name, r in result["strategies"].items():
        lines.append(f"| {name} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | | {r.get('offloaded', '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000, help="decisions timed per router (default 3000)")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (one core)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a routellm-mmlu shaped CSV")
    parser.add_argument("--artifacts", type=Path, help="a directory of routeiq-train artifacts instead of training")
    parser.add_argument("--save", type=Path, help="write the artifacts trained here to this directory")
    parser.add_argument("--kinds", type=lambda s: s.split(","), default=[], help="only these kinds (comma list)")
    parser.add_argument("--seed", type=int, default=42, help="the held-out split's seed (routeiq-train's default)")
    args = parser.parse_args()
    # One BLAS thread, as the gateway scores; set before numpy is first imported (every import above is lazy).
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    import uvloop  # the gateway's loop

    result = uvloop.run(measure(args))
    command = " ".join(shlex.quote(a) for a in ["python", "bench/router_decisions.py", *sys.argv[1:]])
    print(markdown(result))
    print(f"\nreproduce: PYTHONPATH=shared:gateway:train OPENBLAS_NUM_THREADS=1 {command}")
    print(json.dumps({**result, "n": args.n, "cpu": args.cpu, "data": str(args.data)}))


if __name__ == "__main__":
    main()
