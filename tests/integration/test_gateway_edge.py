"""The HTTP edge under hostile or careless clients (issue 7, items 7 and 8), against the real gateway process over
raw sockets: slow bodies and heads have deadlines and hold no in-flight slot, heads are bounded in size and count,
idle connections are closed, open connections are capped, and a client that leaves frees its slot and the upstream
call at once.

Short limits come from the environment (http/limits.py), so each scenario takes about a second.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway
from harness.processes import wait_until
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

MASTER = "sk-edge-master"
MAX_IN_FLIGHT = 4
EDGE_ENV = {
    "ROUTEIQ_HEADER_TIMEOUT_SECONDS": "1",
    "ROUTEIQ_BODY_TIMEOUT_SECONDS": "2",
    "ROUTEIQ_BODY_IDLE_TIMEOUT_SECONDS": "1",
    "ROUTEIQ_MAX_HEADER_BYTES": "16384",
    "ROUTEIQ_MAX_HEADERS": "50",
    "ROUTEIQ_KEEP_ALIVE_SECONDS": "1",
}
CHAT = json.dumps({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}).encode()


def config(upstream: FakeUpstream) -> dict[str, Any]:
    params = {"model": "openai/fake-fast", "api_base": upstream.base_url, "api_key": "sk-up"}
    return {
        "model_list": [{"model_name": "fast", "litellm_params": params}],
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER},
        "routeiq": {"limits": {"max_in_flight": MAX_IN_FLIGHT}},
    }


@pytest.fixture
def gw(start_gateway: StartGateway, fresh_upstream: FakeUpstream) -> GatewayHandle:
    return start_gateway(config(fresh_upstream), env=EDGE_ENV)


# -- raw HTTP ----------------------------------------------------------------------------------------


def head(length: int | None = len(CHAT), extra: bytes = b"") -> bytes:
    lines = [b"POST /v1/chat/completions HTTP/1.1", b"host: gw", b"authorization: Bearer " + MASTER.encode()]
    lines += [b"content-type: application/json"]
    if length is not None:
        lines.append(b"content-length: %d" % length)
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"


def connect(gw: GatewayHandle, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection((gw.host, gw.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers, body (by Content-Length). Raises on a close before a whole response."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data!r}")
        data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server has closed the connection (reads EOF or a reset); waits up to the socket's timeout."""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def error_code(body: bytes) -> str:
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return str(error["code"])


def metric(gw: GatewayHandle, name: str, **labels: str) -> float:
    text = httpx.get(gw.url("/metrics"), timeout=5, trust_env=False).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def chat_ok(gw: GatewayHandle) -> int:
    response = httpx.post(
        gw.url("/v1/chat/completions"),
        content=CHAT,
        headers={"authorization": f"Bearer {MASTER}", "content-type": "application/json"},
        timeout=10,
        trust_env=False,
    )
    return response.status_code


# -- item 7: slow bodies -----------------------------------------------------------------------------


@pytest.fixture
def slow_senders(gw: GatewayHandle) -> Iterator[list[dict[str, Any]]]:
    """Twice max_in_flight clients that send their head, then one body byte every 0.3 s (as the attack did)."""
    stop = threading.Event()
    results: list[dict[str, Any]] = []

    def trickle() -> None:
        outcome: dict[str, Any] = {}
        results.append(outcome)
        with connect(gw) as sock:
            sock.sendall(head())
            started = time.monotonic()
            try:
                for byte in CHAT[:-1]:  # never the last byte: only a deadline can end this request
                    if stop.wait(0.3):
                        return
                    sock.sendall(bytes([byte]))
            except OSError:
                pass  # the gateway answered and closed
            try:
                status, _, body = read_response(sock)
            except OSError as exc:
                outcome["error"] = repr(exc)
                return
            outcome.update(status=status, code=error_code(body), after=time.monotonic() - started)
            outcome["closed"] = closed_by_peer(sock)

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(2 * MAX_IN_FLIGHT)]
    for t in threads:
        t.start()
    yield results
    stop.set()
    for t in threads:
        t.join(10)


def test_slow_bodies_hold_no_slot_and_get_408(gw: GatewayHandle, slow_senders: list[dict[str, Any]]) -> None:
    time.sleep(0.5)  # let the slow clients get their heads in and start trickling: the state under test
    # At most max_in_flight at once: more would be shed by design, whatever the slow clients do.
    with ThreadPoolExecutor(MAX_IN_FLIGHT) as pool:
        statuses = list(pool.map(lambda _: chat_ok(gw), range(8)))
    assert statuses == [200] * 8  # before: 503 for everyone while the slow clients held every slot
    assert metric(gw, "routeiq_shed_requests_total", reason="overloaded") == 0.0
    wait_until(lambda: len([r for r in slow_senders if r]) == 2 * MAX_IN_FLIGHT, 6, message="slow clients answered")
    for outcome in slow_senders:
        assert outcome.get("status") == 408, outcome
        assert outcome["code"] == "request_timeout"
        assert outcome["after"] < 3.5, outcome  # the 2 s whole-body deadline, not the client's pace
        assert outcome["closed"], "the connection must close after a 408: the rest of the body is not read"


def test_stalled_body_gets_408_after_the_idle_timeout(gw: GatewayHandle) -> None:
    with connect(gw, timeout=5) as sock:
        sock.sendall(head() + CHAT[:10])
        started = time.monotonic()
        status, headers, body = read_response(sock)
        waited = time.monotonic() - started
        assert (status, error_code(body)) == (408, "request_timeout")
        assert "stalled" in json.loads(body)["error"]["message"]
        assert 0.8 < waited < 2.0, waited  # the 1 s idle timeout, before the 2 s whole-body deadline
        assert headers.get("connection") == "close"
        assert closed_by_peer(sock)
    # Counted as what the client was told (408), not as a client that went away (499).
    wait_until(
        lambda: metric(gw, "routeiq_requests_total", endpoint="chat/completions", status="408") == 1.0,
        2,
        message="the 408 counted",
    )


