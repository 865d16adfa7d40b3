"""CPU per request of a virtual key's limits, in process, against a real redis-server: `Limiter.admit` + `finish`
for a key and its team with generous rpm / tpm / max_parallel (the routeiq-keys bench key), 32 requests in flight,
with leases (`routeiq.limits.lease_seconds` 1) and without (0: every request asks Redis), side by side.

    PYTHONPATH=shared:gateway:tests .venv/bin/python bench/limits_admission.py [--seconds 3] [--cpu 1]

Prints a Markdown table and the command; CPU is the process's (the redis-server runs in its own process).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello there, how are you"}]}
USAGE = {"prompt_tokens": 10, "completion_tokens": 20}


async def measure(redis_url: str, lease_seconds: float, seconds: float) -> dict[str, float]:
    from routeiq_gateway.admission.limits import Limiter
    from routeiq_gateway.observability.metrics import GatewayMetrics
    from routeiq_gateway.tenancy.records import Limits, Team, VirtualKey
    from routeiq_shared.config_schema import LimitsSettings
    from routeiq_shared.redis_settings import RedisSettings

    team = Team("bench", None, frozenset(), Limits(rpm=10_000_000, max_parallel=10_000, budget=1e9), 0.0)
    limits = Limits(rpm=10_000_000, tpm=10**9, budget=1e9)
    vkey = VirtualKey("key", None, team, frozenset(), limits, 0.0, None, False)
    settings = LimitsSettings(lease_seconds=lease_seconds)
    limiter = Limiter(RedisSettings.from_env({"REDIS_URL": redis_url}), lambda: settings, GatewayMetrics())

    async def one() -> None:
        ticket: Any = await limiter.admit(vkey, "chat/completions", BODY)
        await asyncio.sleep(0)
        limiter.finish(ticket, USAGE, answered=True)

    for _ in range(20):  # warm: connections, scripts, the first chunks
        await asyncio.gather(*(one() for _ in range(32)))
    n, cpu0, t0 = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await asyncio.gather(*(one() for _ in range(32)))
        n += 32
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    await limiter.close()
    return {"requests_per_s": n / wall, "cpu_us_per_request": cpu / n * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per row")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    from harness.redis_server import RedisServer, find_redis_server

    binary = find_redis_server()
    if binary is None:
        sys.exit("redis-server not found: run `make setup`")
    server = RedisServer.start(binary, Path(tempfile.mkdtemp(prefix="routeiq-bench-redis-")))
    try:
        rows = {lease: asyncio.run(measure(server.url, lease, args.seconds)) for lease in (0.0, 1.0)}
    finally:
        server.stop()
    print("| limits | admissions/s | CPU µs per request |")
    print("| --- | ---: | ---: |")
    for lease, row in rows.items():
        name = "leased chunks (lease_seconds 1)" if lease else "a round trip each (lease_seconds 0)"
        print(f"| {name} | {row['requests_per_s']:,.0f} | {row['cpu_us_per_request']:.1f} |")
    ratio = rows[0.0]["cpu_us_per_request"] / rows[1.0]["cpu_us_per_request"]
    print(f"\nleases cost {1 / ratio:.2f}x the CPU of a round trip each")
    command = "PYTHONPATH=shared:gateway:tests .venv/bin/python bench/limits_admission.py"
    print(f"Command: {command} {shlex.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
