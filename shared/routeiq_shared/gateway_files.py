"""What the gateway tells config-sync through the run volume, besides `gateway.pid`.

`gateway.identity.json` — the gateway's pid, its start time (field 22 of /proc/<pid>/stat, clock ticks since boot)
and the boot id. A pid alone names whichever process holds that number now: after a restart of the gateway's
container the old pidfile can name a stranger, and `0` or `-1` name whole groups. config-sync signals only a
process whose start time and boot match this record and whose command line is the gateway's.

`gateway.status.json` — written after start and after every reload attempt: the version being served, and the
last attempt's result with the version it read and, when refused, why (with the key's path). config-sync
validates only what it can know without the gateway's secrets; this file is the gateway's verdict.

Both are written atomically by the gateway and only read by the agent.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .atomic import atomic_write

IDENTITY_FILE = "gateway.identity.json"
STATUS_FILE = "gateway.status.json"
GATEWAY_COMMAND = "routeiq-gateway"
_PROC = Path("/proc")


def process_start_time(pid: int, proc: Path = _PROC) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks after boot), None if there is no such process."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # comm (field 2) is in parentheses and may hold spaces or ')': split after the last ')'. Field 3 is then [0].
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def boot_id(proc: Path = _PROC) -> str:
    try:
        return (proc / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return ""


def process_cmdline(pid: int, proc: Path = _PROC) -> list[str]:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


@dataclass(frozen=True, slots=True)
class GatewayIdentity:
    pid: int
    start_time: int
    boot_id: str

    @classmethod
    def of_this_process(cls) -> GatewayIdentity:
        pid = os.getpid()
        return cls(pid, process_start_time(pid) or 0, boot_id())

    def write(self, run_dir: Path) -> None:
        body = {"pid": self.pid, "start_time": self.start_time, "boot_id": self.boot_id}
        atomic_write(run_dir / IDENTITY_FILE, orjson.dumps(body))

    @classmethod
    def read(cls, run_dir: Path) -> GatewayIdentity:
        """Raises OSError or ValueError when the file is missing or not a record of ours."""
        data = orjson.loads((run_dir / IDENTITY_FILE).read_bytes())
        if not isinstance(data, dict):
            raise ValueError("not an object")
        pid, start, boot = data.get("pid"), data.get("start_time"), data.get("boot_id")
        if not isinstance(pid, int) or not isinstance(start, int) or not isinstance(boot, str):
            raise ValueError("pid, start_time and boot_id are required")
        return cls(pid, start, boot)


def write_status(
    run_dir: Path,
    *,
    loaded_version: str | None,
    trigger: str,
    result: str,
    attempted_version: str | None,
    error: str | None = None,
    key_path: str | None = None,
    auth_disabled: bool = False,
) -> None:
    body = {
        "pid": os.getpid(),
        "loaded_version": loaded_version,
        "auth_disabled": auth_disabled,
        "last_attempt": {
            "trigger": trigger,
            "result": result,
            "version": attempted_version,
            "error": error,
            "key_path": key_path,
            "at": time.time(),
        },
    }
    atomic_write(run_dir / STATUS_FILE, orjson.dumps(body))


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The gateway's last status, or None when there is none (yet) or it cannot be read."""
    try:
        data = orjson.loads((run_dir / STATUS_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("last_attempt"), dict):
        return None
    return data
