"""Model swap benchmark: verify + load + swap time of a ~500 MB router artifact in the gateway, and the gateway's
p99 in a window with a swap against steady windows.

The protocol is in bench/README.md ("Model swap"). In short: build two signed versions of a router artifact (a
tiny scikit-learn Pipeline carrying a large ndarray), publish them to a file:// registry, install v1 on the
gateway's volume, start the gateway (router `auto` -> two model groups on nginx) alone on CPU 1, drive it with
wrk from CPU 0, and alternate steady windows with windows in which the next version's manifest is renamed into
place, the way model-sync does it. The swap time is from that rename to the gateway's `Router model loaded`
line; `load_seconds` is what that line reports for verify + unpickle.

    .venv/bin/python bench/model_swap.py [--size-mb 500] [--duration 10] [--swaps 2]

Runs from the project's venv (it builds the artifact with scikit-learn and signs it with routeiq_shared).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn

from proxybench.processes import BenchError
from proxybench.settings import BENCH_DIR, REPO_DIR, Settings
from proxybench.targets import Running, run_nginx
from routeiq_model_sync.volume import install
from swapbench.artifact import BuiltArtifact, build_and_publish, make_keys, page_cache_share, stage
from swapbench.gateway import LoadEvent, load_events, routed_version, run_router_gateway
from swapbench.report import Run, Swap, environment, markdown_report, write_json
from swapbench.windows import Window, run_window

LOAD_TIMEOUT_S = 120.0  # a load that takes longer is a failure, not a figure


def say(message: str) -> None:
    # Progress on stderr; stdout is only the Markdown report, to paste into bench/README.md.
    print(f"--> {message}", file=sys.stderr, flush=True)


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def wait_for_load(log_path: Path, version: str, since: float, timeout_s: float) -> LoadEvent:
    """The gateway's first load of `version` logged at or after `since` (epoch); a failed load is an error."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = [e for e in load_events(log_path) if e.at >= since - 0.002]  # log times are truncated to ms
        if failed := [e for e in events if not e.ok]:
            raise BenchError(f"the gateway refused a model: {failed[0].reason}")
        if loaded := [e for e in events if e.version == version]:
            return loaded[0]
        if time.monotonic() > deadline:
            raise BenchError(f"no `Router model loaded` for {version} within {timeout_s:.0f} s")
        time.sleep(0.05)


class Swapper:
    """Swaps the gateway's router model the way model-sync does (artifact renamed, then its manifest), with or
    without load running, and records how long the gateway took to serve the new version."""

    def __init__(
        self, settings: Settings, args: argparse.Namespace, models: Path, running: Running, log_path: Path
    ) -> None:
        self.settings = settings
        self.args = args
        self.models = models
        self.running = running
        self.log_path = log_path
        self.swaps: list[Swap] = []

    def to(self, serving: BuiltArtifact, target: BuiltArtifact, label: str, under_load: bool) -> Window | None:
        staged = stage(self.models, target)  # the agent's verified download, waiting for its rename

        cached: list[float | None] = []

        def rename() -> float:
            cached.append(page_cache_share(staged))
            install(self.models, target.manifest, staged)  # artifact first, manifest last: model-sync's install
            return time.time()

        window: Window | None = None
        if under_load:
            assert self.running.pgid is not None
            window, renamed = run_window(
                self.settings, self.running.url, label, self.settings.duration_s, self.running.pgid, rename,
                self.args.swap_at,
            )  # fmt: skip
            assert renamed is not None
            renamed_at = renamed
        else:
            renamed_at = rename()
        event = wait_for_load(self.log_path, target.version, renamed_at, LOAD_TIMEOUT_S)
        if under_load and event.at > renamed_at + self.settings.duration_s - self.args.swap_at:
            raise BenchError(f"{label}: the load finished after its window ended; use a longer --duration")
        if (version := routed_version(self.running.url)) != target.version:
            raise BenchError(f"after {label} the router answered with {version!r}, not {target.version}")
        assert event.load_seconds is not None
        at_s = self.args.swap_at if under_load else 0.0
        self.swaps.append(
            Swap(label, serving.version, target.version, at_s, renamed_at, event.at, event.load_seconds, cached[0])
        )
        say(f"{label}: rename -> loaded {event.at - renamed_at:.2f} s (load_seconds {event.load_seconds:.2f})")
        return window


