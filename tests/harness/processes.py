"""Run real subprocesses for tests: own process group, log to a file, wait for readiness, always stop.

Every service a test needs (fake upstream, moto, redis, the gateway) is started through `ManagedProcess`
so teardown is uniform: SIGTERM to the whole group, a short wait, then SIGKILL, and the log tail is put
into every error message because that is the first thing one needs when a start fails in CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

POLL_INTERVAL_S = 0.02
LOG_TAIL_CHARS = 4000

# Settings a developer's shell (or CI) may carry that would change how a service under test behaves; the
# harness passes these explicitly per test instead.
_INHERITED_PREFIXES_TO_DROP = (
    "ROUTEIQ_",
    "OTEL_",
    "REDIS_",
    "CONFIG_S",  # CONFIG_SOURCE, CONFIG_SYNC_INTERVAL
    "MODEL_",
    "ADMIN_API_KEYS",
    "DATABASE_",
    "HEALTH_PORT",
    "AWS_",
    "ANTHROPIC_",
    "OPENAI_",
)


class ProcessStartError(RuntimeError):
    """A managed process exited early or never became ready."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago (the OS picks it; a race is possible but rare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def url_status(url: str, timeout: float = 0.5) -> int | None:
    """HTTP status of a GET to url, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ minus service settings (see _INHERITED_PREFIXES_TO_DROP), plus test-friendly defaults
    and `extra` (which wins)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES_TO_DROP)}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            # loopback must never go through a proxy picked up from the environment
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            # litellm fetches its price map from GitHub at import; tests run offline and must not wait on it
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            # the upstreams of tests (and of `make run`) are on loopback, which egress refuses unless allow-listed
            "ROUTEIQ_EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
        }
    )
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, parents first (from /proc: Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command may hold spaces and parentheses
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        out.append(current)
        todo.extend(children.get(current, ()))
    return out


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    interval: float = POLL_INTERVAL_S,
    message: str = "condition",
    detail: Callable[[], str] | None = None,
) -> None:
    """Poll predicate until it is true; raise TimeoutError with `message` after `timeout` seconds, followed by
    a line break and detail() when given (e.g. a log tail, read at that moment)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            error = f"timed out after {timeout:.1f}s waiting for {message}"
            raise TimeoutError(error if detail is None else f"{error}\n{detail()}")
        time.sleep(interval)


def json_records(text: str) -> list[dict[str, Any]]:
    """Every line of `text` that parses as a JSON object, in order; other lines are skipped."""
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


# Every started, not yet stopped process; the safety net for `stop_all` at the end of a pytest session.
_RUNNING: set[ManagedProcess] = set()


def stop_all() -> list[str]:
    """Stop every ManagedProcess still running; return their names (non-empty means a fixture leaked)."""
    leaked = [repr(p) for p in list(_RUNNING) if p.is_running()]
    for process in list(_RUNNING):
        process.stop()
    return leaked


class ManagedProcess:
    """One subprocess in its own process group, with stdout+stderr appended to `log_path`."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        name: str | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = child_env() if env is None else dict(env)
        self.cwd = cwd
        self.name = name or Path(self.argv[0]).name
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # start_new_session: the child leads a new process group, so stop() also reaches grandchildren
            # (uvicorn workers, moto's reloader, shells) and a Ctrl-C in the terminal does not hit them.
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        _RUNNING.add(self)
        return self

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """Exit code, or None while running (polls without blocking)."""
        return None if self._proc is None else self._proc.poll()

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_ready(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `check` until true; fail fast with the log tail if the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return
            code = self.returncode
            if code is not None:
                raise ProcessStartError(f"{self.name} exited with code {code} before {what}\n{self._describe()}")
            if time.monotonic() >= deadline:
                raise ProcessStartError(f"{self.name} not ready after {timeout:.1f}s ({what})\n{self._describe()}")
            time.sleep(POLL_INTERVAL_S)

    def wait_http_ok(self, url: str, timeout: float = 15.0, expect_status: int = 200) -> None:
        self.wait_ready(lambda: url_status(url) == expect_status, timeout, f"GET {url} == {expect_status}")

    def start_http_ok(self, url: str, timeout: float = 15.0) -> ManagedProcess:
        """start(), then wait_http_ok(url); a process that never gets there is stopped before the error."""
        self.start()
        try:
            self.wait_http_ok(url, timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_port(self, host: str, port: int, timeout: float = 15.0) -> None:
        self.wait_ready(lambda: port_accepts(host, port), timeout, f"{host}:{port} accepting")

    def send_signal(self, sig: int) -> None:
        """Signal the main process only (e.g. SIGHUP for reload, SIGTERM for drain)."""
        if self.is_running():
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        """Wait for exit and return the code; raises subprocess.TimeoutExpired if still running."""
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the group, wait up to `timeout`, then SIGKILL it. Idempotent; safe if never started."""
        if self._proc is None:
            return None
        _RUNNING.discard(self)
        pgid = self._proc.pid  # the child is the group leader (start_new_session)
        if self._proc.poll() is None:
            self._signal_group(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=timeout)
        # Children may outlive a leader that exited on SIGTERM; kill what is left of the group either way.
        self._signal_group(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=timeout)
        return self._proc.returncode

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    # -- logs ------------------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return self.log_text()[-chars:]

    def json_logs(self) -> list[dict[str, Any]]:
        """Every log line that parses as a JSON object, in order (see json_records)."""
        return json_records(self.log_text())

    def wait_for_json_log(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 10.0,
        after: int = 0,
        message: str = "log record",
        who: str = "process",
    ) -> dict[str, Any]:
        """The first JSON log record after the first `after` ones that matches; waits for it. On timeout the
        error carries the log tail under `--- {who} log tail ---`."""
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = [r for r in self.json_logs()[after:] if predicate(r)]
            return bool(found)

        wait_until(check, timeout, message=message, detail=lambda: f"--- {who} log tail ---\n{self.log_tail()}")
        return found[0]

    def _describe(self) -> str:
        return f"command: {' '.join(self.argv)}\nlog {self.log_path} (tail):\n{self.log_tail()}"

    def __enter__(self) -> ManagedProcess:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "not started" if self._proc is None else f"pid={self._proc.pid} rc={self.returncode}"
        return f"<ManagedProcess {self.name} {state}>"
