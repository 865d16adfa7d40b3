"""A real moto S3 server process on a free loopback port, with boto3 clients and unique buckets."""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from .processes import ManagedProcess, child_env, free_port

REGION = "us-east-1"
# moto accepts any credentials; fixed fake ones keep boto3 from searching ~/.aws or instance metadata.
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _moto_argv(host: str, port: int) -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script), "-H", host, "-p", str(port)]
    found = shutil.which("moto_server")
    if found:
        return [found, "-H", host, "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]


class MotoS3:
    """Handle on a running `moto_server`."""

    def __init__(self, process: ManagedProcess, host: str, port: int) -> None:
        self.process = process
        self.endpoint_url = f"http://{host}:{port}"
        self._bucket_ids = itertools.count(1)
        self._run_id = uuid.uuid4().hex[:8]

    @classmethod
    def start(
        cls,
        log_dir: Path,
        host: str = "127.0.0.1",
        timeout: float = 30.0,
        *,
        port: int | None = None,
        log_name: str = "moto_server.log",
    ) -> MotoS3:
        """Start `moto_server` on `port` (default: a free one) and wait until it answers."""
        port = port or free_port(host)
        process = ManagedProcess(_moto_argv(host, port), Path(log_dir) / log_name, env=child_env(), name="moto_server")
        process.start_http_ok(f"http://{host}:{port}/moto-api/", timeout=timeout)
        return cls(process, host, port)

    def client(self, service: str = "s3", **kwargs: Any) -> Any:
        """A boto3 client for this server (path-style addressing: bucket names need no DNS)."""
        kwargs.setdefault("config", Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=REGION, **CREDENTIALS, **kwargs)

    def env(self) -> dict[str, str]:
        """Environment for a child process (config-sync, model-sync, aws CLI) to use this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }

    def new_bucket(self, prefix: str = "routeiq-test") -> str:
        """Create a bucket with a name unique to this session and return it."""
        name = f"{prefix}-{self._run_id}-{os.getpid()}-{next(self._bucket_ids)}"[:63]
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.process.stop()

    def __repr__(self) -> str:
        return f"<MotoS3 {self.endpoint_url} {self.process!r}>"
