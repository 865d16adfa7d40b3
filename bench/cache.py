"""Response cache benchmark: the latency of a hit against a miss, side by side in one run, and the hit ratio of a
workload with repeated prompts.

One gateway (the real `routeiq-gateway`, `litellm_settings.cache: true`) in front of the fake upstream
(tests/harness/fake_upstream.py, `--upstream-ms` of latency per answer), with a real redis-server for
`--store redis` (REDIS_URL) or the in-memory LRU for `--store local`. One keep-alive HTTP/1.1 client
(http.client: the client's own cost stays small and equal for both) sends, alternately, a prompt never seen
(a miss: the upstream answers, the answer is stored) and the prompt of the miss before it (a hit: answered from
the cache), so both are measured under the same conditions, in the same seconds. Latency is the client's, from
the request written to the whole answer read.

Then the workload: `--requests` chat requests whose prompts are drawn from `--distinct` prompts with Zipf
weights (exponent `--zipf`, seeded), the way a FAQ bot or an eval harness repeats itself. Its hit ratio is read
from the gateway's own metrics (routeiq_cache_requests_total) and compared with the best a cache can do (every
request but each prompt's first). Protocol and results: bench/README.md.

    PYTHONPATH=shared:gateway:tests .venv/bin/python bench/cache.py [--store redis|local|both] [--pairs 500]
        [--upstream-ms 0] [--requests 3000] [--distinct 300] [--zipf 1.1]

Exit code: 0 when measured, 2 when the processes could not start, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import random
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR / "tests"))  # the test harness starts and stops the processes

from harness.fake_upstream_control import FakeUpstream  # noqa: E402
from harness.gateway_process import VolumeDirs, launch_gateway  # noqa: E402
from harness.processes import ProcessStartError  # noqa: E402
from harness.redis_server import RedisServer, find_redis_server  # noqa: E402

MASTER_KEY = "sk-bench-cache"


def say(message: str) -> None:
    print(f"--> {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Client:
    """One keep-alive connection; `chat(prompt)` → (seconds, x-routeiq-cache)."""

    def __init__(self, host: str, port: int) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.headers = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}

    def chat(self, prompt: str) -> tuple[float, str]:
        body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": prompt}], "max_tokens": 64})
        t0 = time.perf_counter()
        self.conn.request("POST", "/v1/chat/completions", body=body, headers=self.headers)
        resp = self.conn.getresponse()
        resp.read()
        seconds = time.perf_counter() - t0
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
        return seconds, resp.getheader("x-routeiq-cache") or "-"

    def close(self) -> None:
        self.conn.close()


def cache_counts(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out: dict[str, float] = {"hit": 0.0, "miss": 0.0}
    for line in text.splitlines():
        if line.startswith("routeiq_cache_requests_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            out[result] = out.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def measure(
    store: str, args: argparse.Namespace, upstream: FakeUpstream, redis: RedisServer | None, work: Path
) -> dict[str, Any]:
    config = {
        "model_list": [
            {
                "model_name": "bench",
                "litellm_params": {"model": "openai/bench", "api_base": upstream.base_url, "api_key": "sk-up"},
            }
        ],
        "general_settings": {"master_key": MASTER_KEY},
        "litellm_settings": {"cache": True, "cache_params": {"type": store, "ttl": 3600}},
    }
    env = {"REDIS_URL": redis.url} if redis is not None else {}
    gw = launch_gateway(VolumeDirs(work / store), config, env=env, log_name=f"gateway-{store}.log")
    try:
        client = Client(gw.host, gw.port)
        run = f"{store}-{time.time_ns()}"  # fresh prompts for every run and store
        for i in range(50):  # warm-up: connections, code paths, both kinds
            client.chat(f"{run} warm {i}")
            client.chat(f"{run} warm {i}")
        say(f"{store}: {args.pairs} miss/hit pairs")
        misses: list[float] = []
        hits: list[float] = []
        for i in range(args.pairs):
            seconds, state = client.chat(f"{run} pair {i}")
            assert state == "miss", state
            misses.append(seconds)
            seconds, state = client.chat(f"{run} pair {i}")
            assert state == "hit", state
            hits.append(seconds)
        say(f"{store}: workload of {args.requests} requests over {args.distinct} prompts (zipf {args.zipf})")
        rng = random.Random(args.seed)
        weights = [1 / (rank**args.zipf) for rank in range(1, args.distinct + 1)]
        prompts = rng.choices(range(args.distinct), weights=weights, k=args.requests)
        before = cache_counts(gw.port)
        for n in prompts:
            client.chat(f"{run} workload question {n}")
        after = cache_counts(gw.port)
        client.close()
    finally:
        gw.stop()
    hit, miss = after["hit"] - before["hit"], after["miss"] - before["miss"]
    return {
        "store": store,
        "miss_p50_ms": statistics.median(misses) * 1000,
        "miss_p99_ms": percentile(misses, 0.99) * 1000,
        "hit_p50_ms": statistics.median(hits) * 1000,
        "hit_p99_ms": percentile(hits, 0.99) * 1000,
        "hit_to_miss_p50": statistics.median(hits) / statistics.median(misses),
        "workload_hits": hit,
        "workload_misses": miss,
        "hit_ratio": hit / (hit + miss) if hit + miss else 0.0,
        "best_ratio": 1 - len(set(prompts)) / len(prompts),
    }


def report(args: argparse.Namespace, rows: list[dict[str, Any]], started: dt.datetime) -> str:
    command = " ".join(["PYTHONPATH=shared:gateway:tests .venv/bin/python bench/cache.py", *sys.argv[1:]])
    lines = [
        f"Response cache, {started:%Y-%m-%d %H:%M} UTC, upstream latency {args.upstream_ms} ms, "
        f"{args.pairs} miss/hit pairs alternating on one keep-alive connection:",
        "",
        "| store | miss p50 ms | miss p99 ms | hit p50 ms | hit p99 ms | hit / miss (p50) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['store']} | {r['miss_p50_ms']:.2f} | {r['miss_p99_ms']:.2f} | {r['hit_p50_ms']:.2f} | "
            f"{r['hit_p99_ms']:.2f} | {r['hit_to_miss_p50']:.2f}x |"
        )
    lines += [
        "",
        f"Workload: {args.requests} requests over {args.distinct} prompts, Zipf exponent {args.zipf}, "
        f"seed {args.seed}:",
        "",
        "| store | hits | misses | hit ratio | best possible |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['store']} | {r['workload_hits']:.0f} | {r['workload_misses']:.0f} | {r['hit_ratio']:.1%} | "
            f"{r['best_ratio']:.1%} |"
        )
    lines += ["", f"Command: `{command}`"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=("redis", "local", "both"), default="both")
    parser.add_argument("--pairs", type=int, default=500, help="miss/hit pairs measured per store")
    parser.add_argument("--upstream-ms", type=int, default=0, help="the fake upstream's latency per answer")
    parser.add_argument("--requests", type=int, default=3000, help="requests of the repeated-prompt workload")
    parser.add_argument("--distinct", type=int, default=300, help="distinct prompts of the workload")
    parser.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of the prompts' popularity")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    stores = ["redis", "local"] if args.store == "both" else [args.store]
    with tempfile.TemporaryDirectory(prefix="routeiq-bench-cache-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        try:
            upstream = FakeUpstream.start(work, latency_ms=args.upstream_ms)
            stack.callback(upstream.stop)
            redis = None
            if "redis" in stores:
                binary = find_redis_server()
                if binary is None:
                    say("redis-server is not installed (make setup)")
                    return 2
                redis = RedisServer.start(binary, work / "redis")
                stack.callback(redis.stop)
        except (ProcessStartError, OSError) as exc:
            say(f"could not start: {exc}")
            return 2
        try:
            rows = [measure(store, args, upstream, redis if store == "redis" else None, work) for store in stores]
        except KeyboardInterrupt:
            return 130
    text = report(args, rows, started)
    print(text)
    results = BENCH_DIR / "results"
    results.mkdir(exist_ok=True)
    out = results / f"cache-{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "report": text}, indent=2))
    say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
