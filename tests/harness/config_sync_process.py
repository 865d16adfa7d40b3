"""Run the real `routeiq-config-sync` agent against a per-test volume, and the `aws` CLI as the operator.

The agent is started the way a pod starts it: every setting by environment variable (CONFIG_SOURCE,
CONFIG_SYNC_INTERVAL, HEALTH_PORT, ROUTEIQ_CONFIG_DIR/RUN_DIR, AWS_*), its health server on a free loopback
port. `ConfigSyncHandle` reads what the agent says about itself (/health/config-sync, /health/readiness,
/metrics, its JSON log). `run_config_sync()` runs it to completion (`--once`, `rollout …`), and `AwsCli` runs
`aws s3 …` as a subprocess, because that is how an operator rolls config.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .gateway_process import VolumeDirs
from .moto_s3 import CREDENTIALS, REGION, MotoS3
from .processes import ManagedProcess, child_env
from .sidecar_process import SidecarHandle, launch_sidecar, run_sidecar, venv_script

HEALTH_PATH = "/health/config-sync"
DEFAULT_INTERVAL_S = 0.5


def config_sync_script() -> Path:
    """The console script installed next to the running interpreter (the project's venv)."""
    return venv_script("routeiq-config-sync")


def aws_script() -> Path:
    return venv_script("aws")


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


class ConfigSyncHandle(SidecarHandle):
    """One running agent in polling mode. Create through the `start_config_sync` fixture.

    health() is GET /health/config-sync: {status, last_success_at, last_attempt_at, version, etag, last_error, …}.
    """

    health_path = HEALTH_PATH

    def __init__(self, process: ManagedProcess, health_port: int, dirs: VolumeDirs, source: str) -> None:
        super().__init__(process, health_port, dirs, source)
        self.source = source

    def wait_version(self, version: str, timeout: float = 10.0) -> dict[str, Any]:
        return self.wait_health(
            lambda h: h.get("version") == version and h.get("status") == "ok",
            timeout,
            message=f"agent status ok at version {version}",
        )


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
    process, port = launch_sidecar(
        config_sync_script(),
        dirs,
        lambda port: agent_env(dirs, source, s3_env=s3_env, interval=interval, health_port=port, extra=env),
        health_port=health_port,
        log_name=log_name,
        start_timeout=start_timeout,
    )
    return ConfigSyncHandle(process, port, dirs, source)


def run_config_sync(
    args: Sequence[str], env: Mapping[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run `routeiq-config-sync ARGS` to completion (`--once`, `rollout promote …`); `env` is complete
    (build it with agent_env or child_env)."""
    return run_sidecar(config_sync_script(), args, env, timeout)


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
    return MotoS3.start(log_dir, host, timeout, port=port, log_name=f"moto_server-{port}.log")
