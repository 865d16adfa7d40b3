"""Run the real `routeiq-gateway` console script against a per-test config/run/models volume."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import openai
import yaml
from routeiq_shared.atomic import atomic_write

from .processes import ManagedProcess, child_env, free_port

READY_PATH = "/health/readiness"


def gateway_script() -> Path:
    """The console script installed next to the running interpreter (the project's venv)."""
    return Path(sys.executable).with_name("routeiq-gateway")


def config_text(config: str | Mapping[str, Any]) -> str:
    return config if isinstance(config, str) else yaml.safe_dump(dict(config), sort_keys=False)


@dataclass(frozen=True)
class VolumeDirs:
    """The pod's shared volume, in miniature: the three directories the services agree on."""

    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def config_path(self) -> Path:
        return self.config_dir / "config.yaml"

    @property
    def candidates_path(self) -> Path:
        return self.config_dir / "llm_candidates.json"

    def create(self) -> VolumeDirs:
        for directory in (self.config_dir, self.run_dir, self.models_dir):
            directory.mkdir(parents=True, exist_ok=True)
        return self

    def env(self) -> dict[str, str]:
        return {
            "ROUTEIQ_CONFIG_DIR": str(self.config_dir),
            "ROUTEIQ_RUN_DIR": str(self.run_dir),
            "ROUTEIQ_MODELS_DIR": str(self.models_dir),
        }


class GatewayHandle:
    """One running gateway process. Create through the `start_gateway` fixture."""

    def __init__(self, process: ManagedProcess, host: str, port: int, dirs: VolumeDirs, admin_port: int = 0) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.base_url = f"http://{host}:{port}"
        self.admin_port = admin_port
        self.admin_url = f"http://{host}:{admin_port}"  # the admin API's own listener (:4001 in a pod)
        self.dirs = dirs
        self.config_path = dirs.config_path
        self.candidates_path = dirs.candidates_path

    # -- clients ----------------------------------------------------------------------------------------

    def openai_client(self, api_key: str = "sk-test", **kwargs: Any) -> openai.OpenAI:
        """SDK client on the gateway; max_retries=0 so a test sees exactly what the gateway answered."""
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 30.0)
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=api_key, **kwargs)

    def async_openai_client(self, api_key: str = "sk-test", **kwargs: Any) -> openai.AsyncOpenAI:
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 30.0)
        return openai.AsyncOpenAI(base_url=f"{self.base_url}/v1", api_key=api_key, **kwargs)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def admin(self, path: str) -> str:
        """A URL on the admin port."""
        return f"{self.admin_url}/{path.lstrip('/')}"

    def metric(self, sample: str, /, **labels: str) -> float:
        """One sample of GET /metrics (0.0 when absent); labels as keyword arguments, matched as given."""
        from .sidecar_process import http_get, parse_metrics  # the sidecars' scrape parser, shared

        status, body = http_get(self.url("/metrics"), timeout=5.0)
        if status != 200:
            raise AssertionError(f"GET /metrics answered {status}")
        for name, have, value in parse_metrics(body.decode()):
            if name == sample and all(have.get(k) == v for k, v in labels.items()):
                return value
        return 0.0

    # -- config on the shared volume --------------------------------------------------------------------

    def write_config(self, config: str | Mapping[str, Any]) -> None:
        """Replace config.yaml atomically (then `reload()` or let a watcher notice)."""
        atomic_write(self.config_path, config_text(config).encode())

    def write_candidates(self, candidates: Mapping[str, Any]) -> None:
        atomic_write(self.candidates_path, json.dumps(candidates, indent=2).encode())

    def reload(self) -> None:
        """SIGHUP: the contract's way to make the gateway re-read config and candidates."""
        self.send_signal(signal.SIGHUP)

    # -- process ----------------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def send_signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit by itself (e.g. after SIGTERM drain); return its exit code."""
        return self.process.wait_exit(timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        return self.process.stop(timeout=timeout)

    # -- logs -------------------------------------------------------------------------------------------

    def log_text(self) -> str:
        return self.process.log_text()

    def json_logs(self) -> list[dict[str, Any]]:
        """Every stdout/stderr line that parses as a JSON object, in order; other lines are skipped."""
        return self.process.json_logs()

    def wait_for_log(
        self, match: str | Callable[[dict[str, Any]], bool], timeout: float = 10.0, after: int = 0
    ) -> dict[str, Any]:
        """Wait for a JSON log record; `match` is a substring of its "message"/"msg"/"event" field or a
        predicate. `after`: skip the first N records (pass len(handle.json_logs()) taken before acting)."""
        predicate = match if callable(match) else _message_contains(match)
        return self.process.wait_for_json_log(
            predicate, timeout, after, message=f"log record matching {match!r}", who="gateway"
        )

    def __repr__(self) -> str:
        return f"<GatewayHandle {self.base_url} {self.process!r}>"


def _message_contains(text: str) -> Callable[[dict[str, Any]], bool]:
    def predicate(record: dict[str, Any]) -> bool:
        return any(text in str(record.get(key, "")) for key in ("message", "msg", "event"))

    return predicate


class StartGateway(Protocol):
    """Type of the `start_gateway` fixture, for annotations in tests."""

    def __call__(
        self,
        config: str | Mapping[str, Any],
        env: Mapping[str, str] | None = None,
        candidates: Mapping[str, Any] | None = None,
        *,
        root: Path | None = None,
        port: int | None = None,
        wait_ready: bool = True,
        ready_timeout: float = 30.0,
    ) -> GatewayHandle: ...


def launch_gateway(
    dirs: VolumeDirs,
    config: str | Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    candidates: Mapping[str, Any] | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    log_name: str = "gateway.log",
    wait_ready: bool = True,
    ready_timeout: float = 30.0,
) -> GatewayHandle:
    """Write the volume, start the gateway, and (unless wait_ready=False) wait for readiness == 200."""
    script = gateway_script()
    if not script.exists():
        raise FileNotFoundError(f"{script} not found; run `make setup` to install the gateway package")
    dirs.create()
    atomic_write(dirs.config_path, config_text(config).encode())
    if candidates is not None:
        atomic_write(dirs.candidates_path, json.dumps(candidates, indent=2).encode())
    port = port or free_port(host)
    admin_port = int((env or {}).get("ROUTEIQ_ADMIN_PORT") or free_port(host))
    process_env = child_env({**dirs.env(), "ROUTEIQ_ADMIN_PORT": str(admin_port), **(env or {})})
    argv = [str(script), "--config", str(dirs.config_path), "--host", host, "--port", str(port)]
    process = ManagedProcess(argv, dirs.root / log_name, env=process_env, name="routeiq-gateway")
    process.start()
    handle = GatewayHandle(process, host, port, dirs, admin_port)
    if wait_ready:
        try:
            process.wait_http_ok(handle.url(READY_PATH), timeout=ready_timeout)
        except BaseException:
            process.stop()
            raise
    return handle
