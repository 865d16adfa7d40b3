"""Measured windows of load: wrk running on the load CPU for a fixed time, optionally with a model swap done
partway through it, and the CPU accounting around it."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

from proxybench.cpu import CpuUse, cpu_use, sample_cpu
from proxybench.processes import BenchError, child_env, pinned
from proxybench.settings import MASTER_KEY, Settings
from proxybench.wrk import WRK_SCRIPT, WrkResult, parse_wrk

from .gateway import ROUTER_MODEL

T = TypeVar("T")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}  # wrk's latency units


@dataclasses.dataclass(frozen=True)
class Window:
    label: str
    wrk: WrkResult
    max_ms: float  # the slowest request of the window (wrk's Thread Stats "Max")
    cpu: CpuUse


def max_latency_ms(output: str) -> float:
    # Thread Stats:   Latency   <avg>  <stdev>  <max>  <+/- stdev>
    match = re.search(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m|h)\s", output, re.MULTILINE)
    if match is None:
        raise BenchError(f"wrk output has no Latency line:\n{output}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def run_window(
    settings: Settings,
    url: str,
    label: str,
    duration_s: int,
    pgid: int,
    during: Callable[[], T] | None = None,
    at_s: float = 0.0,
) -> tuple[Window, T | None]:
    """wrk for `duration_s` seconds (same flags as proxybench: one thread, closed loop, --timeout 10s) with
    every request for the router model; `during()` is called `at_s` seconds after wrk started. Any non-2xx
    answer or socket error fails the window: a swap must not cost a request."""
    argv = ["wrk", "-t1", f"-c{settings.connections}", f"-d{duration_s}s", "--latency", "--timeout", "10s"]
    argv += ["-s", str(WRK_SCRIPT), url]
    env = child_env({"BENCH_MODEL": ROUTER_MODEL, "BENCH_API_KEY": MASTER_KEY})
    before = sample_cpu(pgid)
    started = time.monotonic()
    proc = subprocess.Popen(
        pinned(settings.load_cpu, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    result: T | None = None
    try:
        if during is not None:
            time.sleep(max(0.0, started + at_s - time.monotonic()))
            result = during()
        out, err = proc.communicate(timeout=duration_s + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = sample_cpu(pgid)
    if proc.returncode != 0:
        raise BenchError(f"wrk exited with {proc.returncode}: {err.strip() or out.strip()}")
    wrk = parse_wrk(out)
    if wrk.failures:
        raise BenchError(
            f"{label}: {wrk.non_2xx_3xx} non-2xx/3xx responses, socket errors {wrk.socket_errors}:\n{wrk.output}"
        )
    return Window(label, wrk, max_latency_ms(out), cpu_use(before, after, settings)), result
