"""What the sidecar agents (`routeiq-config-sync`, `routeiq-model-sync`) have in common in the harness.

Both are console scripts in the venv, started the way a pod starts them (settings by environment variable,
a health server on HEALTH_PORT, a free loopback port here), and both report on themselves the same way: a
JSON health document at their own path, /health/readiness, /health/liveness, Prometheus /metrics and a JSON
log. `launch_sidecar()` starts one and waits for liveness; `SidecarHandle` reads what it reports (each agent's
handle subclasses it and sets `health_path`); `run_sidecar()` runs one to completion; `parse_metrics()` turns
Prometheus text into samples.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .gateway_process import VolumeDirs
from .processes import ManagedProcess, child_env, free_port, wait_until

LIVE_PATH = "/health/liveness"
READY_PATH = "/health/readiness"
METRICS_PATH = "/metrics"

Sample = tuple[str, dict[str, str], float]


def venv_script(name: str) -> Path:
    """A console script installed next to the running interpreter (the project's venv)."""
    return Path(sys.executable).with_name(name)


def http_get(url: str, timeout: float = 2.0) -> tuple[int | None, bytes]:
    """(status, body) of a GET; (None, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, ValueError):
        return None, b""


def parse_metrics(text: str) -> list[Sample]:
    """Prometheus text → [(sample name, labels, value)] (counters appear as `<name>_total`)."""
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


class SidecarHandle:
    """One running agent in polling mode; a subclass per agent sets `health_path` (its JSON health document)."""

    health_path: str = ""

    def __init__(self, process: ManagedProcess, health_port: int, dirs: VolumeDirs, target: str) -> None:
        self.process = process
        self.health_port = health_port
        self.base_url = f"http://127.0.0.1:{health_port}"
        self.dirs = dirs
        self.target = target  # what it syncs from (CONFIG_SOURCE, MODEL_REGISTRY), for repr

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    # -- what the agent reports -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """GET the agent's health document (`health_path`); an AssertionError unless it answers 200."""
        status, body = http_get(self.url(self.health_path))
        if status != 200:
            raise AssertionError(f"GET {self.health_path} answered {status}: {body[:300]!r}")
        document: dict[str, Any] = json.loads(body)
        return document

    def readiness_status(self) -> int | None:
        return http_get(self.url(READY_PATH))[0]

    def metric_samples(self) -> list[Sample]:
        status, body = http_get(self.url(METRICS_PATH))
        if status != 200:
            raise AssertionError(f"GET {METRICS_PATH} answered {status}")
        return parse_metrics(body.decode())

    def metric(self, sample: str, /, **labels: str) -> float:
        """The value of one sample (0.0 when absent, as a counter not yet incremented is absent). Labels are
        keyword arguments (`name=` included: the sample's name is positional-only)."""
        for sample_name, sample_labels, value in self.metric_samples():
            if sample_name == sample and all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
        return 0.0

    def wait_health(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0, message: str = "health"
    ) -> dict[str, Any]:
        """Poll the health document until predicate(document); return that document."""
        seen: list[dict[str, Any]] = [{}]

        def check() -> bool:
            status, body = http_get(self.url(self.health_path))
            if status != 200:
                return False
            seen[0] = json.loads(body)
            return predicate(seen[0])

        wait_until(
            check,
            timeout,
            message=message,
            detail=lambda: f"last health: {seen[0]}\n--- agent log tail ---\n{self.log_tail()}",
        )
        return seen[0]

    # -- logs and process -------------------------------------------------------------------------------

    def log_text(self) -> str:
        return self.process.log_text()

    def log_tail(self, chars: int = 4000) -> str:
        return self.process.log_tail(chars)

    def json_logs(self) -> list[dict[str, Any]]:
        return self.process.json_logs()

    def wait_for_log(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0, after: int = 0
    ) -> dict[str, Any]:
        """The first JSON log record after the first `after` ones that matches; waits for it."""
        return self.process.wait_for_json_log(predicate, timeout, after, message="agent log record", who="agent")

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def is_running(self) -> bool:
        return self.process.is_running()

    def stop(self, timeout: float = 5.0) -> int | None:
        return self.process.stop(timeout=timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url} {self.target} {self.process!r}>"


def launch_sidecar(
    script: Path,
    dirs: VolumeDirs,
    env_for_port: Callable[[int], Mapping[str, str]],
    *,
    health_port: int | None,
    log_name: str,
    start_timeout: float,
) -> tuple[ManagedProcess, int]:
    """Start `script` (polling mode) on `dirs` with env_for_port(health port) as its complete environment and
    wait until GET /health/liveness answers 200; return the process and its health port."""
    if not script.exists():
        package = script.name.removeprefix("routeiq-")
        raise FileNotFoundError(f"{script} not found; run `make setup` to install the {package} package")
    dirs.create()
    port = health_port or free_port()
    process = ManagedProcess([str(script)], dirs.root / log_name, env=env_for_port(port), name=script.name)
    process.start_http_ok(f"http://127.0.0.1:{port}{LIVE_PATH}", timeout=start_timeout)
    return process, port


def run_sidecar(
    script: Path, args: Sequence[str | Path], env: Mapping[str, str] | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run `script ARGS` to completion, output captured; `env` is complete (None: child_env())."""
    return subprocess.run(
        [str(script), *(str(a) for a in args)],
        env=dict(env) if env is not None else child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
