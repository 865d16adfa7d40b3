"""Run the real `routeiq-config-sync` agent against a per-test volume, and the `aws` CLI as the operator.

The agent is started the way a pod starts it: every setting by environment variable (CONFIG_SOURCE,
CONFIG_SYNC_INTERVAL, HEALTH_PORT, ROUTEIQ_CONFIG_DIR/RUN_DIR, AWS_*), its health server on a free loopback
port. `ConfigSyncHandle` reads what the agent says about itself (/health/config-sync, /health/readiness,
/metrics, its JSON log). `run_config_sync()` runs it to completion (`--once`, `rollout …`), and `AwsCli` runs
`aws s3 …` as a subprocess, because that is how an operator rolls config.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families

from .gateway_process import VolumeDirs
from .moto_s3 import CREDENTIALS, REGION, MotoS3
from .processes import ManagedProcess, child_env, free_port, wait_until

HEALTH_PATH = "/health/config-sync"
READY_PATH = "/health/readiness"
LIVE_PATH = "/health/liveness"
DEFAULT_INTERVAL_S = 0.5


def config_sync_script() -> Path:
    """The console script installed next to the running interpreter (the project's venv)."""
    return Path(sys.executable).with_name("routeiq-config-sync")


def aws_script() -> Path:
    return Path(sys.executable).with_name("aws")


def agent_env(
    dirs: VolumeDirs,
    source: str,
    *,
    s3_env: Mapping[str, str] | None = None,
    interval: float = DEFAULT_INTERVAL_S,
    health_port: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The agent's environment, as a pod spec would set it; `extra` wins."""
    env: dict[str, str] = {
        **dirs.env(),
        "CONFIG_SOURCE": source,
        "CONFIG_SYNC_INTERVAL": str(interval),
        **(s3_env or {}),
    }
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


class ConfigSyncHandle:
    """One running agent in polling mode. Create through the `start_config_sync` fixture."""

    def __init__(self, process: ManagedProcess, health_port: int, dirs: VolumeDirs, source: str) -> None:
        self.process = process
        self.health_port = health_port
        self.base_url = f"http://127.0.0.1:{health_port}"
        self.dirs = dirs
        self.source = source

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    # -- what the agent reports -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """GET /health/config-sync: {status, last_success_at, last_attempt_at, version, etag, last_error, …}."""
        status, body = _get(self.url(HEALTH_PATH))
        if status != 200:
            raise AssertionError(f"GET {HEALTH_PATH} answered {status}: {body[:300]!r}")
        document: dict[str, Any] = json.loads(body)
        return document

    def readiness_status(self) -> int | None:
        return _get(self.url(READY_PATH))[0]

    def metric_samples(self) -> list[tuple[str, dict[str, str], float]]:
        status, body = _get(self.url("/metrics"))
        if status != 200:
            raise AssertionError(f"GET /metrics answered {status}")
        return [
            (sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
        ]

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample (0.0 when absent, as a counter not yet incremented is absent)."""
        for sample_name, sample_labels, value in self.metric_samples():
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
        return 0.0

    def wait_health(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0, message: str = "health"
    ) -> dict[str, Any]:
        """Poll /health/config-sync until predicate(document); return that document."""
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

    def wait_version(self, version: str, timeout: float = 10.0) -> dict[str, Any]:
        return self.wait_health(
            lambda h: h.get("version") == version and h.get("status") == "ok",
            timeout,
            message=f"agent status ok at version {version}",
        )

    # -- logs and process -------------------------------------------------------------------------------

    def log_text(self) -> str:
        return self.process.log_text()

    def log_tail(self, chars: int = 4000) -> str:
        return self.process.log_tail(chars)

    def json_logs(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for line in self.log_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
        return records

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def stop(self, timeout: float = 5.0) -> int | None:
        return self.process.stop(timeout=timeout)

    def __repr__(self) -> str:
        return f"<ConfigSyncHandle {self.base_url} {self.source} {self.process!r}>"


def launch_config_sync(
    dirs: VolumeDirs,
    source: str,
    *,
    s3_env: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    interval: float = DEFAULT_INTERVAL_S,
    health_port: int | None = None,
    log_name: str = "config-sync.log",
    start_timeout: float = 20.0,
) -> ConfigSyncHandle:
    """Start `routeiq-config-sync` (polling mode) on `dirs` and wait until its health server answers."""
    script = config_sync_script()
    if not script.exists():
        raise FileNotFoundError(f"{script} not found; run `make setup` to install the config-sync package")
    dirs.create()
    port = health_port or free_port()
    process_env = agent_env(dirs, source, s3_env=s3_env, interval=interval, health_port=port, extra=env)
    process = ManagedProcess([str(script)], dirs.root / log_name, env=process_env, name="routeiq-config-sync")
    process.start()
    try:
        process.wait_http_ok(f"http://127.0.0.1:{port}{LIVE_PATH}", timeout=start_timeout)
    except BaseException:
        process.stop()
        raise
    return ConfigSyncHandle(process, port, dirs, source)


def run_config_sync(
    args: Sequence[str], env: Mapping[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run `routeiq-config-sync ARGS` to completion (`--once`, `rollout promote …`); `env` is complete
    (build it with agent_env or child_env)."""
    return subprocess.run(
        [str(config_sync_script()), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


class StartConfigSync(Protocol):
    """Type of the `start_config_sync` fixture, for annotations in tests."""

    def __call__(
        self,
        source: str,
        *,
        root: Path | None = None,
        env: Mapping[str, str] | None = None,
        interval: float = DEFAULT_INTERVAL_S,
        s3_env: Mapping[str, str] | None = None,
    ) -> ConfigSyncHandle: ...


# -- the operator's tool ------------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class AwsCli:
    """`aws` (the CLI installed in the venv) against one S3 endpoint, run as a subprocess per call."""

    def __init__(self, endpoint_url: str, work_dir: Path) -> None:
        self.endpoint_url = endpoint_url
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._files = 0
        self.env = child_env(
            {
                "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                # never read a developer's ~/.aws
                "AWS_CONFIG_FILE": str(self.work_dir / "aws-config-none"),
                "AWS_SHARED_CREDENTIALS_FILE": str(self.work_dir / "aws-credentials-none"),
            }
        )

    @classmethod
    def for_moto(cls, moto: MotoS3, work_dir: Path) -> AwsCli:
        return cls(moto.endpoint_url, work_dir)

    def argv(self, *args: str) -> list[str]:
        return [str(aws_script()), *args, "--endpoint-url", self.endpoint_url]

    def run(self, *args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.argv(*args), env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"aws {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def write_file(self, name: str, data: bytes) -> Path:
        """A fresh local file holding `data` (what the operator would upload)."""
        self._files += 1
        path = self.work_dir / f"{self._files:03d}-{name}"
        path.write_bytes(data)
        return path

    def cp_args(self, data: bytes, dest: str, metadata: Mapping[str, str] | None = None) -> list[str]:
        path = self.write_file(dest.rsplit("/", 1)[-1] or "object", data)
        args = ["s3", "cp", str(path), dest, "--only-show-errors"]
        if metadata:
            args += ["--metadata", ",".join(f"{k}={v}" for k, v in metadata.items())]
        return args

    def upload(self, data: bytes, dest: str, metadata: Mapping[str, str] | None = None) -> float:
        """`aws s3 cp FILE s3://bucket/key`; returns time.time() when the command had completed."""
        self.run(*self.cp_args(data, dest, metadata))
        return time.time()

    def make_bucket(self, bucket: str, *, versioned: bool = False) -> None:
        self.run("s3api", "create-bucket", "--bucket", bucket)
        if versioned:
            self.enable_versioning(bucket)

    def enable_versioning(self, bucket: str) -> None:
        self.run("s3api", "put-bucket-versioning", "--bucket", bucket, "--versioning-configuration", "Status=Enabled")


def start_moto_at(log_dir: Path, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> MotoS3:
    """A `moto_server` on a given port (to stop it and start it again at the same address). moto keeps its
    state in memory: a restarted server is empty."""
    script = Path(sys.executable).with_name("moto_server")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
    argv = [*base, "-H", host, "-p", str(port)]
    process = ManagedProcess(argv, Path(log_dir) / f"moto_server-{port}.log", env=child_env(), name="moto_server")
    process.start()
    try:
        process.wait_http_ok(f"http://{host}:{port}/moto-api/", timeout=timeout)
    except BaseException:
        process.stop()
        raise
    return MotoS3(process, host, port)
