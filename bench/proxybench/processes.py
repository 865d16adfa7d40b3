"""Child processes for the benchmark: each in its own process group, pinned to a CPU, always torn down."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path


class BenchError(Exception):
    """A target could not be measured; the message says why (and carries the tail of its log)."""


@contextlib.contextmanager
def child_process(
    argv: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    # A session of its own: Ctrl-C reaches only the benchmark script, which then stops the whole group,
    # workers included, in the finally below.
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    # The group id is the leader's pid (start_new_session). SIGTERM lets servers close their sockets; SIGKILL
    # after it catches anything that ignored it, including workers the leader left behind.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def pinned(cpu: int, argv: list[str]) -> list[str]:
    # taskset sets the affinity before exec, so every thread and child of the program inherits it.
    return ["taskset", "-c", str(cpu), *argv]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # Every hop is on loopback; a proxy from the environment must never be in the path being measured.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    # the bench's upstream is on loopback, which the gateway's egress policy refuses unless allow-listed
    env.setdefault("ROUTEIQ_EGRESS_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
    env.update(extra or {})
    return env


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"exited with code {proc.returncode} before it was ready:\n{log_tail(log_path)}")
        if ready():
            return
        time.sleep(0.1)
    raise BenchError(f"not ready after {timeout_s:.0f} s:\n{log_tail(log_path)}")
