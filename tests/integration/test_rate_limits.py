"""Virtual keys' limits end to end: real gateway processes sharing a real redis-server and a real PostgreSQL.

rpm across two replicas (exactly the limit in a burst, within 5% of it sustained), tpm reserved and corrected by
the upstream's usage, max_parallel with a slow upstream, a stream's slot held to its end, a client that goes away,
team limits, budgets and their reset, and Redis stopped and started again under load."""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway
from harness.processes import wait_until
from harness.redis_server import RedisServer, find_redis_server
from test_virtual_keys import ADMIN, MASTER, MESSAGES, admin, config, upgraded

PRICES = {"fast": {"input_price": 1.0, "output_price": 2.0, "model": "fast"}}


def start(
    start_gateway: StartGateway,
    upstream: FakeUpstream,
    db_url: str,
    root: Path,
    redis_url: str | None,
    keys: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
) -> GatewayHandle:
    cfg = config(upstream, **(keys or {}))
    cfg["routeiq"]["limits"] = limits or {}
    env = {"DATABASE_URL": db_url, "ADMIN_API_KEYS": ADMIN}
    if redis_url:
        env["REDIS_URL"] = redis_url
    return start_gateway(cfg, env=env, root=root, candidates=PRICES)


def new_key(gw: GatewayHandle, **fields: Any) -> str:
    made = admin(gw, "POST", "/key/generate", fields)
    assert made.status_code == 200, made.text
    return str(made.json()["key"])


def call(gw: GatewayHandle, key: str, timeout: float = 10, **extra: Any) -> httpx.Response:
    return httpx.post(
        gw.url("/v1/chat/completions"),
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "fast", "messages": MESSAGES, **extra},
        timeout=timeout,
        trust_env=False,
    )


def metric(gw: GatewayHandle, sample: str) -> float:
    text = httpx.get(gw.url("/metrics"), timeout=5, trust_env=False).text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def assert_rate_limited(resp: httpx.Response, kind: str = "requests") -> None:
    assert resp.status_code == 429, resp.text
    err = resp.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "rate_limit_error"
    assert int(resp.headers["retry-after"]) >= 1
    assert resp.headers[f"x-ratelimit-limit-{kind}"]
    if kind == "requests":
        assert resp.headers["x-ratelimit-remaining-requests"] == "0"
    assert resp.headers[f"x-ratelimit-reset-{kind}"]


def test_rpm_shared_by_two_replicas(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    fresh_database: str,
    fresh_redis: RedisServer,
    tmp_path: Path,
) -> None:
    url = upgraded(fresh_database)
    a = start(start_gateway, fresh_upstream, url, tmp_path / "a", fresh_redis.url)
    b = start(start_gateway, fresh_upstream, url, tmp_path / "b", fresh_redis.url)
    limit = 7
    key = new_key(a, rpm_limit=limit)
    # 60 s / 7 between refills: 21 requests in a couple of seconds meet exactly 7 successes.
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda gw: call(gw, key), itertools.islice(itertools.cycle([a, b]), 21)))
    ok = [r for r in replies if r.status_code == 200]
    assert len(ok) == limit, [r.status_code for r in replies]
    for refused in (r for r in replies if r.status_code != 200):
        assert_rate_limited(refused)
        assert refused.headers["x-ratelimit-limit-requests"] == str(limit)
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok)
    assert remaining == list(range(limit))  # each success saw its own count, across both replicas
    assert all(r.headers["x-ratelimit-limit-requests"] == str(limit) for r in ok)
    sample = 'routeiq_rate_limited_total{limit="rpm",scope="key"}'
    assert metric(a, sample) + metric(b, sample) == len(replies) - limit


def test_master_key_keeps_the_upstreams_ratelimit_headers(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    fresh_database: str,
    fresh_redis: RedisServer,
    tmp_path: Path,
) -> None:
    gw = start(start_gateway, fresh_upstream, upgraded(fresh_database), tmp_path, fresh_redis.url)
    fresh_upstream.add_rule(model="fake", headers={"x-ratelimit-remaining-requests": "4999", "x-request-id": "r1"})
    limited, unlimited = new_key(gw, rpm_limit=50), new_key(gw)
    master = call(gw, MASTER)
    assert master.headers["x-ratelimit-remaining-requests"] == "4999"  # the provider's, untouched
    ours = call(gw, limited)
    assert ours.headers["x-ratelimit-remaining-requests"] == "49" and ours.headers["x-request-id"] == "r1"
    assert ours.headers.get_list("x-ratelimit-remaining-requests") == ["49"]  # not both
    assert call(gw, unlimited).headers["x-ratelimit-remaining-requests"] == "4999"  # no limits of its own


