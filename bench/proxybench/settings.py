"""What one benchmark run measures and how: fixed names and keys, and the run's settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

MODEL = "bench-model"
GEMINI_MODEL = "gemini-2.0-flash"  # the upstream model of the gemini rows: one LiteLLM knows
MASTER_KEY = "sk-bench-master"  # what clients (wrk, the check request) send to every target
UPSTREAM_KEY = "sk-bench-upstream"  # what the gateways send to nginx, which ignores it
CHAT_PATH = "/v1/chat/completions"
READINESS_PATH = "/health/readiness"

# In run order; direct is the baseline of every ratio, so it always runs, and first.
MMLU_CSV = REPO_DIR.parent / "shared" / "data" / "routellm-mmlu" / "train.csv"

TARGETS = (
    "direct",
    "bare-python",
    "routeiq",
    "routeiq-traced",
    "routeiq-auto",
    "routeiq-keys",
    "litellm",
    # The translation path (issue 12): an anthropic/ deployment, and streams of STREAM_CHUNKS deltas beside
    # the native path's.
    "routeiq-anthropic",
    "routeiq-stream",
    "routeiq-anthropic-stream",
    "routeiq-gemini",
    "routeiq-gemini-stream",
    "litellm-anthropic",
)
STREAM_TARGETS = frozenset({"routeiq-stream", "routeiq-anthropic-stream", "routeiq-gemini-stream"})
STREAM_CHUNKS = 100

# The goal from the issue, checked on the RouteIQ row (native path, one core, 32 connections).
GOAL_RPS = 5000.0
GOAL_P99_MS = 20.0


@dataclasses.dataclass(frozen=True)
class Settings:
    duration_s: int
    warmup_s: int
    connections: int
    load_cpu: int
    gateway_cpu: int
    targets: tuple[str, ...]
    explicit: frozenset[str]  # targets named with --only: a missing install is then a failure, not a skip
    python: Path  # runs the bare pass-through
    routeiq_bin: Path
    litellm_bin: Path
    ready_timeout_s: float
    prompts: Path | None = None  # a CSV with a `prompt` column: varied bodies (wrk/prompts.lua) for every target
    auto_kind: str = "gain"  # the built-in router kind the routeiq-auto target trains and serves
    bodies: Path | None = None  # the bodies file written from `prompts` for this run (set by the run)
