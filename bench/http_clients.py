"""The native path's HTTP/1.1 client (gateway/routeiq_gateway/providers/http1.py) against httpx and a tuned aiohttp,
over TLS, on the same request, upstream and concurrency.

    .venv/bin/python bench/http_clients.py [--duration 5] [--warmup 2] [--rounds 3] [--concurrency 32]

The upstream is nginx (one worker, CPU 0) answering the proxy benchmark's fixed chat completion over TLS with a
throwaway CA (trustme); each client runs alone in its own process on CPU 1 under uvloop, a closed loop of
`--concurrency` workers on one keep-alive pool, verifying the certificate against that CA. Clients are measured in
turns, `--rounds` times, and the median round is reported: req/s, and CPU time per request of the client's process
(the figure a loaded, shared machine moves least). The native client is kept only while it stays ahead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from proxybench.processes import BenchError, child_env, child_process, free_port, pinned, port_open, wait_until
from proxybench.targets import NGINX_CONF, chat_request_body

CLIENTS = ("native", "httpx", "aiohttp")
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
PATH = "/v1/chat/completions"

OneRequest = Callable[[], Awaitable[bytes]]


# -- the clients (run in a child process, `--run-client NAME`) ----------------------------------------


async def native_client(url: str, ca: str, concurrency: int) -> tuple[OneRequest, Callable[[], Awaitable[None]]]:
    from routeiq_gateway.providers.http1 import Pool, Target
    from routeiq_gateway.providers.upstream_settings import UpstreamSettings
    from routeiq_shared.egress import EgressPolicy

    policy = EgressPolicy.from_env({"ROUTEIQ_EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8"})
    pool = Pool(policy, UpstreamSettings(max_connections=concurrency))
    target = Target.build(url, tuple(HEADERS.items()), verify=ca)
    body = chat_request_body()

    async def one() -> bytes:
        resp = await pool.post(target, body)
        data = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}")
        return data

    async def close() -> None:
        pool.close()

    return one, close


async def httpx_client(url: str, ca: str, concurrency: int) -> tuple[OneRequest, Callable[[], Awaitable[None]]]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = httpx.AsyncClient(verify=ssl.create_default_context(cafile=ca), limits=limits, trust_env=False)
    body = chat_request_body()

    async def one() -> bytes:
        resp = await client.post(url, content=body, headers=HEADERS)
        if resp.status_code != 200:
            raise RuntimeError(f"status {resp.status_code}")
        return resp.content

    return one, client.aclose


async def aiohttp_client(url: str, ca: str, concurrency: int) -> tuple[OneRequest, Callable[[], Awaitable[None]]]:
    import aiohttp

    # Tuned as bench/baselines/bare_passthrough.py is, and further: no cookie jar, no auto headers, no
    # decompression, a DNS cache; one session and one connector sized to the concurrency.
    connector = aiohttp.TCPConnector(
        limit=concurrency, limit_per_host=concurrency, ssl=ssl.create_default_context(cafile=ca), ttl_dns_cache=300
    )
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        auto_decompress=False,
        trust_env=False,
    )
    body = chat_request_body()

    async def one() -> bytes:
        async with session.post(url, data=body, headers=HEADERS) as resp:
            data = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"status {resp.status}")
            return data

    return one, session.close


async def run_client(
    name: str, url: str, ca: str, concurrency: int, warmup: float, duration: float
) -> dict[str, float]:
    factory = {"native": native_client, "httpx": httpx_client, "aiohttp": aiohttp_client}[name]
    one, close = await factory(url, ca, concurrency)
    try:
        first = json.loads(await one())
        if first.get("object") != "chat.completion":
            raise RuntimeError(f"not the fixed chat completion: {first!r:.200}")

        async def loop_until(deadline: float) -> int:
            done = 0
            while time.monotonic() < deadline:
                await one()
                done += 1
            return done

        await asyncio.gather(*(loop_until(time.monotonic() + warmup) for _ in range(concurrency)))
        cpu0, wall0 = time.process_time(), time.monotonic()
        counts = await asyncio.gather(*(loop_until(wall0 + duration) for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    finally:
        await close()
    requests = sum(counts)
    return {"requests": requests, "seconds": wall, "rps": requests / wall, "cpu_us_per_request": cpu / requests * 1e6}


# -- the orchestration ---------------------------------------------------------------------------------


def tls_nginx_conf(prefix: Path, port: int, cert: Path, key: Path) -> str:
    listen = "listen 127.0.0.1:@PORT@ reuseport backlog=4096;"
    conf = NGINX_CONF.read_text()
    if listen not in conf:
        raise BenchError(f"bench/upstream/nginx.conf has no `{listen}` line to make TLS")
    tls = (
        "listen 127.0.0.1:@PORT@ ssl reuseport backlog=4096;\n"
        f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n"
        "        ssl_protocols TLSv1.2 TLSv1.3;"
    )
    return conf.replace(listen, tls).replace("@PREFIX@", str(prefix)).replace("@PORT@", str(port))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per client and round")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="each client measured this many times, in turns")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--load-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--run-client", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run_client:  # the child: one client, one measurement, one JSON line
        import uvloop

        result = uvloop.run(
            run_client(args.run_client, args.url, args.ca, args.concurrency, args.warmup, args.duration)
        )
        print(json.dumps(result))
        return 0

    import trustme

    with tempfile.TemporaryDirectory(prefix="http-clients-") as tmp:
        work = Path(tmp)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        ca.cert_pem.write_to_path(str(work / "ca.pem"))
        cert.private_key_pem.write_to_path(str(work / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
        prefix = work / "nginx"
        prefix.mkdir()
        port = free_port()
        (prefix / "nginx.conf").write_text(tls_nginx_conf(prefix, port, work / "cert.pem", work / "key.pem"))
        argv = ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")]
        url = f"https://127.0.0.1:{port}{PATH}"
        results: dict[str, list[dict[str, float]]] = {name: [] for name in CLIENTS}
        with child_process(pinned(args.load_cpu, argv), work / "nginx.out") as proc:
            wait_until(lambda: port_open(port), proc, work / "nginx.out", timeout_s=10)
            for round_no in range(args.rounds):
                for name in CLIENTS:
                    child = [sys.executable, __file__, "--run-client", name, "--url", url, "--ca", str(work / "ca.pem")]
                    child += ["--concurrency", str(args.concurrency), "--warmup", str(args.warmup)]
                    child += ["--duration", str(args.duration)]
                    done = subprocess.run(
                        pinned(args.client_cpu, child), env=child_env(), capture_output=True, text=True, check=False
                    )
                    if done.returncode != 0:
                        raise BenchError(f"{name} failed: {done.stderr[-2000:]}")
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    results[name].append(result)
                    print(
                        f"--> round {round_no + 1} {name}: {result['rps']:,.0f} req/s, "
                        f"{result['cpu_us_per_request']:.0f} us CPU/request",
                        file=sys.stderr,
                    )
    print(report(results, args))
    return 0


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> str:
    rps = {name: statistics.median(r["rps"] for r in runs) for name, runs in results.items()}
    cpu = {name: statistics.median(r["cpu_us_per_request"] for r in runs) for name, runs in results.items()}
    lines = [
        f"Command: `python bench/http_clients.py --duration {args.duration:g} --warmup {args.warmup:g} "
        f"--rounds {args.rounds} --concurrency {args.concurrency}`",
        "",
        f"TLS (trustme CA, verified) to nginx on CPU {args.load_cpu}; each client alone on CPU {args.client_cpu}, "
        f"uvloop, {args.concurrency} concurrent requests, median of {args.rounds} rounds.",
        "",
        "| client | req/s | CPU us/request | req/s vs native | CPU vs native |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in CLIENTS:
        lines.append(
            f"| {name} | {rps[name]:,.0f} | {cpu[name]:.0f} | {rps[name] / rps['native']:.2f} | "
            f"{cpu[name] / cpu['native']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
