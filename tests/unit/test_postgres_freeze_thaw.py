"""The harness's black-holed PostgreSQL (freeze/thaw) leaves the server as it found it: in particular the `runuser`
wrapper the server runs under as root. runuser (like su) stops itself when it sees its child stopped and continues
the child when it is continued; a thaw that continued the wrapper before the server let the wrapper see the stale
stop, stop itself again and stay stopped, so the next `pause()` waited 30 s for a process that never reaped the
server it had already shut down (a full `make test` run: test_virtual_keys after test_dependency_blackholes)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from harness.postgres_server import PostgresServer, find_postgres, is_stopped
from harness.processes import descendants


def _described(pid: int) -> str:
    return f"{pid} " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]


def test_freeze_then_thaw_leaves_no_process_stopped_and_pause_is_quick(tmp_path: Path) -> None:
    bin_dir = find_postgres()
    if bin_dir is None:
        pytest.fail("PostgreSQL is not installed: run `make setup`", pytrace=False)
    server = PostgresServer.start(bin_dir, tmp_path)
    try:
        for _ in range(20):  # the wrapper's race is a matter of scheduling: tried often enough to lose it
            server.freeze()
            time.sleep(0.05)
            server.thaw()
            time.sleep(0.05)
            stuck = [pid for pid in descendants(server.process.pid) if is_stopped(pid)]
            assert stuck == [], f"stopped after the thaw: {[_described(pid) for pid in stuck]}"
        assert server.accepts()
        started = time.monotonic()
        server.pause()
        assert time.monotonic() - started < 10
        server.resume()
        assert server.accepts()
    finally:
        server.stop()
