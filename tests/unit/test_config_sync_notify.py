"""config-sync signals only a process that is verifiably the gateway (issue 7 item 1): never 0, -1, a negative,
garbage, or a live stranger whose pid the pidfile happens to hold. Real processes, real /proc."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from routeiq_config_sync.notify import signal_gateway
from routeiq_shared.gateway_files import GatewayIdentity, boot_id, process_start_time


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not the gateway (sleep dies of SIGHUP, so a wrong signal shows)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def _identity(run: Path, pid: int, start_time: int | None = None) -> None:
    start = process_start_time(pid) if start_time is None else start_time
    assert start is not None
    GatewayIdentity(pid, start, boot_id()).write(run)


@pytest.mark.parametrize("content", ["0", "-1", "-42", "garbage", "", "12.5", str(os.getpid())])
def test_pidfile_that_names_no_single_other_process_is_never_signalled(tmp_path: Path, content: str) -> None:
    hups: list[int] = []
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: hups.append(signum))
    try:
        (tmp_path / "gateway.pid").write_text(content + "\n")
        problem = signal_gateway(tmp_path / "gateway.pid")
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert problem is not None and "pidfile" in problem
    assert hups == []  # 0 would have been our own group, and our own pid ourselves


def test_live_stranger_without_an_identity_is_not_signalled(tmp_path: Path, stranger: subprocess.Popen[bytes]) -> None:
    (tmp_path / "gateway.pid").write_text(f"{stranger.pid}\n")
    problem = signal_gateway(tmp_path / "gateway.pid")
    assert problem is not None and "identity" in problem
    assert stranger.poll() is None  # still alive


def test_live_stranger_with_a_matching_start_time_is_still_not_the_gateway(
    tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    (tmp_path / "gateway.pid").write_text(f"{stranger.pid}\n")
    _identity(tmp_path, stranger.pid)
    problem = signal_gateway(tmp_path / "gateway.pid")
    assert problem is not None and "not routeiq-gateway" in problem
    assert stranger.poll() is None


def test_pid_reused_after_the_gateway_wrote_its_identity_is_not_signalled(
    tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    (tmp_path / "gateway.pid").write_text(f"{stranger.pid}\n")
    started = process_start_time(stranger.pid)
    assert started is not None
    _identity(tmp_path, stranger.pid, start_time=started - 1)  # the old gateway started earlier
    problem = signal_gateway(tmp_path / "gateway.pid")
    assert problem is not None and "pid reused" in problem
    assert stranger.poll() is None


def test_the_gateway_named_by_pidfile_and_identity_is_signalled(tmp_path: Path) -> None:
    # A process whose command is `routeiq-gateway` (sleep under that name: SIGHUP ends it, so delivery shows).
    gateway_bin = tmp_path / "bin" / "routeiq-gateway"
    gateway_bin.parent.mkdir()
    sleep = shutil.which("sleep")
    assert sleep is not None
    gateway_bin.symlink_to(sleep)
    proc = subprocess.Popen([str(gateway_bin), "60"])
    try:
        (tmp_path / "gateway.pid").write_text(f"{proc.pid}\n")
        _identity(tmp_path, proc.pid)
        assert signal_gateway(tmp_path / "gateway.pid") is None
        assert proc.wait(timeout=5) == -signal.SIGHUP
    finally:
        proc.kill()
        proc.wait()


def test_no_pidfile_is_reported(tmp_path: Path) -> None:
    assert signal_gateway(tmp_path / "gateway.pid") == f"no pidfile at {tmp_path / 'gateway.pid'}"