def test_tpm_reserved_then_corrected_by_usage(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    fresh_database: str,
    fresh_redis: RedisServer,
    tmp_path: Path,
) -> None:
    gw = start(start_gateway, fresh_upstream, upgraded(fresh_database), tmp_path, fresh_redis.url)
    key = new_key(gw, tpm_limit=1000)
    first = call(gw, key, max_tokens=600)  # reserves the prompt's ~1 token + 600
    assert first.status_code == 200
    assert 390 <= int(first.headers["x-ratelimit-remaining-tokens"]) <= 399
    used = first.json()["usage"]["total_tokens"]
    assert used < 50
    # Without the correction 600 more would wait 12 s for the refill; with it the unused part is back at once.
    t0 = time.monotonic()
    wait_until(lambda: call(gw, key, max_tokens=600).status_code == 200, timeout=3)
    assert time.monotonic() - t0 < 3
    refused = call(gw, key, max_tokens=999)  # 1000 with the prompt: more than the ~980 left
    assert_rate_limited(refused, "tokens")
    assert refused.headers["x-ratelimit-limit-tokens"] == "1000"
    assert 950 < int(refused.headers["x-ratelimit-remaining-tokens"]) < 1000  # what the two answers really used

    # An answer longer than its estimate is charged in full: the next requests see it.
    other = new_key(gw, tpm_limit=1000)
    fresh_upstream.add_rule(model="fake", content=" ".join(["word"] * 500), times=1)
    long = call(gw, other, max_tokens=1)
    assert long.status_code == 200 and long.json()["usage"]["completion_tokens"] >= 500

    def remaining() -> int:
        resp = call(gw, other, max_tokens=1)
        assert resp.status_code == 200, resp.text
        return int(resp.headers["x-ratelimit-remaining-tokens"])

    wait_until(lambda: remaining() < 500, timeout=3)  # the estimate (~2 tokens) would leave ~998


def test_parallel_limit_with_a_slow_upstream_and_a_team(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    fresh_database: str,
    fresh_redis: RedisServer,
    tmp_path: Path,
) -> None:
    url = upgraded(fresh_database)
    a = start(start_gateway, fresh_upstream, url, tmp_path / "a", fresh_redis.url)
    b = start(start_gateway, fresh_upstream, url, tmp_path / "b", fresh_redis.url)
    assert admin(a, "POST", "/team/new", {"team_id": "t", "max_parallel_requests": 2}).status_code == 200
    k1, k2 = new_key(a, team_id="t"), new_key(a, team_id="t")
    fresh_upstream.add_rule(model="fake", delay_ms=1500, times=2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(call, a, k1), pool.submit(call, b, k2)]
        wait_until(lambda: len(fresh_upstream.requests("/v1/chat/completions")) >= 2, timeout=10)
        t0 = time.monotonic()
        refused = call(b, k1)  # the team's two slots are taken, on both replicas
        assert time.monotonic() - t0 < 1.0  # refused at once, not queued
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert "parallel" in refused.json()["error"]["message"] and "team t" in refused.json()["error"]["message"]
        assert [f.result(timeout=15).status_code for f in slow] == [200, 200]
    wait_until(lambda: call(a, k2).status_code == 200, timeout=3)  # slots freed when the answers ended
    sample = 'routeiq_rate_limited_total{limit="parallel",scope="team"}'
    assert metric(a, sample) + metric(b, sample) >= 1


