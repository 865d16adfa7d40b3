"""The run's record: versions and machine, the Markdown table for the README, the JSON for bench/results/."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from .cpu import CpuUse
from .settings import GOAL_P99_MS, GOAL_RPS, REPO_DIR, RESULTS_DIR, Settings
from .wrk import WrkResult

# Above this much steal or foreign load on a benchmark CPU, the report says the run was disturbed.
DISTURBED_PCT = 10.0


@dataclasses.dataclass(frozen=True)
class TargetResult:
    name: str
    status: str  # "ok", "failed" or "skipped"
    note: str = ""
    wrk: WrkResult | None = None
    cpu: CpuUse | None = None


def first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def package_version(python: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    version = first_line([str(python), "-c", code])
    return version if re.fullmatch(r"[\w.+-]+", version) else "not installed"


def cpu_model() -> str:
    models = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    return f"{models[0]} ({len(models)} CPUs)" if models else platform.processor() or "unknown"


def environment(settings: Settings) -> dict[str, str]:
    return {
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "nginx": first_line(["nginx", "-v"]).removeprefix("nginx version: nginx/"),
        "wrk": first_line(["wrk", "-v"]).split(" [")[0].removeprefix("wrk "),
        "python": first_line([str(settings.python), "--version"]).removeprefix("Python "),
        "routeiq-gateway": package_version(settings.python, "routeiq-gateway"),
        "litellm": package_version(settings.litellm_bin.parent / "python", "litellm"),
        "uvicorn": package_version(settings.python, "uvicorn"),
        "aiohttp": package_version(settings.python, "aiohttp"),
    }


def reproduce_command() -> str:
    python = Path(sys.executable)
    shown = str(python.relative_to(REPO_DIR)) if python.is_relative_to(REPO_DIR) else "python"
    script = Path(sys.argv[0]).resolve()
    shown_script = str(script.relative_to(REPO_DIR)) if script.is_relative_to(REPO_DIR) else str(script)
    return shlex.join([shown, shown_script, *sys.argv[1:]])


def table_row(result: TargetResult, direct: WrkResult | None) -> str:
    if result.wrk is None or result.cpu is None:
        return f"| {result.name} | {result.status} | | | | |"
    wrk, cpu = result.wrk, result.cpu
    ratio = f"{wrk.requests_per_s / direct.requests_per_s:.4f}" if direct else "n/a"
    gateway = f"{cpu.gateway_pct:.0f}%" if cpu.gateway_pct is not None else "-"
    return (
        f"| {result.name} | {wrk.requests_per_s:,.0f} | {wrk.p50_ms:.2f} | {wrk.p99_ms:.2f} | {ratio} "
        f"| {cpu.load_cpu_busy_pct:.0f}% / {cpu.gateway_cpu_busy_pct:.0f}% / {gateway} |"
    )


def disturbed(result: TargetResult) -> str | None:
    cpu = result.cpu
    if cpu is None:
        return None
    if cpu.steal_pct > DISTURBED_PCT:
        return f"{cpu.steal_pct:.0f}% steal"
    if cpu.gateway_pct is not None and cpu.gateway_cpu_busy_pct - cpu.gateway_pct > DISTURBED_PCT:
        return f"{cpu.gateway_cpu_busy_pct - cpu.gateway_pct:.0f}% of the gateway's CPU used by other processes"
    return None


def markdown_report(settings: Settings, results: list[TargetResult], env: dict[str, str], when: dt.datetime) -> str:
    direct = next((r.wrk for r in results if r.name == "direct" and r.wrk), None)
    notes = [f"- {r.name} {r.status}: {summary(r.note)}" for r in results if r.status != "ok"]
    notes += [f"- {r.name}: disturbed run? {why}" for r in results if (why := disturbed(r))]
    return "\n".join(
        [
            f"Command (from the repository root): `{reproduce_command()}`",
            "",
            f"Date: {when:%Y-%m-%d %H:%M} UTC. CPU: {env['cpu']}, Linux {env['kernel']}.",
            f"Versions: nginx {env['nginx']}, wrk {env['wrk']}, Python {env['python']}, "
            f"routeiq-gateway {env['routeiq-gateway']}, LiteLLM {env['litellm']}, "
            f"uvicorn {env['uvicorn']}, aiohttp {env['aiohttp']}.",
            f"Load: wrk -t1 -c{settings.connections} -d{settings.duration_s}s --latency after a "
            f"{settings.warmup_s} s warm-up, with nginx on CPU {settings.load_cpu}; the gateway alone "
            f"on CPU {settings.gateway_cpu}; non-stream chat, closed loop.",
            "",
            "| target | req/s | p50 ms | p99 ms | ratio to direct | CPU: load / gateway core / gateway |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            *(table_row(r, direct) for r in results),
            *(["", *notes] if notes else []),
            *goal_lines(results),
            *translation_lines(results),
        ]
    )


# Each translation-path row beside the row it is compared with (issue 12): its native counterpart, and LiteLLM's
# proxy on the same deployment.
TRANSLATION_PAIRS = (
    ("routeiq-anthropic", "routeiq"),
    ("routeiq-gemini", "routeiq"),
    ("routeiq-anthropic-stream", "routeiq-stream"),
    ("routeiq-gemini-stream", "routeiq-stream"),
    ("routeiq-anthropic", "litellm-anthropic"),
)
TRANSLATION_GOAL_RPS = 3000.0  # anthropic chat, with p99 <= GOAL_P99_MS and >= 0.25x the native row
TRANSLATION_GOAL_RATIO = 0.25


def translation_lines(results: list[TargetResult]) -> list[str]:
    wrk = {r.name: r.wrk for r in results if r.wrk}
    lines = [
        f"- {name} / {base}: {wrk[name].requests_per_s / wrk[base].requests_per_s:.2f}x"
        for name, base in TRANSLATION_PAIRS
        if name in wrk and base in wrk
    ]
    if not lines:
        return []
    out = ["", "Translation path, ratios in this run:", *lines]
    chat, native = wrk.get("routeiq-anthropic"), wrk.get("routeiq")
    if chat is not None and native is not None:
        met = (
            chat.requests_per_s >= TRANSLATION_GOAL_RPS
            and chat.p99_ms <= GOAL_P99_MS
            and chat.requests_per_s >= TRANSLATION_GOAL_RATIO * native.requests_per_s
        )
        out += [
            "",
            f"Goal (anthropic chat >= {TRANSLATION_GOAL_RPS:,.0f} req/s, >= {TRANSLATION_GOAL_RATIO}x native, p99 <= "
            f"{GOAL_P99_MS:.0f} ms): {'met' if met else 'NOT met'} ({chat.requests_per_s:,.0f} req/s, "
            f"{chat.requests_per_s / native.requests_per_s:.2f}x, p99 {chat.p99_ms:.2f} ms).",
        ]
    streams, native_streams = wrk.get("routeiq-anthropic-stream"), wrk.get("routeiq-stream")
    if streams is not None and native_streams is not None:
        ratio = streams.requests_per_s / native_streams.requests_per_s
        out.append(
            f"Goal (anthropic streams >= {TRANSLATION_GOAL_RATIO}x native streams): "
            f"{'met' if ratio >= TRANSLATION_GOAL_RATIO else 'NOT met'} ({ratio:.2f}x)."
        )
    return out


def summary(note: str) -> str:
    # A failure note carries a log tail; the table needs its first line and the log's last one.
    lines = [line.strip() for line in note.splitlines() if line.strip()]
    return lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1]}"


KEYS_GOAL_RATIO = 0.8


def goal_lines(results: list[TargetResult]) -> list[str]:
    routeiq = next((r.wrk for r in results if r.name == "routeiq" and r.wrk), None)
    if routeiq is None:
        return []
    met = routeiq.requests_per_s >= GOAL_RPS and routeiq.p99_ms <= GOAL_P99_MS
    lines = [
        "",
        f"Goal (RouteIQ >= {GOAL_RPS:,.0f} req/s with p99 <= {GOAL_P99_MS:.0f} ms): "
        f"{'met' if met else 'NOT met'} ({routeiq.requests_per_s:,.0f} req/s, p99 {routeiq.p99_ms:.2f} ms).",
    ]
    keys = next((r.wrk for r in results if r.name == "routeiq-keys" and r.wrk), None)
    if keys is not None:
        ratio = keys.requests_per_s / routeiq.requests_per_s
        lines.append(
            f"Virtual keys (routeiq-keys >= {KEYS_GOAL_RATIO}x the master-key routeiq row): "
            f"{'met' if ratio >= KEYS_GOAL_RATIO else 'NOT met'} ({ratio:.3f}x)."
        )
    return lines


def settings_document(settings: Settings) -> dict[str, Any]:
    """The run's settings as plain JSON values, for the results file."""
    plain: dict[str, Any] = {
        k: v if isinstance(v, int | float) else str(v) for k, v in dataclasses.asdict(settings).items()
    }
    plain["targets"], plain["explicit"] = list(settings.targets), sorted(settings.explicit)
    return plain


def write_json(settings: Settings, results: list[TargetResult], env: dict[str, str], when: dt.datetime) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"proxy_throughput-{when:%Y%m%dT%H%M%SZ}.json"
    plain = settings_document(settings)
    document: dict[str, Any] = {
        "date": when.isoformat(),
        "command": reproduce_command(),
        "settings": plain,
        "environment": env,
        "goal": {"requests_per_s": GOAL_RPS, "p99_ms": GOAL_P99_MS},
        "results": [dataclasses.asdict(r) for r in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
