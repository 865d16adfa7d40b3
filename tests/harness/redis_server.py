"""A real `redis-server` process on a free loopback port, without persistence. `extra` arguments make it a
replica, a cluster node or a TLS server (redis_topologies.py builds those)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

from .processes import ManagedProcess, child_env, free_port

SETUP_HINT = "redis-server binary not found on PATH or at /usr/bin/redis-server; run `make setup` to install it"


def find_redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    fallback = Path("/usr/bin/redis-server")
    return str(fallback) if fallback.exists() else None


class RedisServer:
    """Handle on a running redis-server; `url` is what REDIS_URL should be set to."""

    def __init__(self, process: ManagedProcess, host: str, port: int) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.url = f"redis://{host}:{port}/0"

    @classmethod
    def start(
        cls,
        binary: str,
        work_dir: Path,
        host: str = "127.0.0.1",
        timeout: float = 15.0,
        port: int | None = None,
        extra: Sequence[str] = (),
        ready: Callable[[], bool] | None = None,
    ) -> RedisServer:
        """`port`: start again where a stopped one was (clients reconnect to the same address). `extra`: more
        redis-server arguments; `ready`: the check that it is up, when PING on `port` is not it (TLS)."""
        port = port or free_port(host)
        work_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            "--port", str(port),
            "--bind", host,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(work_dir),
            *extra,
        ]  # fmt: skip
        process = ManagedProcess(argv, work_dir / "redis-server.log", env=child_env(), name="redis-server")
        process.start()
        try:
            process.wait_ready(ready or (lambda: pings(host, port)), timeout, f"PING on {host}:{port}")
        except BaseException:
            process.stop()
            raise
        return cls(process, host, port)

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kwargs)  # type: ignore[arg-type]

    def flushall(self) -> None:
        with self.client() as conn:
            conn.flushall()

    def stop(self) -> None:
        self.process.stop()

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} {self.process!r}>"


def pings(host: str, port: int) -> bool:
    try:
        with redis.Redis(host=host, port=port, socket_connect_timeout=0.2, socket_timeout=0.5) as conn:
            return bool(conn.ping())
    except redis.RedisError:
        return False
