"""`routeiq-gateway check-config FILE [--candidates FILE]`: validate as a reload would, then say so.

Prints every problem with its key's path (one per line) and every LiteLLM key accepted with no effect
(`warning:` lines), then exits 0 (loadable) or 1, as `nginx -t` and `promtool check config` do. It resolves
`os.environ/` and `os.file/` references in this shell, as the gateway would in its container, and builds the
serving state (custom routers imported, egress allow-list parsed), but starts nothing and changes no environment.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from routeiq_shared.config_schema import ConfigError, load_config

from routeiq_gateway.providers.egress_setup import egress_policy
from routeiq_gateway.state import build_state


class Unreadable(Exception):
    """A file check-config was given cannot be read at all (missing, a directory, no permission)."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise Unreadable(f"{path}: is a directory, not a {what}") from None
    except FileNotFoundError:
        raise Unreadable(f"{path}: no such file") from None
    except OSError as exc:
        raise Unreadable(f"{path}: {exc.strerror or exc}") from None


def check(config_path: Path, candidates_path: Path | None) -> tuple[list[str], list[str]]:
    """(problems, warnings), each a line to print; no problems means a reload would load these files."""
    config_raw = _read(config_path, "config file")
    candidates_raw = _read(candidates_path, "candidates file") if candidates_path is not None else None
    try:
        loaded = load_config(config_raw, candidates_raw)
    except ConfigError as exc:
        return [
            f"{exc.source}: {path}: {message}" if path else f"{exc.source}: {message}" for path, message in exc.problems
        ], []
    state = build_state(loaded, int(time.time()))
    try:
        egress_policy(state)
    except ValueError as exc:
        return [f"config.yaml: routeiq.egress.allowed_networks: {exc}"], list(loaded.warnings)
    return [], list(loaded.warnings)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="routeiq-gateway check-config", description=__doc__)
    parser.add_argument("config", type=Path, help="config.yaml")
    parser.add_argument("--candidates", type=Path, help="llm_candidates.json (default: beside the config, if there)")
    args = parser.parse_args(argv)
    candidates = args.candidates
    if candidates is None:
        beside = args.config.parent / "llm_candidates.json"
        candidates = beside if beside.is_file() else None
    try:
        problems, warnings = check(args.config, candidates)
    except Unreadable as exc:
        sys.stderr.write(f"routeiq-gateway check-config: {exc}\n")
        return 1
    for line in warnings:
        sys.stdout.write(f"warning: {line}\n")
    for line in problems:
        sys.stdout.write(f"error: {line}\n")
    if problems:
        sys.stdout.write(f"{args.config}: {len(problems)} problem(s); a reload would keep the previous config\n")
        return 1
    sys.stdout.write(f"{args.config}: ok\n")
    return 0