def _stream(gw: GatewayHandle, key: str, read_all: bool, started: threading.Event | None = None) -> int:
    """Open a stream, read its first chunk (`started` set), then read to the end or go away; chunks read."""
    body = {"model": "fast", "messages": MESSAGES, "stream": True}
    headers = {"Authorization": f"Bearer {key}"}
    with (
        httpx.Client(trust_env=False, timeout=10) as client,
        client.stream("POST", gw.url("/v1/chat/completions"), headers=headers, json=body) as resp,
    ):
        assert resp.status_code == 200
        chunks = 0
        for _ in resp.iter_raw():
            chunks += 1
            if started is not None:
                started.set()
            if not read_all:
                break
        return chunks


def test_a_stream_holds_its_slot_to_the_end_and_a_disconnect_frees_it(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    fresh_database: str,
    fresh_redis: RedisServer,
    tmp_path: Path,
) -> None:
    gw = start(start_gateway, fresh_upstream, upgraded(fresh_database), tmp_path, fresh_redis.url)
    key = new_key(gw, max_parallel_requests=1)
    fresh_upstream.add_rule(model="fake", action="slow_stream", chunks=15, chunk_delay_ms=100, times=1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = threading.Event()
        stream = pool.submit(_stream, gw, key, True, started)
        assert started.wait(10)
        assert not stream.done()  # mid-way through its 1.5 s
        assert call(gw, key).status_code == 429  # the stream holds the one slot
        assert stream.result(timeout=15) > 1
    wait_until(lambda: call(gw, key).status_code == 200, timeout=3)

    # A client that goes away mid-stream, and one that gives up waiting: their slots come back, not after the TTL.
    fresh_upstream.add_rule(model="fake", action="slow_stream", chunks=100, chunk_delay_ms=100, times=1)
    assert _stream(gw, key, False) == 1
    wait_until(lambda: call(gw, key).status_code == 200, timeout=3)
    fresh_upstream.add_rule(model="fake", action="hang", times=1)
    with contextlib.suppress(httpx.TimeoutException):
        call(gw, key, timeout=0.5)
    wait_until(lambda: call(gw, key).status_code == 200, timeout=3)


def test_budget_exceeded_then_reset(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    fresh_database: str,
    fresh_redis: RedisServer,
    tmp_path: Path,
) -> None:
    keys = {"refresh_seconds": 0.3, "spend_flush_seconds": 0.2}
    gw = start(start_gateway, fresh_upstream, upgraded(fresh_database), tmp_path, fresh_redis.url, keys)
    key = new_key(gw, max_budget=1e-9, budget_duration="4s")
    assert call(gw, key).status_code == 200  # nothing spent yet
    wait_until(lambda: call(gw, key).status_code == 429, timeout=5)  # spend written, read back by the cache
    refused = call(gw, key)
    err = refused.json()["error"]
    assert err["code"] == "budget_exceeded" and "Max budget" in err["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 5
    assert metric(gw, 'routeiq_rate_limited_total{limit="budget",scope="key"}') >= 1
    with psycopg.connect(fresh_database) as conn:
        before = conn.execute("SELECT budget_reset_at FROM keys").fetchone()
    assert before is not None
    wait_until(lambda: call(gw, key).status_code == 200, timeout=10)  # the period is over: spend back to 0
    with psycopg.connect(fresh_database) as conn:
        after = conn.execute("SELECT budget_reset_at FROM keys").fetchone()
    assert after is not None and after[0] > before[0]
    log = [r for r in gw.json_logs() if r.get("event") == "budget_reset"]
    assert log and log[0]["rows"] >= 1


def test_redis_stopped_local_limits_then_shared_again(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    fresh_database: str,
    tmp_path: Path,
) -> None:
    binary = find_redis_server()
    assert binary is not None
    redis = RedisServer.start(binary, tmp_path / "redis")
    url = upgraded(fresh_database)
    limits = {"replicas": 2, "redis_timeout_seconds": 0.05}
    a = start(start_gateway, fresh_upstream, url, tmp_path / "a", redis.url, limits=limits)
    b = start(start_gateway, fresh_upstream, url, tmp_path / "b", redis.url, limits=limits)
    degraded = 'gateway_degraded_mode{service="redis"}'
    try:
        before, during, after = new_key(a, rpm_limit=4), new_key(a, rpm_limit=4), new_key(a, rpm_limit=4)
        assert [call(a, before).status_code for _ in range(5)] == [200] * 4 + [429]
        assert metric(a, degraded) == 0.0 and metric(b, degraded) == 0.0
        redis.stop()

        # Each replica enforces 4 / 2 = 2 by itself; nothing fails within that and nothing waits on Redis.
        for gw in (a, b):
            times, statuses = [], []
            for _ in range(3):
                t0 = time.monotonic()
                statuses.append(call(gw, during).status_code)
                times.append(time.monotonic() - t0)
            assert statuses == [200, 200, 429], statuses
            assert max(times) < 1.0, times
            assert metric(gw, degraded) == 1.0
        down = [r for r in a.json_logs() if r.get("event") == "degraded_mode" and r.get("service") == "redis"]
        assert len(down) == 1 and down[0]["degraded"] is True and down[0]["level"] in ("ERROR", "error")

        redis = RedisServer.start(binary, tmp_path / "redis", port=redis.port)
        wait_until(lambda: metric(a, degraded) == 0.0 and metric(b, degraded) == 0.0, timeout=10)
        # Shared again: replica a alone gets the whole 4 (locally it would get 2).
        assert [call(a, after).status_code for _ in range(5)] == [200] * 4 + [429]
        assert call(b, after).status_code == 429
        back = [r for r in b.json_logs() if r.get("event") == "degraded_mode" and r.get("service") == "redis"]
        assert [r["degraded"] for r in back] == [True, False]
    finally:
        redis.stop()


def test_limits_refused_when_invalid(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_database: str, tmp_path: Path
) -> None:
    gw = start(start_gateway, fresh_upstream, upgraded(fresh_database), tmp_path, None)
    for body, param in (
        ({"rpm_limit": -1}, "rpm_limit"),
        ({"tpm_limit": "many"}, "tpm_limit"),
        ({"max_parallel_requests": -2}, "max_parallel_requests"),
        ({"max_budget": -0.5}, "max_budget"),
        ({"budget_duration": "0d"}, "budget_duration"),
    ):
        resp = admin(gw, "POST", "/key/generate", body)
        assert resp.status_code == 400 and resp.json()["error"]["param"] == param, resp.text
    assert admin(gw, "POST", "/key/generate", b'{"max_budget": NaN}').status_code == 400
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT count(*) FROM keys").fetchone() == (0,)  # nothing written
    # Without REDIS_URL limits still hold, in this process.
    key = new_key(gw, rpm_limit=2)
    assert [call(gw, key).status_code for _ in range(3)] == [200, 200, 429]


def test_sustained_rate_of_one_key_on_two_replicas_is_its_rpm(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    fresh_database: str,
    fresh_redis: RedisServer,
    tmp_path: Path,
) -> None:
    """Combined throughput for one key, driven well past its limit through both replicas, stays within 5% of its
    rpm once the burst GCRA allows at first is spent."""
    url = upgraded(fresh_database)
    a = start(start_gateway, fresh_upstream, url, tmp_path / "a", fresh_redis.url)
    b = start(start_gateway, fresh_upstream, url, tmp_path / "b", fresh_redis.url)
    limit = 1200  # 20 a second
    key = new_key(a, rpm_limit=limit)
    stop = threading.Event()
    passed: list[float] = []  # when each success came back
    refused = threading.Event()  # the burst is spent

    def drive(gw: GatewayHandle) -> None:
        with httpx.Client(trust_env=False, timeout=10) as client:
            while not stop.is_set():
                resp = client.post(
                    gw.url("/v1/chat/completions"),
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": "fast", "messages": MESSAGES},
                )
                if resp.status_code == 200:
                    passed.append(time.monotonic())
                else:
                    assert resp.status_code == 429, resp.text
                    refused.set()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        drivers = [pool.submit(drive, gw) for gw in (a, b, a, b, a, b, a, b)]
        assert refused.wait(60), "the burst was never spent"
        time.sleep(1.0)  # past the first refusals
        start_at = time.monotonic()
        time.sleep(10.0)
        end_at = time.monotonic()
        stop.set()
        for d in drivers:
            d.result()
    in_window = sum(1 for t in passed if start_at <= t < end_at)
    per_minute = in_window / (end_at - start_at) * 60
    assert abs(per_minute - limit) <= 0.05 * limit, (in_window, per_minute)
