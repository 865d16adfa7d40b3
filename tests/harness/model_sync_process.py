"""Run the real `routeiq-model-sync` agent against a per-test volume, and its operator commands.

The agent is started the way a pod starts it: every setting by environment variable (MODEL_REGISTRY,
MODEL_SYNC_INTERVAL, MODEL_SIGNING_PUBLIC_KEY, REDIS_URL, MODEL_SYNC_FALLBACK_DELAY_MAX, HEALTH_PORT,
ROUTEIQ_CONFIG_DIR/MODELS_DIR/RUN_DIR, AWS_*), its health server on a free loopback port. `ModelSyncHandle`
reads what the agent says about itself (/health/model-sync, /metrics, its JSON log). `run_model_sync()` runs
the CLI to completion (`--once`, `keygen`, `publish`, `rollback`), because that is how an operator and a
training job drive it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families

from .gateway_process import VolumeDirs
from .processes import ManagedProcess, child_env, free_port, wait_until

HEALTH_PATH = "/health/model-sync"
LIVE_PATH = "/health/liveness"
READY_PATH = "/health/readiness"
MODEL_SYNC_INTERVAL_S = 0.5
MODEL_SYNC_FALLBACK_DELAY_MAX_S = 1.0


def model_sync_script() -> Path:
    """The console script installed next to the running interpreter (the project's venv)."""
    return Path(sys.executable).with_name("routeiq-model-sync")


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


def _get(url: str, timeout: float = 2.0) -> tuple[int | None, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, ValueError):
        return None, b""


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text → [(sample name, labels, value)] (counters appear as `<name>_total`)."""
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def json_records(text: str) -> list[dict[str, Any]]:
    """Every line of `text` that parses as a JSON object, in order."""
    records: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class ModelSyncHandle:
    """One running agent in polling mode. Create through the `start_model_sync` fixture."""

    def __init__(self, process: ManagedProcess, health_port: int, dirs: VolumeDirs, registry: str) -> None:
        self.process = process
        self.health_port = health_port
        self.base_url = f"http://127.0.0.1:{health_port}"
        self.dirs = dirs
        self.registry = registry

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    # -- what the agent reports -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """GET /health/model-sync: {status, registry, redis, models: {name: {version, sha256, synced_at,
        last_result, last_error}}}."""
        status, body = _get(self.url(HEALTH_PATH))
        if status != 200:
            raise AssertionError(f"GET {HEALTH_PATH} answered {status}: {body[:300]!r}")
        document: dict[str, Any] = json.loads(body)
        return document

    def model(self, name: str) -> dict[str, Any]:
        """The health document's entry for one model ({} while the agent has not reported on it)."""
        entry: dict[str, Any] = self.health().get("models", {}).get(name, {})
        return entry

    def readiness_status(self) -> int | None:
        return _get(self.url(READY_PATH))[0]

    def metric_samples(self) -> list[tuple[str, dict[str, str], float]]:
        status, body = _get(self.url("/metrics"))
        if status != 200:
            raise AssertionError(f"GET /metrics answered {status}")
        return parse_metrics(body.decode())

    def metric(self, sample: str, /, **labels: str) -> float:
        """The value of one sample (0.0 when absent, as a counter not yet incremented is absent). Labels are
        keyword arguments (`name=` included: the metric's name is positional-only)."""
        for sample_name, sample_labels, value in self.metric_samples():
            if sample_name == sample and all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
        return 0.0

    def wait_health(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0, message: str = "health"
    ) -> dict[str, Any]:
        """Poll /health/model-sync until predicate(document); return that document."""
        seen: list[dict[str, Any]] = [{}]

        def check() -> bool:
            status, body = _get(self.url(HEALTH_PATH))
            if status != 200:
                return False
            seen[0] = json.loads(body)
            return predicate(seen[0])

        try:
            wait_until(check, timeout, message=message)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\nlast health: {seen[0]}\n--- agent log tail ---\n{self.log_tail()}") from None
        return seen[0]

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

    # -- logs and process -------------------------------------------------------------------------------

    def log_text(self) -> str:
        return self.process.log_text()

    def log_tail(self, chars: int = 4000) -> str:
        return self.process.log_tail(chars)

    def json_logs(self) -> list[dict[str, Any]]:
        return json_records(self.log_text())

    def wait_for_log(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0, after: int = 0
    ) -> dict[str, Any]:
        """The first JSON log record after the first `after` ones that matches; waits for it."""
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = [r for r in self.json_logs()[after:] if predicate(r)]
            return bool(found)

        try:
            wait_until(check, timeout, message="agent log record")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n--- agent log tail ---\n{self.log_tail()}") from None
        return found[0]

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def is_running(self) -> bool:
        return self.process.is_running()

    def stop(self, timeout: float = 5.0) -> int | None:
        return self.process.stop(timeout=timeout)

    def __repr__(self) -> str:
        return f"<ModelSyncHandle {self.base_url} {self.registry} {self.process!r}>"


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
    script = model_sync_script()
    if not script.exists():
        raise FileNotFoundError(f"{script} not found; run `make setup` to install the model-sync package")
    dirs.create()
    port = health_port or free_port()
    process_env = model_sync_env(
        dirs,
        registry,
        s3_env=s3_env,
        interval=interval,
        public_key=public_key,
        redis_url=redis_url,
        fallback_delay_max=fallback_delay_max,
        health_port=port,
        extra=env,
    )
    process = ManagedProcess([str(script)], dirs.root / log_name, env=process_env, name="routeiq-model-sync")
    process.start()
    try:
        process.wait_http_ok(f"http://127.0.0.1:{port}{LIVE_PATH}", timeout=start_timeout)
    except BaseException:
        process.stop()
        raise
    return ModelSyncHandle(process, port, dirs, registry)


def run_model_sync(
    args: Sequence[str | Path], env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run `routeiq-model-sync ARGS` to completion (`--once`, `keygen`, `publish`, `rollback`). `env` is
    complete (build it with model_sync_env or child_env); None: child_env()."""
    return subprocess.run(
        [str(model_sync_script()), *(str(a) for a in args)],
        env=dict(env) if env is not None else child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


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
