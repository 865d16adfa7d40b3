"""The model swap run's record: the Markdown block for bench/README.md and the JSON for bench/results/."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import platform
from pathlib import Path
from typing import Any

from proxybench.report import (
    DISTURBED_PCT,
    cpu_model,
    first_line,
    package_version,
    reproduce_command,
    settings_document,
)
from proxybench.settings import RESULTS_DIR, Settings

from .artifact import BuiltArtifact
from .windows import Window

GOAL_SWAP_S = 5.0  # verify + load + swap of a 500 MB artifact, from the issue


@dataclasses.dataclass(frozen=True)
class Swap:
    window: str
    from_version: str
    to_version: str
    at_s: float  # seconds into its window when the manifest was renamed into place; 0: no load running
    renamed_at: float  # epoch seconds, right after the manifest's rename
    loaded_at: float  # epoch seconds of the gateway's "Router model loaded" line
    load_seconds: float  # what that line says: verify + unpickle in the worker thread
    page_cache: float | None  # share of the artifact in the page cache at the rename

    @property
    def rename_to_loaded_s(self) -> float:
        return self.loaded_at - self.renamed_at


@dataclasses.dataclass(frozen=True)
class Run:
    artifacts: list[BuiltArtifact]
    windows: list[tuple[Window, str, int]]  # window, router version(s) serving, gateway RSS (bytes) after it
    swaps: list[Swap]
    peak_rss_bytes: int
    swap_at_s: float


def environment(settings: Settings) -> dict[str, str]:
    python = settings.python
    return {
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "nginx": first_line(["nginx", "-v"]).removeprefix("nginx version: nginx/"),
        "wrk": first_line(["wrk", "-v"]).split(" [")[0].removeprefix("wrk "),
        "python": first_line([str(python), "--version"]).removeprefix("Python "),
        **{pkg: package_version(python, pkg) for pkg in ("routeiq-gateway", "scikit-learn", "joblib", "numpy")},
    }


def disturbed(window: Window) -> str | None:
    """As proxybench says it: steal, or the gateway's core busy with something other than the gateway."""
    cpu = window.cpu
    if cpu.steal_pct > DISTURBED_PCT:
        return f"{cpu.steal_pct:.0f}% steal"
    if cpu.gateway_pct is not None and cpu.gateway_cpu_busy_pct - cpu.gateway_pct > DISTURBED_PCT:
        return f"{cpu.gateway_cpu_busy_pct - cpu.gateway_pct:.0f}% of the gateway's CPU used by other processes"
    return None


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f}"


def markdown_report(settings: Settings, run: Run, env: dict[str, str], when: dt.datetime) -> str:
    art = run.artifacts[0]
    rows = []
    for window, serving, rss in run.windows:
        w, cpu = window.wrk, window.cpu
        gateway = f"{cpu.gateway_pct:.0f}%" if cpu.gateway_pct is not None else "-"
        rows.append(
            f"| {window.label} | {serving} | {w.requests_per_s:,.0f} | {w.p50_ms:.2f} | {w.p99_ms:.2f} "
            f"| {window.max_ms:.1f} | {w.requests:,} | {cpu.load_cpu_busy_pct:.0f}% / {cpu.gateway_cpu_busy_pct:.0f}% "
            f"/ {gateway} | {_mb(rss)} |"
        )
    swap_rows = [
        f"| {s.window} | {s.from_version} → {s.to_version} | {'yes' if s.at_s else 'no'} "
        f"| {s.rename_to_loaded_s:.2f} | {s.load_seconds:.2f} "
        f"| {'?' if s.page_cache is None else f'{s.page_cache:.0%}'} |"
        for s in run.swaps
    ]
    notes = [f"- {w.label}: disturbed run? {why}" for w, _, _ in run.windows if (why := disturbed(w))]
    steady = [w for w, _, _ in run.windows if w.label.startswith("steady")]
    swapping = [w for w, _, _ in run.windows if w.label.startswith("swap")]
    idle = [s.rename_to_loaded_s for s in run.swaps if s.at_s == 0.0]
    loaded = [s.rename_to_loaded_s for s in run.swaps if s.at_s > 0.0]
    worst = max(loaded)
    steady_p99 = max(w.wrk.p99_ms for w in steady)
    swap_p99 = max(w.wrk.p99_ms for w in swapping)
    return "\n".join(
        [
            f"Command (from the repository root): `{reproduce_command()}`",
            "",
            f"Date: {when:%Y-%m-%d %H:%M} UTC. CPU: {env['cpu']}, Linux {env['kernel']}.",
            f"Versions: nginx {env['nginx']}, wrk {env['wrk']}, Python {env['python']}, "
            f"routeiq-gateway {env['routeiq-gateway']}, scikit-learn {env['scikit-learn']}, "
            f"joblib {env['joblib']}, numpy {env['numpy']}.",
            f"Artifact: {_mb(art.size_bytes)} MB joblib file ({_mb(art.ballast_bytes)} MB of it a random float64 "
            f"ndarray on the fitted tree), signed (Ed25519); the router's predict() costs {art.predict_us:.0f} µs "
            "per request in-process.",
            f"Load: wrk -t1 -c{settings.connections} -d{settings.duration_s}s --latency at model `auto` after a "
            f"{settings.warmup_s} s warm-up, nginx and wrk on CPU {settings.load_cpu}, the gateway alone on CPU "
            f"{settings.gateway_cpu}; in a swap window the new manifest is renamed into place "
            f"{run.swap_at_s:.0f} s in.",
            "",
            "| window | router version | req/s | p50 ms | p99 ms | max ms | requests "
            "| CPU: load / gateway core / gateway | gateway RSS MB |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *rows,
            "",
            "| swap | versions | under load | manifest rename → `Router model loaded`, s | `load_seconds` logged "
            "| artifact in page cache |",
            "| --- | --- | --- | ---: | ---: | ---: |",
            *swap_rows,
            *(["", *notes] if notes else []),
            "",
            f"Gateway peak RSS (VmHWM): {_mb(run.peak_rss_bytes)} MB. No request failed in any window.",
            f"Goal (verify + load + swap < {GOAL_SWAP_S:.0f} s): {'met' if worst < GOAL_SWAP_S else 'NOT met'} "
            f"under load (slowest {worst:.2f} s; {', '.join(f'{x:.2f}' for x in idle)} s with no load). "
            f"p99 in a window with a swap {swap_p99:.2f} ms against {steady_p99:.2f} ms steady (the worst window of "
            "each kind).",
        ]
    )


def write_json(settings: Settings, run: Run, env: dict[str, str], when: dt.datetime) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"model_swap-{when:%Y%m%dT%H%M%SZ}.json"
    plain = settings_document(settings)
    document: dict[str, Any] = {
        "date": when.isoformat(),
        "command": reproduce_command(),
        "settings": plain,
        "swap_at_s": run.swap_at_s,
        "environment": env,
        "goal": {"swap_seconds": GOAL_SWAP_S},
        "artifacts": [
            {
                **{f.name: getattr(a, f.name) for f in dataclasses.fields(a) if f.name != "manifest"},
                "path": str(a.path),
                "manifest": json.loads(a.manifest.to_json()),
            }
            for a in run.artifacts
        ],
        "windows": [
            {"serving": serving, "rss_bytes": rss, **dataclasses.asdict(window)} for window, serving, rss in run.windows
        ],
        "swaps": [{**dataclasses.asdict(s), "rename_to_loaded_s": s.rename_to_loaded_s} for s in run.swaps],
        "peak_rss_bytes": run.peak_rss_bytes,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path
