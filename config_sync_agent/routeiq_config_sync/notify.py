"""Tell the gateway to reload: SIGHUP to the pid in its pidfile (the pod shares a process namespace), or,
where no signal can reach it, POST to its admin reload endpoint."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import aiohttp

log = logging.getLogger("routeiq.config_sync.notify")


def signal_gateway(pidfile: Path) -> str | None:
    """SIGHUP the gateway; None on success, else why it could not be done."""
    try:
        pid = int(pidfile.read_text().strip())
    except FileNotFoundError:
        return f"no pidfile at {pidfile}"
    except (OSError, ValueError) as exc:
        return f"unreadable pidfile {pidfile}: {exc}"
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return f"no process {pid} (stale pidfile)"
    except PermissionError:
        return f"not allowed to signal {pid} (is shareProcessNamespace on?)"
    return None


async def reload_over_http(url: str, key: str | None) -> str | None:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.post(f"{url.rstrip('/')}/admin/reload", headers=headers) as resp,
        ):
            if resp.status == 200:
                return None
            return f"admin reload answered {resp.status}: {(await resp.text())[:300]}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"admin reload failed: {type(exc).__name__}"
