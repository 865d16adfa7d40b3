"""A real PostgreSQL 15 (Debian's `postgresql` package) on a free loopback port, with its own data directory.

initdb refuses to run as root, so under root the server runs as the `postgres` user (`runuser`), its data
directory owned by it; as any other user it runs as that user. fsync is off: tests need no durability.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from .processes import ManagedProcess, child_env, descendants, free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SETUP_HINT = f"PostgreSQL 15 not found at {PG_BIN}; run `make setup` (Debian package `postgresql`)"
SUPERUSER = "routeiq"


def find_postgres() -> Path | None:
    return PG_BIN if (PG_BIN / "initdb").exists() and (PG_BIN / "postgres").exists() else None


def _as_server_user(argv: list[str]) -> list[str]:
    """initdb and postgres refuse root: run them as `postgres` then."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class PostgresServer:
    """Handle on a running postgres; `url(db)` is a DATABASE_URL for one of its databases."""

    def __init__(self, process: ManagedProcess, host: str, port: int, data_dir: Path, bin_dir: Path) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.data_dir = data_dir
        self.bin_dir = bin_dir

    @classmethod
    def start(cls, bin_dir: Path, log_dir: Path, host: str = "127.0.0.1", timeout: float = 30.0) -> PostgresServer:
        # Not under pytest's tmp dirs: those are root's, mode 0700, where the `postgres` user cannot go.
        data_dir = Path(tempfile.mkdtemp(prefix="routeiq-pg-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(data_dir, owner.pw_uid, owner.pw_gid)
        initdb = [str(bin_dir / "initdb"), "-D", str(data_dir / "data"), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8"]
        done = subprocess.run(_as_server_user([*initdb, "--no-sync"]), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            shutil.rmtree(data_dir, ignore_errors=True)
            raise RuntimeError(f"initdb failed: {done.stderr[-2000:]}")
        port = free_port(host)
        argv = _as_server_user(
            [
                str(bin_dir / "postgres"),
                "-D", str(data_dir / "data"),
                "-p", str(port),
                "-c", f"listen_addresses={host}",
                "-c", f"unix_socket_directories={data_dir}",
                "-c", "fsync=off",
                "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off",
                "-c", "max_connections=200",
            ]
        )  # fmt: skip
        process = ManagedProcess(argv, log_dir / "postgres.log", env=child_env(), name="postgres")
        process.start()
        server = cls(process, host, port, data_dir, bin_dir)
        try:
            process.wait_ready(server.accepts, timeout, f"a connection on {host}:{port}")
        except BaseException:
            server.stop()
            raise
        return server

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def accepts(self) -> bool:
        try:
            with psycopg.connect(self.url(), connect_timeout=1):
                return True
        except psycopg.Error:
            return False

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; its DATABASE_URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a generated name, not input
        return self.url(name)

    def freeze(self) -> None:
        """SIGSTOP to the postmaster and every backend: connections stay open, the port still accepts, nothing
        answers (a black-holed database). `thaw()` lets it go on where it stopped."""
        for pid in descendants(self.process.pid):  # each backend leads its own session: signalled one by one
            with contextlib.suppress(ProcessLookupError):  # a backend that ended since the listing
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """Continue every process of the tree, until none is stopped. Under root the leader is runuser, which
        (like su) stops itself whenever it sees its child stopped, and may see it after the child's SIGCONT: left
        stopped, it never reaps the server, and the next pause() waits for nothing (tests/unit/
        test_postgres_freeze_thaw.py). Children first, then the wrapper, again while any is stopped."""
        deadline = time.monotonic() + 5.0
        pids = descendants(self.process.pid)
        while pids and time.monotonic() < deadline:
            for pid in reversed(pids):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            time.sleep(0.02)
            pids = [pid for pid in descendants(self.process.pid) if is_stopped(pid)]

    def pause(self) -> None:
        """Stop the server (fast shutdown: clients cut) keeping its data; `resume()` starts it on the same port."""
        self._fast_shutdown()
        self.process.wait_exit(30)

    def resume(self, timeout: float = 30.0) -> None:
        self.process = ManagedProcess(self.process.argv, self.process.log_path, env=self.process.env, name="postgres")
        self.process.start()
        self.process.wait_ready(self.accepts, timeout, f"a connection on {self.host}:{self.port}")

    def stop(self) -> None:
        # SIGINT = fast shutdown (SIGTERM would wait for every client to leave); then the harness's stop.
        self._fast_shutdown()
        self.process.stop(timeout=10)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _fast_shutdown(self) -> None:
        # The group: under root the leader is runuser, and postgres must get the signal itself.
        if self.process.is_running():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGINT)

    def __repr__(self) -> str:
        return f"<PostgresServer {self.host}:{self.port} {self.process!r}>"


def is_stopped(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # gone
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def upgraded(url: str) -> str:
    """The database at `url` migrated by `routeiq-gateway db upgrade` (the real command); returns `url`."""
    script = Path(sys.executable).with_name("routeiq-gateway")
    done = subprocess.run(
        [str(script), "db", "upgrade"], env=child_env({"DATABASE_URL": url}), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return url
