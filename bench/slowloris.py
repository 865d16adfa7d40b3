"""Soak: normal traffic's p99 with and without 300 idle connections and 20 slowloris clients (issue 7, item 7).

    .venv/bin/python bench/slowloris.py [--seconds 10] [--workers 4]      (or `make soak-slowloris`)

Starts the fake upstream and a real gateway (tests/harness), all on loopback. Normal traffic is `--workers`
clients in a closed loop of non-stream chat completions. It is measured quiet, then again while 300
connections sit idle (half never send a byte, half after one request) and 20 slowloris clients run: 10 send
their head one byte every 0.5 s, 10 send a whole head and then their body one byte every 0.5 s, each reconnecting
when the gateway cuts it off. The gateway runs with `max_in_flight: 12`, fewer than the slow bodies plus the
normal workers, so a slow client holding a slot would show as 503s. Passes (exit 0) when the p99 under attack
is within 2x of the quiet one and normal traffic got no 503. Bounded: about 2 x --seconds plus start-up.

Not in CI: it is a timing measurement on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import httpx  # noqa: E402
from harness.fake_upstream_control import FakeUpstream  # noqa: E402
from harness.gateway_process import GatewayHandle, VolumeDirs, launch_gateway  # noqa: E402

MASTER = "sk-soak-master"
IDLE_CONNECTIONS = 300
SLOW_HEADS = 10
SLOW_BODIES = 10
TRICKLE_SECONDS = 0.5
MAX_IN_FLIGHT = 12  # under slow bodies + normal workers: a slow body holding a slot would show as 503s
CHAT = json.dumps({"model": "fast", "messages": [{"role": "user", "content": "hello"}]}).encode()


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98] if len(samples) > 1 else samples[0]


async def normal_traffic(gw: GatewayHandle, seconds: float, workers: int) -> tuple[list[float], dict[int, int]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    headers = {"authorization": f"Bearer {MASTER}", "content-type": "application/json"}
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    async with httpx.AsyncClient(base_url=gw.base_url, headers=headers, timeout=30, limits=limits) as client:
        end = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < end:
                t0 = time.perf_counter()
                try:
                    response = await client.post("/v1/chat/completions", content=CHAT)
                    status = response.status_code
                except httpx.HTTPError:
                    status = 0  # a transport error: counted, never hidden
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(workers)))
    return latencies, statuses


def raw_head(length: int) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer %s\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % (MASTER.encode(), length)
    )


async def slowloris(gw: GatewayHandle, stop: asyncio.Event, slow_body: bool, cut: list[int]) -> None:
    """Trickle forever, reconnecting each time the gateway cuts the connection (counted in `cut`)."""
    prefix = raw_head(len(CHAT)) if slow_body else b""
    trickle = CHAT if slow_body else raw_head(len(CHAT)) + CHAT
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(gw.host, gw.port)
        except OSError:
            await asyncio.sleep(TRICKLE_SECONDS)
            continue
        try:
            writer.write(prefix)
            for byte in trickle:
                if stop.is_set():
                    return
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    answer = await asyncio.wait_for(reader.read(1024), TRICKLE_SECONDS)
                except TimeoutError:
                    continue
                cut[0] += 1  # the gateway answered (408) or closed: reconnect and start over
                del answer
                break
        except OSError:
            cut[0] += 1
        finally:
            writer.close()


async def idle_connections(gw: GatewayHandle, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    for i in range(count):
        reader, writer = await asyncio.open_connection(gw.host, gw.port)
        if i % 2:  # one request, then idle on keep-alive
            writer.write(raw_head(len(CHAT)) + CHAT)
            await writer.drain()
            await reader.read(65536)
        writers.append(writer)
    return writers


async def scenario(gw: GatewayHandle, seconds: float, workers: int) -> int:
    await normal_traffic(gw, 2, workers)  # warm-up: pools, caches
    quiet, quiet_status = await normal_traffic(gw, seconds, workers)

    stop = asyncio.Event()
    cut = [0]
    idle = await idle_connections(gw, IDLE_CONNECTIONS)
    attackers = [asyncio.create_task(slowloris(gw, stop, slow_body=i < SLOW_BODIES, cut=cut)) for i in range(20)]
    await asyncio.sleep(2 * TRICKLE_SECONDS)  # every slow client has its connection open and trickling
    loaded, loaded_status = await normal_traffic(gw, seconds, workers)
    open_idle = sum(not w.is_closing() for w in idle)
    stop.set()
    await asyncio.gather(*attackers)
    for w in idle:
        w.close()

    quiet_p99, loaded_p99 = p99(quiet) * 1000, p99(loaded) * 1000
    ratio = loaded_p99 / quiet_p99
    refused = loaded_status.get(503, 0)
    failed = sum(n for status, n in loaded_status.items() if status != 200)
    print(f"quiet:        {len(quiet):6d} requests, p99 {quiet_p99:7.2f} ms, statuses {quiet_status}")
    print(
        f"under attack: {len(loaded):6d} requests, p99 {loaded_p99:7.2f} ms, statuses {loaded_status}"
        f"  ({IDLE_CONNECTIONS} idle connections, {open_idle} still open; {SLOW_HEADS} slow heads + "
        f"{SLOW_BODIES} slow bodies, cut off by the gateway {cut[0]} times)"
    )
    print(f"p99 ratio:    {ratio:.2f} (limit 2.00)")
    print(f"503s:         {refused} (limit 0)")
    ok = ratio <= 2.0 and refused == 0 and failed == 0
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each measured phase (default 10)")
    parser.add_argument("--workers", type=int, default=4, help="closed-loop clients of normal traffic (default 4)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="routeiq-soak-") as tmp:
        root = Path(tmp)
        upstream = FakeUpstream.start(root / "upstream")
        try:
            params = {"model": "openai/gpt-4o-mini", "api_base": upstream.base_url, "api_key": "sk-up"}
            config = {
                "model_list": [{"model_name": "fast", "litellm_params": params}],
                "router_settings": {"num_retries": 0},
                "general_settings": {"master_key": MASTER},
                "routeiq": {"limits": {"max_in_flight": MAX_IN_FLIGHT}},
            }
            gw = launch_gateway(VolumeDirs(root / "volume"), config)
            try:
                return asyncio.run(scenario(gw, args.seconds, args.workers))
            finally:
                gw.stop()
        finally:
            upstream.stop()


if __name__ == "__main__":
    sys.exit(main())
