"""A provider deployment that starts timing out under load (the fake upstream slowed by a rule): its circuit breaker
opens, traffic moves to its peer, later requests are as fast as before within the cooldown, and once it heals
the half-open probe lets it back in. Real gateway and upstream processes, the openai SDK as client."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway
from harness.processes import wait_until
from routeiq_gateway.routing.deployments import deployment_id

pytestmark = pytest.mark.integration

KEY = "sk-breaker-master"
COOLDOWN = 10.0
TIMEOUT = 2.0  # the deployments' litellm_params.timeout: a slowed call fails after this


def _config(upstream: FakeUpstream) -> dict[str, Any]:
    def dep(model: str) -> dict[str, Any]:
        params = {"model": f"openai/{model}", "api_base": upstream.base_url, "api_key": "k", "timeout": TIMEOUT}
        return {"model_name": "g", "litellm_params": params}

    return {
        "model_list": [dep("flaky"), dep("steady")],
        "router_settings": {"num_retries": 1, "retry_after": 0, "allowed_fails": 2, "cooldown_time": COOLDOWN},
        "general_settings": {"master_key": KEY},
        "routeiq": {"breakers": {"deployment_latency_budget_seconds": 1.0}},
    }


class Load:
    """`workers` threads sending chat completions back to back; each result is (start, seconds, ok)."""

    def __init__(self, gw: GatewayHandle, workers: int = 6) -> None:
        self.gw = gw
        self.workers = workers
        self.results: list[tuple[float, float, bool]] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(workers)

    def __enter__(self) -> Load:
        for _ in range(self.workers):
            self._pool.submit(self._run)
        return self

    def _run(self) -> None:
        client = self.gw.openai_client(KEY, timeout=30.0)
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                client.chat.completions.create(model="g", messages=[{"role": "user", "content": "hi"}])
                ok = True
            except openai.OpenAIError:
                ok = False
            self.results.append((t0, time.monotonic() - t0, ok))

    def since(self, t: float) -> list[tuple[float, float, bool]]:
        return [r for r in list(self.results) if r[0] >= t]

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)


def _flaky_calls(upstream: FakeUpstream) -> int:
    return sum(1 for r in upstream.requests() if (r.get("body") or {}).get("model") == "flaky")


def _pct(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _p99(latencies: list[float]) -> float:
    return _pct(latencies, 0.99)


def test_a_deployment_timing_out_under_load_is_cut_off_and_comes_back(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    config = _config(fresh_upstream)
    gw = start_gateway(config)
    flaky = deployment_id("g", "openai/flaky", fresh_upstream.base_url)
    state = {"model": "g", "deployment_id": flaky}
    assert gw.metric("routeiq_deployment_circuit_breaker_state", **state) == 0.0
    with Load(gw) as load:
        started = time.monotonic()
        time.sleep(3)
        normal = [s for _, s, ok in load.since(started + 1) if ok]  # warmed up
        assert normal and _flaky_calls(fresh_upstream) > 0  # both deployments serve

        fresh_upstream.add_rule(model="flaky", delay_ms=int(TIMEOUT * 3000))  # every call to it times out now
        wait_until(lambda: gw.metric("routeiq_deployment_circuit_breaker_state", **state) == 1.0, timeout=20)
        opened = time.monotonic()
        time.sleep(TIMEOUT + 0.5)  # calls to it begun before it opened have timed out and been retried
        calls_before = _flaky_calls(fresh_upstream)
        window = time.monotonic()
        time.sleep(COOLDOWN - (window - opened) - 2)  # within the cooldown: no probe yet
        later = load.since(window)
        assert later and all(ok for _, _, ok in later)  # nothing failed: the peer serves
        assert _flaky_calls(fresh_upstream) == calls_before  # open: skipped
        # Back to normal: a request that went to the timing-out deployment would take TIMEOUT (2 s) at least.
        p99_later = _p99([s for _, s, _ in later])
        assert p99_later < TIMEOUT, p99_later
        print(
            f"latency p50/p99 before: {_pct(normal, 0.5) * 1000:.0f}/{_p99(normal) * 1000:.0f} ms; "
            f"after the breaker opened: {_pct([s for _, s, _ in later], 0.5) * 1000:.0f}/{p99_later * 1000:.0f} ms "
            f"({len(later)} requests)"
        )

        fresh_upstream.clear_rules()  # healed: after the cooldown one probe lets it back in
        wait_until(lambda: gw.metric("routeiq_deployment_circuit_breaker_state", **state) == 0.0, timeout=30)
        healed = _flaky_calls(fresh_upstream)
        wait_until(lambda: _flaky_calls(fresh_upstream) > healed + 5, timeout=10)  # serving again
    assert all(ok for _, _, ok in load.results), "no request failed at any time"
    moves = [
        (r["from"], r["to"])
        for r in gw.json_logs()
        if r.get("event") == "circuit_breaker" and r.get("deployment_id") == flaky
    ]
    assert moves[0] == ("closed", "open") and moves[-2:] == [("open", "half_open"), ("half_open", "closed")], moves
    opened_total = gw.metric("routeiq_deployment_circuit_breaker_transitions_total", to="open", **state)
    assert opened_total >= 1.0
