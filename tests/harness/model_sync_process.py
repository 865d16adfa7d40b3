"""Run the real `routeiq-model-sync` agent against a per-test volume, and its operator commands.

The agent is started the way a pod starts it: every setting by environment variable (MODEL_REGISTRY,
MODEL_SYNC_INTERVAL, MODEL_SIGNING_PUBLIC_KEY, REDIS_URL, MODEL_SYNC_FALLBACK_DELAY_MAX, HEALTH_PORT,
ROUTEIQ_CONFIG_DIR/MODELS_DIR/RUN_DIR, AWS_*), its health server on a free loopback port. `ModelSyncHandle`
reads what the agent says about itself (/health/model-sync, /metrics, its JSON log). `run_model_sync()` runs
the CLI to completion (`--once`, `keygen`, `publish`, `rollback`), because that is how an operator and a
training job drive it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .gateway_process import VolumeDirs
from .processes import ManagedProcess, child_env
from .sidecar_process import SidecarHandle, launch_sidecar, run_sidecar, venv_script
from .sidecar_process import parse_metrics as parse_metrics  # re-exported: tests import it from here

HEALTH_PATH = "/health/model-sync"
MODEL_SYNC_INTERVAL_S = 0.5
MODEL_SYNC_FALLBACK_DELAY_MAX_S = 1.0


def model_sync_script() -> Path:
    """The console script installed next to the running interpreter (the project's venv)."""
    return venv_script("routeiq-model-sync")


def model_sync_env(
    dirs: VolumeDirs,
    registry: str,
    *,
    s3_env: Mapping[str, str] | None = None,
    interval: float = MODEL_SYNC_INTERVAL_S,
    public_key: Path | str | None = None,
    redis_url: str | None = None,
    fallback_delay_max: float = MODEL_SYNC_FALLBACK_DELAY_MAX_S,
    health_port: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The agent's environment, as a pod spec would set it; `extra` wins.

    public_key: a path to signing.pub or its PEM text (MODEL_SIGNING_PUBLIC_KEY accepts both); signatures
    are required (MODEL_REQUIRE_SIGNATURE=true) unless `extra` says otherwise. redis_url None: no REDIS_URL.
    """
    env: dict[str, str] = {
        **dirs.env(),
        "MODEL_REGISTRY": registry,
        "MODEL_SYNC_INTERVAL": str(interval),
        "MODEL_SYNC_FALLBACK_DELAY_MAX": str(fallback_delay_max),
        "MODEL_REQUIRE_SIGNATURE": "true",
        **(s3_env or {}),
    }
    if public_key is not None:
        env["MODEL_SIGNING_PUBLIC_KEY"] = str(public_key)
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    if health_port is not None:
        env["HEALTH_PORT"] = str(health_port)
    env.update(extra or {})
    return child_env(env)


class ModelSyncHandle(SidecarHandle):
    """One running agent in polling mode. Create through the `start_model_sync` fixture.

    health() is GET /health/model-sync: {status, registry, redis, models: {name: {version, sha256, synced_at,
    last_result, last_error}}}.
    """

    health_path = HEALTH_PATH

    def __init__(self, process: ManagedProcess, health_port: int, dirs: VolumeDirs, registry: str) -> None:
        super().__init__(process, health_port, dirs, registry)
        self.registry = registry

    def model(self, name: str) -> dict[str, Any]:
        """The health document's entry for one model ({} while the agent has not reported on it)."""
        entry: dict[str, Any] = self.health().get("models", {}).get(name, {})
        return entry

    def wait_model(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0, message: str = ""
    ) -> dict[str, Any]:
        """Poll until predicate(health["models"][name]); return that entry."""
        document = self.wait_health(
            lambda h: predicate(h.get("models", {}).get(name, {})), timeout, message or f"model {name} condition"
        )
        entry: dict[str, Any] = document["models"][name]
        return entry

    def wait_version(self, name: str, version: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until the agent reports `name` installed at `version` with no error; return the entry."""
        return self.wait_model(
            name,
            lambda m: m.get("version") == version and m.get("last_error") is None,
            timeout,
            f"{name} at version {version} without error",
        )


def launch_model_sync(
    dirs: VolumeDirs,
    registry: str,
    *,
    s3_env: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    interval: float = MODEL_SYNC_INTERVAL_S,
    public_key: Path | str | None = None,
    redis_url: str | None = None,
    fallback_delay_max: float = MODEL_SYNC_FALLBACK_DELAY_MAX_S,
    health_port: int | None = None,
    log_name: str = "model-sync.log",
    start_timeout: float = 20.0,
) -> ModelSyncHandle:
    """Start `routeiq-model-sync` (polling mode) on `dirs` and wait until its health server answers."""
    process, port = launch_sidecar(
        model_sync_script(),
        dirs,
        lambda port: model_sync_env(
            dirs,
            registry,
            s3_env=s3_env,
            interval=interval,
            public_key=public_key,
            redis_url=redis_url,
            fallback_delay_max=fallback_delay_max,
            health_port=port,
            extra=env,
        ),
        health_port=health_port,
        log_name=log_name,
        start_timeout=start_timeout,
    )
    return ModelSyncHandle(process, port, dirs, registry)


def run_model_sync(
    args: Sequence[str | Path], env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run `routeiq-model-sync ARGS` to completion (`--once`, `keygen`, `publish`, `rollback`). `env` is
    complete (build it with model_sync_env or child_env); None: child_env()."""
    return run_sidecar(model_sync_script(), args, env, timeout)


class StartModelSync(Protocol):
    """Type of the `start_model_sync` fixture, for annotations in tests."""

    def __call__(
        self,
        registry: str,
        *,
        root: Path | None = None,
        env: Mapping[str, str] | None = None,
        interval: float = MODEL_SYNC_INTERVAL_S,
        s3_env: Mapping[str, str] | None = None,
        public_key: Path | str | None = None,
        redis_url: str | None = None,
        fallback_delay_max: float = MODEL_SYNC_FALLBACK_DELAY_MAX_S,
    ) -> ModelSyncHandle: ...