# -- item 7: heads -----------------------------------------------------------------------------------


def test_huge_header_is_refused_with_431_and_closed(gw: GatewayHandle) -> None:
    with connect(gw, timeout=5) as sock:
        sock.sendall(head(extra=b"x-filler: "))
        sent = 0
        try:
            while sent < 16 * 1024 * 1024:  # the attack's 16 MB; the gateway must stop reading long before
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:
            pass  # refused and closed while we were still sending
        status, _, body = read_response(sock)
    assert (status, error_code(body)) == (431, "headers_too_large")
    # Closed long before the 16 MB: what was sent beyond the limit sat in the kernel's socket buffers.
    assert sent < 8 * 1024 * 1024, sent


def test_too_many_headers_are_refused_with_431(gw: GatewayHandle) -> None:
    many = b"".join(b"x-h%d: v\r\n" % i for i in range(60))
    with connect(gw, timeout=5) as sock:
        sock.sendall(head(extra=many) + CHAT)
        status, _, body = read_response(sock)
        assert (status, error_code(body)) == (431, "headers_too_large")
        assert closed_by_peer(sock)


def test_slow_head_is_cut_at_the_header_deadline(gw: GatewayHandle) -> None:
    with connect(gw, timeout=0.25) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n")
        started = time.monotonic()
        answer = b""
        for byte in b"x-slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
                answer += sock.recv(65536)  # waits up to 0.25 s: the client's pace
            except TimeoutError:
                continue
            except OSError:
                break
            if answer:
                break
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request_timeout" in answer
    assert waited < 2.0, waited  # the 1 s header deadline


def test_idle_connections_are_closed(gw: GatewayHandle) -> None:
    with connect(gw, timeout=3) as silent, connect(gw, timeout=3) as kept_alive:
        kept_alive.sendall(head() + CHAT)
        status, _, _ = read_response(kept_alive)
        assert status == 200
        started = time.monotonic()
        assert closed_by_peer(silent), "a connection that never sent a byte stayed open"
        assert closed_by_peer(kept_alive), "an idle keep-alive connection stayed open"
        assert time.monotonic() - started < 2.5  # the 1 s keep-alive timeout


def test_connection_cap_closes_the_longest_idle_first(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    cap = 10
    env = {**EDGE_ENV, "ROUTEIQ_KEEP_ALIVE_SECONDS": "60", "ROUTEIQ_MAX_CONNECTIONS": str(cap)}
    gw = start_gateway(config(fresh_upstream), env=env)
    idle = []
    try:
        for _ in range(cap):
            idle.append(connect(gw, timeout=0.5))
            time.sleep(0.01)  # distinct idle-since times: the first opened is the longest idle
        assert chat_ok(gw) == 200  # one over the cap: an idle connection made room, the work was served
        assert closed_by_peer(idle[0]), "the longest-idle connection should have been closed to make room"
        assert not closed_by_peer(idle[-1])
    finally:
        for sock in idle:
            sock.close()


def test_over_the_cap_with_every_connection_busy_is_a_503(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    cap = 4
    env = {**EDGE_ENV, "ROUTEIQ_HEADER_TIMEOUT_SECONDS": "30", "ROUTEIQ_MAX_CONNECTIONS": str(cap)}
    gw = start_gateway(config(fresh_upstream), env=env)
    busy = []
    try:
        for _ in range(cap):
            sock = connect(gw, timeout=5)
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")  # inside a head: not idle
            busy.append(sock)
        time.sleep(0.2)  # the gateway has read those starts
        with connect(gw, timeout=5) as late:
            status, _, body = read_response(late)
        assert (status, error_code(body)) == (503, "overloaded")
    finally:
        for sock in busy:
            sock.close()


# -- item 8: a non-stream client that leaves ---------------------------------------------------------


def upstream_connections(gw: GatewayHandle, upstream: FakeUpstream) -> int:
    """The gateway process's established TCP connections to the upstream's port (from /proc)."""
    inodes = set()
    fd_dir = f"/proc/{gw.pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{gw.pid}/net/{table}") as f:
            next(f)
            for line in f:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if fields[3] == "01" and remote_port == upstream.port and fields[9] in inodes:
                    count += 1
    return count


def test_client_disconnect_cancels_the_upstream_call(gw: GatewayHandle, fresh_upstream: FakeUpstream) -> None:
    fresh_upstream.add_rule(model="fake-fast", delay_ms=20_000)
    with connect(gw) as sock:
        sock.sendall(head() + CHAT)
        wait_until(lambda: len(fresh_upstream.requests("/v1/chat/completions")) == 1, 5, message="call upstream")
        assert metric(gw, "routeiq_in_flight_requests") == 1.0
        assert upstream_connections(gw, fresh_upstream) == 1
    left = time.monotonic()
    # Before: the slot and the upstream call were held until the upstream answered (20 s here).
    wait_until(lambda: metric(gw, "routeiq_in_flight_requests") == 0.0, 2, message="in-flight back to 0")
    wait_until(lambda: upstream_connections(gw, fresh_upstream) == 0, 2, message="upstream connection closed")
    assert time.monotonic() - left < 2
    assert metric(gw, "routeiq_requests_total", endpoint="chat/completions", status="499") == 1.0