def measure(settings: Settings, args: argparse.Namespace, workdir: Path) -> Run:
    keys = workdir / "keys"
    keys.mkdir()
    private_key, public_key = make_keys(keys)
    registry_dir = workdir / "registry"
    registry_dir.mkdir()
    artifacts: list[BuiltArtifact] = []
    for seed, version in enumerate(("v1", "v2"), 1):
        say(f"building {version}: {args.size_mb} MB of ballast, signed, published to file://{registry_dir}")
        artifacts.append(build_and_publish(workdir, registry_dir, version, args.size_mb, seed, private_key, public_key))
        say(f"{version}: {artifacts[-1].size_bytes / 1e6:,.0f} MB in {artifacts[-1].build_s:.1f} s")
    # From here on this process is part of the load side: it must not take time from the gateway's core.
    os.sched_setaffinity(0, {settings.load_cpu})

    home = workdir / "gateway"
    models = home / "models"
    models.mkdir(parents=True)
    install(models, artifacts[0].manifest, stage(models, artifacts[0]))  # v1 serves from the start
    windows: list[tuple[Window, str, int]] = []
    with run_nginx(settings, workdir) as upstream:
        say("gateway: starting (loads v1 at start-up)")
        with run_router_gateway(settings, upstream, home, public_key) as (running, log_path):
            assert running.pgid is not None
            wait_for_load(log_path, "v1", 0.0, LOAD_TIMEOUT_S)
            if (version := routed_version(running.url)) != "v1":
                raise BenchError(f"the router answered with version {version!r}, expected v1")
            swapper = Swapper(settings, args, models, running, log_path)
            # The same swap with no load at all: what verify + load + swap costs by itself on this machine.
            swapper.to(artifacts[0], artifacts[1], "idle", under_load=False)
            serving, other = artifacts[1], artifacts[0]
            say(f"warm-up: {settings.warmup_s} s")
            run_window(settings, running.url, "warm-up", settings.warmup_s, running.pgid)
            for n in range(1, args.swaps + 1):
                say(f"steady {n}: {settings.duration_s} s on {serving.version}")
                steady, _ = run_window(settings, running.url, f"steady {n}", settings.duration_s, running.pgid)
                windows.append((steady, serving.version, rss_bytes(running.pgid)))
                label = f"swap {n}"
                say(f"{label}: {settings.duration_s} s, {serving.version} -> {other.version} at {args.swap_at:.0f} s")
                window = swapper.to(serving, other, label, under_load=True)
                assert window is not None
                windows.append((window, f"{serving.version} → {other.version}", rss_bytes(running.pgid)))
                serving, other = other, serving
            peak = rss_bytes(running.pgid, "VmHWM")
    return Run(artifacts, windows, swapper.swaps, peak, args.swap_at)


def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--size-mb", type=int, default=500, help="MiB of ndarray ballast in the artifact (default 500)")
    add("--duration", type=int, default=10, help="seconds of each measured window (default 10)")
    add("--warmup", type=int, default=5, help="seconds of warm-up before the first window (default 5)")
    add("--swap-at", type=float, default=3.0, help="seconds into a swap window when the swap is done (default 3)")
    add("--swaps", type=int, default=2, help="steady + swap window pairs; swaps alternate v1->v2, v2->v1 (default 2)")
    add("--connections", type=int, default=32, help="wrk connections, closed loop (default 32)")
    add("--load-cpu", type=int, default=0, help="CPU for nginx, wrk and this script (default 0)")
    add("--gateway-cpu", type=int, default=1, help="CPU for the gateway (default 1)")
    add("--routeiq-bin", type=Path, default=REPO_DIR / ".venv/bin/routeiq-gateway")
    add("--ready-timeout", type=float, default=90.0, help="seconds the gateway has to become ready")
    args = parser.parse_args(argv)
    if args.load_cpu == args.gateway_cpu:
        parser.error("--load-cpu and --gateway-cpu must differ")
    if not 0 < args.swap_at < args.duration:
        parser.error("--swap-at must fall inside the window")
    if args.swaps < 1 or args.size_mb < 1:
        parser.error("--swaps and --size-mb must be at least 1")
    settings = Settings(
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        load_cpu=args.load_cpu,
        gateway_cpu=args.gateway_cpu,
        targets=("routeiq",),
        explicit=frozenset(),
        python=Path(sys.executable),
        routeiq_bin=args.routeiq_bin,
        litellm_bin=BENCH_DIR / ".venv-litellm/bin/litellm",  # unused here
        ready_timeout_s=args.ready_timeout,
    )
    return settings, args


def check_machine(settings: Settings) -> None:
    cpus = os.sched_getaffinity(0)
    for cpu in (settings.load_cpu, settings.gateway_cpu):
        if cpu not in cpus:
            raise BenchError(f"CPU {cpu} is not available to this process (have {sorted(cpus)})")
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} not found on PATH (Debian packages: nginx-light or nginx, wrk, util-linux)")
    if not os.access(settings.routeiq_bin, os.X_OK):
        raise BenchError(f"{settings.routeiq_bin} not found (make setup installs it)")


def exit_on_sigterm(signum: int, frame: object) -> NoReturn:
    # A SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so every `finally` stops its process group.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    when = dt.datetime.now(dt.UTC).replace(microsecond=0)
    try:
        check_machine(settings)
        # Disk: two artifacts of --size-mb (the volume hard-links the registry's files); memory: up to three
        # times --size-mb (the bench while building one; the gateway while it holds one version and loads the next).
        with tempfile.TemporaryDirectory(prefix="routeiq-swapbench-") as tmp:
            run = measure(settings, args, Path(tmp))
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    env = environment(settings)
    print(markdown_report(settings, run, env, when))
    say(f"results written to {write_json(settings, run, env, when).relative_to(REPO_DIR)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
