"""Issue 7, the gateway's upstream side, end to end: the real gateway against the fake upstream over loopback.

Both provider paths where the item concerns both: `fast` is served natively, `claude` through LiteLLM.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, VolumeDirs, launch_gateway
from harness.processes import wait_until

pytestmark = pytest.mark.integration

MASTER = "sk-master-hardening"
UPSTREAM_KEY = "sk-upstream-hardening-0123456789"
UPSTREAM_MODEL = {"fast": "fake-fast", "claude": "claude-3-haiku-20240307"}
DEMO = "This is a demo response from RouteIQ's fake provider."
USER = [{"role": "user", "content": "Say something"}]


def config(upstream: FakeUpstream) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": "fast",
                "litellm_params": {"model": "openai/fake-fast", "api_base": upstream.base_url, "api_key": UPSTREAM_KEY},
            },
            {
                "model_name": "claude",
                "litellm_params": {
                    "model": "anthropic/claude-3-haiku-20240307",
                    "api_base": upstream.root_url,
                    "api_key": UPSTREAM_KEY,
                },
            },
        ],
        "router_settings": {"num_retries": 1, "retry_after": 0.01},
        "general_settings": {"master_key": MASTER},
        "routeiq": {"server": {"access_log": True}},
    }


@pytest.fixture(scope="module")
def gw(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHandle]:
    handle = launch_gateway(VolumeDirs(tmp_path_factory.mktemp("gw-upstream")), config(fake_upstream))
    try:
        yield handle
    finally:
        handle.stop()


def post(gw: GatewayHandle, model: str, **extra: Any) -> httpx.Response:
    body = orjson.dumps({"model": model, "messages": USER, **extra})
    headers = {"authorization": f"Bearer {MASTER}", "content-type": "application/json"}
    return httpx.post(gw.url("/v1/chat/completions"), content=body, headers=headers, timeout=20)


def error_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    return resp.json()["error"]


@pytest.mark.parametrize("model", ["fast", "claude"])
@pytest.mark.parametrize("status", [201, 302])
def test_an_upstream_2xx_or_3xx_other_than_200_is_a_502(
    gw: GatewayHandle, fresh_upstream: FakeUpstream, model: str, status: int
) -> None:
    fresh_upstream.add_rule(model=UPSTREAM_MODEL[model], status=status)
    err = error_of(post(gw, model), 502)
    assert err["code"] == "upstream_unexpected_status" and str(status) in err["message"], err
    assert len(fresh_upstream.requests()) == 1  # the same request would get the same answer: not retried


@pytest.mark.parametrize("model", ["fast", "claude"])
def test_upstream_error_text_reaches_the_client_without_the_key_or_the_upstream_address(
    gw: GatewayHandle, fresh_upstream: FakeUpstream, model: str
) -> None:
    fresh_upstream.add_rule(model=UPSTREAM_MODEL[model], status=400, action="echo_request")
    resp = post(gw, model)
    err = error_of(resp, 400)
    assert "cannot serve" in err["message"]  # the upstream's explanation is passed on ...
    for secret in (UPSTREAM_KEY, "sk-upstream", f"127.0.0.1:{fresh_upstream.port}", str(fresh_upstream.port)):
        assert secret not in resp.text  # ... without our key or its address
    assert UPSTREAM_KEY not in gw.log_text()


def test_a_stream_line_without_end_is_cut_with_an_error_event_and_liveness_stays_responsive(
    gw: GatewayHandle, fresh_upstream: FakeUpstream
) -> None:
    # 1,600 pieces of 64 KiB = 100 MiB on one line, if the gateway read it all (the old scan took minutes on this)
    fresh_upstream.add_rule(model="fake-fast", action="huge_line", chunks=1600, chunk_delay_ms=0)
    probes: list[float] = []
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=5) as client:
            while not done.is_set():
                started = time.perf_counter()
                assert client.get(gw.url("/health/liveness")).status_code == 200
                probes.append(time.perf_counter() - started)
                time.sleep(0.01)

    prober = threading.Thread(target=probe)
    prober.start()
    wait_until(lambda: bool(probes), 10, message="liveness probed before the stream starts")
    started = time.perf_counter()
    try:
        client = gw.openai_client(api_key=MASTER, max_retries=0, timeout=20)
        with pytest.raises(openai.APIError) as info:
            for _ in client.chat.completions.create(model="fast", messages=USER, stream=True):
                pass
        elapsed = time.perf_counter() - started
    finally:
        done.set()
        prober.join()
    assert "line" in str(info.value)
    assert elapsed < 5.0, elapsed
    # A stall, not a speed check: the quadratic scan stalled liveness for 7.5 s (bound generous for a busy CI core).
    assert max(probes) < 2.0, max(probes)


def test_a_stream_request_answered_with_json_reaches_the_sdk_as_a_stream(
    gw: GatewayHandle, fresh_upstream: FakeUpstream
) -> None:
    fresh_upstream.add_rule(model="fake-fast", action="json_for_stream")
    client = gw.openai_client(api_key=MASTER, max_retries=0)
    chunks = list(
        client.chat.completions.create(model="fast", messages=USER, stream=True, stream_options={"include_usage": True})
    )
    assert fresh_upstream.requests("/v1/chat/completions")[0]["body"]["stream"] is True
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEMO
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_every_line_the_gateway_writes_is_json_even_when_litellm_fails(
    gw: GatewayHandle, fresh_upstream: FakeUpstream
) -> None:
    for status in (400, 500, 404):
        fresh_upstream.add_rule(model=UPSTREAM_MODEL["claude"], status=status, times=2)
        post(gw, "claude")
    fresh_upstream.add_rule(model=UPSTREAM_MODEL["claude"], action="reset_mid_stream", chunks=2)
    with pytest.raises(openai.APIError):
        for _ in gw.openai_client(api_key=MASTER, max_retries=0).chat.completions.create(
            model="claude", messages=USER, stream=True
        ):
            pass
    lines = [line for line in gw.log_text().splitlines() if line.strip()]
    assert lines
    for line in lines:
        record = orjson.loads(line)  # raises on LiteLLM's coloured text lines and print()ed banners
        assert isinstance(record, dict) and "trace_id" in record, line


# -- egress: loopback upstreams only when allow-listed ------------------------------------------------------------


def test_without_an_allow_list_a_loopback_upstream_is_refused_on_both_paths(
    fresh_upstream: FakeUpstream, tmp_path: Path
) -> None:
    gw = launch_gateway(VolumeDirs(tmp_path), config(fresh_upstream), env={"ROUTEIQ_EGRESS_ALLOWED_NETWORKS": ""})
    try:
        for model in ("fast", "claude"):
            resp = post(gw, model)
            err = error_of(resp, 502)
            assert err["code"] == "upstream_forbidden", err
            assert "127.0.0.1" in err["message"] and UPSTREAM_KEY not in resp.text
        assert fresh_upstream.requests() == []  # nothing left the gateway
    finally:
        gw.stop()


# -- a reload that removes a deployment closes its pooled connections -------------------------------------------------


def established_to(pid: int, port: int) -> int:
    """TCP connections of process `pid` in ESTABLISHED state to 127.0.0.1:`port` (read from /proc, Linux)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


def test_a_reload_removing_a_deployment_closes_its_pooled_connections(
    fresh_upstream: FakeUpstream, tmp_path: Path
) -> None:
    other = FakeUpstream.start(tmp_path / "other")
    try:
        cfg = config(fresh_upstream)
        removed = {"model": "openai/fake-other", "api_base": other.base_url, "api_key": "sk-removed-deployment-key"}
        cfg["model_list"].append({"model_name": "other", "litellm_params": removed})
        gw = launch_gateway(VolumeDirs(tmp_path / "gw"), cfg)
        try:
            assert post(gw, "other").status_code == 200
            assert post(gw, "fast").status_code == 200
            assert established_to(gw.pid, other.port) == 1  # kept alive in the pool
            cfg["model_list"] = [e for e in cfg["model_list"] if e["model_name"] != "other"]
            gw.write_config(cfg)
            gw.reload()
            wait_until(lambda: established_to(gw.pid, other.port) == 0, timeout=5, message="pool to 'other' closed")
            assert established_to(gw.pid, fresh_upstream.port) == 1  # the remaining deployment's connection stays
            assert post(gw, "fast").status_code == 200
        finally:
            gw.stop()
    finally:
        other.process.stop()
