"""Tell the gateway to reload: SIGHUP to the pid in its pidfile (the pod shares a process namespace), or,
where no signal can reach it, POST to its admin reload endpoint.

A pidfile alone is not trusted: after a restart it can name a stranger that reused the pid, and `0` or `-1`
would signal a whole process group or every process the agent may signal. The pid is signalled only when the
identity record the gateway writes beside it (routeiq_shared.gateway_files) matches the live process: same
start time, same boot, and a gateway command line. The check and the signal go through one pidfd, so the pid
cannot be reused between them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from routeiq_shared.egress import EgressError, EgressPolicy
from routeiq_shared.gateway_files import (
    GATEWAY_COMMAND,
    GatewayIdentity,
    boot_id,
    process_cmdline,
    process_start_time,
)

log = logging.getLogger("routeiq.config_sync.notify")
_PROC = Path("/proc")
# The admin endpoint is the gateway beside us (loopback) or in the cluster: any address but link-local/metadata.
_ADMIN_EGRESS = EgressPolicy.internal()


def _is_gateway_command(argv: list[str]) -> bool:
    # `routeiq-gateway …` runs as `python /…/bin/routeiq-gateway …` (a console script) or directly.
    return any(os.path.basename(part) == GATEWAY_COMMAND for part in argv[:2])


def verify_gateway(pid: int, run_dir: Path, proc: Path = _PROC) -> str | None:
    """None when `pid` is verifiably the gateway that wrote the identity in `run_dir`, else why not."""
    try:
        identity = GatewayIdentity.read(run_dir)
    except (OSError, ValueError) as exc:
        return f"no valid gateway identity beside the pidfile ({type(exc).__name__})"
    if identity.pid != pid:
        return f"pidfile names {pid} but the gateway identity names {identity.pid}"
    if identity.boot_id != boot_id(proc):
        return "the gateway identity is from another boot (stale pidfile)"
    started = process_start_time(pid, proc)
    if started is None:
        return f"no process {pid} (stale pidfile)"
    if started != identity.start_time:
        return f"process {pid} is not the gateway that wrote the pidfile (pid reused)"
    if not _is_gateway_command(process_cmdline(pid, proc)):
        return f"process {pid} is not {GATEWAY_COMMAND}"
    return None


def _read_pid(pidfile: Path) -> int:
    pid = int(pidfile.read_text().strip())
    if pid <= 0:
        # 0 is our own process group, negatives are groups (-1: every process we may signal).
        raise ValueError(f"{pid} is not a process id")
    if pid == os.getpid():
        raise ValueError(f"{pid} is this agent")
    return pid


def signal_gateway(pidfile: Path, proc: Path = _PROC) -> str | None:
    """SIGHUP the gateway; None on success, else why it was not done (nothing is signalled then)."""
    try:
        pid = _read_pid(pidfile)
    except FileNotFoundError:
        return f"no pidfile at {pidfile}"
    except (OSError, ValueError) as exc:
        return f"unusable pidfile {pidfile}: {exc}"
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return f"no process {pid} (stale pidfile)"
    except OSError:
        pidfd = None  # no pidfd support (old kernel): verify, then signal by pid
    try:
        problem = verify_gateway(pid, pidfile.parent, proc)
        if problem is not None:
            return problem
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGHUP)  # fails if the verified process has exited since
        else:
            os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return f"no process {pid} (stale pidfile)"
    except PermissionError:
        return f"not allowed to signal {pid} (is shareProcessNamespace on?)"
    finally:
        if pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(pidfd)
    return None


@dataclass(frozen=True, slots=True)
class HttpReload:
    """The gateway's answer to POST /admin/reload: its verdict on the files, or why there was none."""

    problem: str | None  # None when the gateway answered with a verdict (200 or 422)
    reloaded: bool = False
    version: str | None = None
    detail: str | None = None


async def reload_over_http(url: str, key: str | None) -> HttpReload:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    parts = urlsplit(url)
    try:  # checked after resolution too: a name that resolves to a metadata address is never called
        await _ADMIN_EGRESS.resolve(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    except (EgressError, OSError) as exc:
        return HttpReload(f"admin reload refused: {exc}")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.post(f"{url.rstrip('/')}/admin/reload", headers=headers) as resp,
        ):
            if resp.status in (200, 422):
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    version = body.get("version")
                    return HttpReload(
                        None,
                        reloaded=body.get("reloaded") is True,
                        version=version if isinstance(version, str) else None,
                        detail=str(body.get("detail", ""))[:500],
                    )
            return HttpReload(f"admin reload answered {resp.status}: {(await resp.text())[:300]}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return HttpReload(f"admin reload failed: {type(exc).__name__}")
