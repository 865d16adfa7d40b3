"""Proxy throughput benchmark: direct to upstream, a bare Python pass-through, RouteIQ and LiteLLM's proxy.

The protocol is in bench/README.md. In short: nginx answers a fixed chat completion and wrk drives a closed
loop (one thread, 32 connections, non-stream chat) from CPU 0; each gateway runs alone as one process on
CPU 1; every target gets a warm-up run and a measured run; req/s, p50 and p99 come from `wrk --latency`.

    python bench/proxy_throughput.py [--duration 15] [--connections 32] [--skip-litellm] [--only routeiq]

Only the standard library, so any Python 3.11 runs it; the targets run from their own environments.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from proxybench.cpu import CpuUse, cpu_use, sample_cpu
from proxybench.processes import BenchError
from proxybench.report import TargetResult, environment, markdown_report, write_json
from proxybench.settings import BENCH_DIR, MMLU_CSV, REPO_DIR, TARGETS, Settings
from proxybench.targets import STARTERS, Running, Upstream, missing_install, run_nginx, write_bodies
from proxybench.wrk import WrkResult, run_wrk


def measure(settings: Settings, target: Running) -> tuple[WrkResult, CpuUse]:
    # Warm-up: opens the connections and the gateway's upstream pool, fills caches; its numbers are dropped,
    # but an error in it already fails the target.
    warm = run_wrk(settings, target.url, settings.warmup_s, target.stream, target.api_key)
    if warm.failures:
        raise BenchError(f"errors during warm-up:\n{warm.output}")
    before = sample_cpu(target.pgid)
    result = run_wrk(settings, target.url, settings.duration_s, target.stream, target.api_key)
    after = sample_cpu(target.pgid)
    if result.failures:
        errors = f"{result.non_2xx_3xx} non-2xx/3xx responses, socket errors {result.socket_errors}"
        raise BenchError(f"{errors}:\n{result.output}")
    return result, cpu_use(before, after, settings)


def bench_target(name: str, settings: Settings, upstream: Upstream, workdir: Path) -> TargetResult:
    reason = missing_install(name, settings)
    if reason is not None:
        return TargetResult(name, "failed" if name in settings.explicit else "skipped", reason)
    say(f"{name}: starting")
    try:
        with STARTERS[name](settings, upstream, workdir) as running:
            say(f"{name}: {settings.warmup_s} s warm-up, then {settings.duration_s} s measured")
            wrk, cpu = measure(settings, running)
    except BenchError as exc:
        say(f"{name}: FAILED: {exc}")
        return TargetResult(name, "failed", str(exc))
    say(f"{name}: {wrk.requests_per_s:,.0f} req/s, p50 {wrk.p50_ms:.2f} ms, p99 {wrk.p99_ms:.2f} ms")
    return TargetResult(name, "ok", wrk=wrk, cpu=cpu)


def say(message: str) -> None:
    # Progress on stderr; stdout is only the Markdown report, to paste into bench/README.md.
    print(f"--> {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--duration", type=int, default=15, help="seconds of each measured run (default 15)")
    add("--warmup", type=int, default=5, help="seconds of the warm-up run before it (default 5)")
    add("--connections", type=int, default=32, help="wrk connections, closed loop (default 32)")
    add("--only", action="append", default=[], metavar="T[,T]", help="measure only these (direct always runs)")
    add("--skip", action="append", default=[], metavar="T[,T]", help=f"leave these out; targets: {TARGETS}")
    add("--skip-litellm", action="store_true", help="same as --skip litellm")
    add("--load-cpu", type=int, default=0, help="CPU for nginx and wrk (default 0)")
    add("--gateway-cpu", type=int, default=1, help="CPU for the gateway under test (default 1)")
    add("--python", type=Path, default=REPO_DIR / ".venv/bin/python", help="runs bare-python")
    add("--routeiq-bin", type=Path, default=REPO_DIR / ".venv/bin/routeiq-gateway")
    add("--litellm-bin", type=Path, default=BENCH_DIR / ".venv-litellm/bin/litellm")
    add("--ready-timeout", type=float, default=90.0, help="seconds a gateway has to become ready")
    add(
        "--prompts",
        type=Path,
        help="CSV with a prompt column: every target gets its prompts, varied (default: "
        "the MMLU file when routeiq-auto runs, so it and the fixed-model row send the same bodies)",
    )
    add("--same-prompt", action="store_true", help="one fixed body (wrk/chat.lua) even with routeiq-auto")
    add("--auto-kind", default="gain", help="built-in router kind routeiq-auto trains and serves (default gain)")
    args = parser.parse_args(argv)

    only = {t for item in args.only for t in item.split(",") if t}
    skip = {t for item in args.skip for t in item.split(",") if t} | ({"litellm"} if args.skip_litellm else set())
    if unknown := (only | skip) - set(TARGETS):
        parser.error(f"unknown target(s) {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    if "direct" in skip:
        parser.error("direct is the baseline of every ratio and cannot be skipped")
    if args.load_cpu == args.gateway_cpu:
        parser.error("--load-cpu and --gateway-cpu must differ")
    targets = tuple(t for t in TARGETS if (t == "direct" or not only or t in only) and t not in skip)
    return Settings(
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        load_cpu=args.load_cpu,
        gateway_cpu=args.gateway_cpu,
        targets=targets,
        explicit=frozenset(only),
        python=args.python,
        routeiq_bin=args.routeiq_bin,
        litellm_bin=args.litellm_bin,
        ready_timeout_s=args.ready_timeout,
        prompts=None if args.same_prompt else (args.prompts or (MMLU_CSV if "routeiq-auto" in targets else None)),
        auto_kind=args.auto_kind,
    )


def check_machine(settings: Settings) -> None:
    cpus = os.sched_getaffinity(0)
    for cpu in (settings.load_cpu, settings.gateway_cpu):
        if cpu not in cpus:
            raise BenchError(f"CPU {cpu} is not available to this process (have {sorted(cpus)})")
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} not found on PATH (Debian packages: nginx-light or nginx, wrk, util-linux)")


def exit_on_sigterm(signum: int, frame: object) -> NoReturn:
    # A SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so every `finally` stops its process group.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    when = dt.datetime.now(dt.UTC).replace(microsecond=0)
    try:
        check_machine(settings)
        with tempfile.TemporaryDirectory(prefix="routeiq-bench-") as tmp, run_nginx(settings, Path(tmp)) as upstream:
            if settings.prompts is not None:
                settings = dataclasses.replace(settings, bodies=write_bodies(settings.prompts, Path(tmp)))
            results = [bench_target(name, settings, upstream, Path(tmp)) for name in settings.targets]
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # The process groups are already stopped by the context managers' finally blocks.
        print("interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    env = environment(settings)
    print(markdown_report(settings, results, env, when))
    say(f"results written to {write_json(settings, results, env, when).relative_to(REPO_DIR)}")
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
