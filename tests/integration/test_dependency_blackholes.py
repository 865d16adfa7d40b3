"""No dependency call hangs a request: Redis and PostgreSQL black-holed — the real servers SIGSTOPped, so their
ports still accept and nothing ever answers — cost a request at most the configured timeout
(`routeiq.limits.redis_timeout_seconds`, `routeiq.keys.lookup_timeout_seconds`); the dependency's circuit breaker
opens (gateway_circuit_breaker_state, gateway_degraded_mode), and closes by itself once the server answers again.
Timing bounds here are the timeout plus a second or more of slack: what they catch is a hang."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway
from harness.postgres_server import PostgresServer, upgraded
from harness.processes import wait_until
from harness.redis_server import RedisServer
from test_rate_limits import call, new_key, start
from test_virtual_keys import ADMIN, MASTER, admin, config

pytestmark = pytest.mark.integration

SLACK = 1.5  # seconds beyond a timeout that a loaded 2-core machine may add
CALL_TIMEOUT = 6.0  # one use of a PostgreSQL connection, bounded on the gateway's side (tenancy/database.py)


class Requests:
    """Threads calling the gateway with one key back to back: (seconds, status) of each call."""

    def __init__(self, gw: GatewayHandle, key: str, workers: int = 4) -> None:
        self.gw, self.key, self.workers = gw, key, workers
        self.results: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(workers)

    def __enter__(self) -> Requests:
        for _ in range(self.workers):
            self._pool.submit(self._run)
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            status = call(self.gw, self.key, timeout=30).status_code
            self.results.append((time.monotonic() - t0, status))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)


def _breaker(gw: GatewayHandle, dependency: str) -> float:
    return gw.metric("gateway_circuit_breaker_state", dependency=dependency)


def test_redis_black_holed_costs_a_request_its_timeout_and_the_breaker_opens_then_closes(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    fresh_database: str,
    own_redis: RedisServer,
    tmp_path: Path,
) -> None:
    timeout = 0.5
    gw = start(
        start_gateway,
        fresh_upstream,
        upgraded(fresh_database),
        tmp_path / "gw",
        own_redis.url,
        limits={"redis_timeout_seconds": timeout},
    )
    key = new_key(gw, rpm_limit=100_000)
    assert call(gw, key).status_code == 200 and _breaker(gw, "redis") == 0.0
    with Requests(gw, key) as load:
        wait_until(lambda: len(load.results) >= 20, timeout=10)
        own_redis.process.send_signal(signal.SIGSTOP)
        frozen = len(load.results)
        try:
            wait_until(lambda: _breaker(gw, "redis") in (1.0, 2.0), timeout=10)
            assert gw.metric("gateway_degraded_mode", service="redis") == 1.0
            wait_until(lambda: len(load.results) >= frozen + 50, timeout=20)  # served while Redis is away
            while_down = load.results[frozen:]
        finally:
            own_redis.process.send_signal(signal.SIGCONT)
        wait_until(lambda: _breaker(gw, "redis") == 0.0, timeout=15)  # the probe's PING answered
        assert gw.metric("gateway_degraded_mode", service="redis") == 0.0
    assert {status for _, status in load.results} == {200}
    slowest = max(seconds for seconds, _ in while_down)
    assert slowest < timeout + SLACK, slowest  # a hang would take the client's 30 s
    moves = [(r["from"], r["to"]) for r in gw.json_logs() if r.get("event") == "circuit_breaker"]
    assert moves[0] == ("closed", "open") and moves[-1] == ("half_open", "closed"), moves
    opened = gw.metric("gateway_circuit_breaker_transitions_total", dependency="redis", to="open")
    assert opened >= 1.0
    print(f"Redis black-holed: {len(while_down)} requests, slowest {slowest * 1000:.0f} ms (timeout {timeout} s)")


def test_postgres_black_holed_costs_a_new_key_its_lookup_timeout_and_the_breaker_opens_then_closes(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    postgres_server: PostgresServer,
    fresh_database: str,
    tmp_path: Path,
) -> None:
    url = upgraded(fresh_database)
    lookup = 0.5
    keys = {"refresh_seconds": 2, "lookup_timeout_seconds": lookup}
    env = {"DATABASE_URL": url, "ADMIN_API_KEYS": ADMIN}
    a = start_gateway(config(fresh_upstream, **keys), env=env, root=tmp_path / "a")
    # b makes a key a has not loaded yet (no Redis: no announcement; a's next reload is seconds away).
    b = start_gateway(config(fresh_upstream, refresh_seconds=3600), env=env, root=tmp_path / "b")
    known = admin(a, "POST", "/v1/admin/keys", {}).json()["key"]
    assert call(a, known).status_code == 200
    postgres_server.freeze()
    try:
        t0 = time.monotonic()
        refused = httpx.post(  # b's pooled connection into the black hole: bounded on the gateway's side too
            b.admin("/v1/admin/keys"),
            headers={"Authorization": f"Bearer {ADMIN}"},
            json={},
            timeout=60,
            trust_env=False,
        )
        took = time.monotonic() - t0
        # Bounded, not tight: the call's 6 s, then psycopg's attempt to cancel the query (5 s; the postmaster is
        # frozen too) and the broken connection's disposal. Without the bound it would wait for the thaw.
        assert refused.status_code == 503 and took < 3 * CALL_TIMEOUT, (refused.status_code, took)
        print(f"admin call into a black-holed PostgreSQL: 503 after {took:.1f} s")
        t0 = time.monotonic()
        never_seen = call(a, "sk-riq-not-in-the-cache")  # a lookup in a database that does not answer
        assert never_seen.status_code == 401 and time.monotonic() - t0 < lookup + SLACK
        t0 = time.monotonic()
        assert call(a, known).status_code == 200 and time.monotonic() - t0 < SLACK  # from the cache
        wait_until(lambda: _breaker(a, "postgres") in (1.0, 2.0), timeout=30)  # the refresh ran into it
        assert a.metric("gateway_degraded_mode", service="postgres") == 1.0
        t0 = time.monotonic()
        assert call(a, "sk-riq-other-unknown").status_code == 401
        assert time.monotonic() - t0 < SLACK  # open: not even tried
    finally:
        postgres_server.thaw()
    wait_until(lambda: _breaker(a, "postgres") == 0.0, timeout=30)
    assert a.metric("gateway_degraded_mode", service="postgres") == 0.0
    fresh = admin(a, "POST", "/v1/admin/keys", {}).json()["key"]
    assert call(a, fresh).status_code == 200  # recovered by itself
    assert call(a, MASTER).status_code == 200
    assert httpx.get(a.url("/health/readiness"), timeout=5, trust_env=False).status_code == 200
