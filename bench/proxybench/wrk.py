"""Runs wrk on the load CPU and reads requests/s, p50, p99 and errors from its `--latency` output."""

from __future__ import annotations

import dataclasses
import re
import subprocess

from .processes import BenchError, child_env, pinned
from .settings import BENCH_DIR, MASTER_KEY, MODEL, Settings

WRK_SCRIPT = BENCH_DIR / "wrk" / "chat.lua"
PROMPTS_SCRIPT = BENCH_DIR / "wrk" / "prompts.lua"  # cycles settings.bodies
# wrk prints latencies as a number and a unit, scaled to the value (e.g. 176.00us, 4.31ms, 1.48s).
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclasses.dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx_3xx: int
    socket_errors: dict[str, int]
    output: str

    @property
    def failures(self) -> int:
        return self.non_2xx_3xx + sum(self.socket_errors.values())


def run_wrk(
    settings: Settings, url: str, duration_s: int, stream: bool = False, api_key: str = MASTER_KEY
) -> WrkResult:
    # One thread: the load generator shares its core with nginx, and one thread is enough to saturate any
    # Python gateway. --timeout 10s: a slow answer is measured as latency instead of dropped as a timeout.
    argv = ["wrk", "-t1", f"-c{settings.connections}", f"-d{duration_s}s", "--latency", "--timeout", "10s"]
    script = WRK_SCRIPT if settings.bodies is None else PROMPTS_SCRIPT
    argv += ["-s", str(script), url]
    env = child_env(
        {
            "BENCH_MODEL": MODEL,
            "BENCH_API_KEY": api_key,
            "BENCH_BODIES": str(settings.bodies or ""),
            "BENCH_STREAM": "1" if stream else "",
        }
    )
    done = subprocess.run(
        pinned(settings.load_cpu, argv),
        capture_output=True,
        text=True,
        env=env,
        timeout=duration_s + 60,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout)


def parse_wrk(output: str) -> WrkResult:
    def need(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchError(f"wrk output has no match for {pattern!r}:\n{output}")
        return match

    def latency_ms(percentile: int) -> float:
        # From the "Latency Distribution" block that --latency adds (not the mean in "Thread Stats").
        match = need(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s|m|h)\s*$")
        return float(match.group(1)) * _UNIT_MS[match.group(2)]

    # Both lines appear only when non-zero.
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    kinds = ("connect", "read", "write", "timeout")
    return WrkResult(
        requests_per_s=float(need(r"^Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=latency_ms(50),
        p99_ms=latency_ms(99),
        requests=int(need(r"^\s+(\d+) requests in ").group(1)),
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=dict(zip(kinds, map(int, errors.groups()), strict=True)) if errors else {},
        output=output,
    )
