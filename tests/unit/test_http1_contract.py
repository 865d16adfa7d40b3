"""The native client's contract (providers/http1.py), against real sockets on 127.0.0.1: a per-origin connection
cap with a bounded pool wait, keep-alive expiry at or below the upstream's, TLS with a throwaway CA (trustme),
HTTPS_PROXY/NO_PROXY through a small CONNECT proxy, CR/LF refused in any header value, and a DNS cache whose
addresses are checked against the egress policy on every use.

The upstream is a tiny asyncio server (optionally TLS) that answers every request with which connection served it.
Every test runs on both the stdlib loop and uvloop. White-box checks are marked where they look inside the pool.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvloop
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.providers.http1 import (
    DestinationRefused,
    HeaderInjection,
    Pool,
    PoolTimeout,
    Target,
    TLSFailure,
)
from routeiq_gateway.providers.native import connection_error
from routeiq_gateway.providers.upstream_settings import UpstreamSettings, bypasses
from routeiq_shared.egress import EgressPolicy

pytestmark = pytest.mark.timeout(20)

GUARD_SECONDS = 4.0
LOOPBACK = EgressPolicy.from_env({"ROUTEIQ_EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8"})
JSON = (("Content-Type", "application/json"),)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Any:
    def runner(coro: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            async with asyncio.timeout(GUARD_SECONDS):
                await coro

        (uvloop.run if request.param == "uvloop" else asyncio.run)(guarded())

    return runner


@dataclass
class CA:
    ca: trustme.CA
    ca_path: Path
    server_ctx: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> CA:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return CA(ca, path, server_ctx)


@dataclass
class Upstream:
    """Answers each request with `conn<N>:<body>`; `hold` parks responses until released; `extra` adds headers."""

    ssl_ctx: ssl.SSLContext | None = None
    extra: bytes = b""
    port: int = 0
    connections: int = 0
    hold: asyncio.Event | None = None
    received: asyncio.Queue[int] = field(default_factory=asyncio.Queue)  # the connection of each request read
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for w in self._writers:
            w.close()
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cid = self.connections
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                self.received.put_nowait(cid)
                if self.hold is not None:
                    await self.hold.wait()
                answer = f"conn{cid}:".encode() + body
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + self.extra
                    + b"Content-Length: "
                    + str(len(answer)).encode()
                    + b"\r\n\r\n"
                    + answer
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass

    def target(self, verify: bool | str = True, host: str = "127.0.0.1") -> Target:
        scheme = "https" if self.ssl_ctx is not None else "http"
        return Target.build(f"{scheme}://{host}:{self.port}/v1/chat/completions", JSON, verify=verify)


async def roundtrip(pool: Pool, target: Target, body: bytes) -> bytes:
    resp = await pool.post(target, body)
    assert resp.status == 200
    return await resp.read()


# -- connection cap and pool wait --------------------------------------------------------------------


def test_connection_cap_bounds_the_wait_with_a_retryable_error(run: Any) -> None:
    async def main() -> None:
        async with Upstream(hold=asyncio.Event()) as up:
            assert up.hold is not None
            pool = Pool(LOOPBACK, UpstreamSettings(max_connections=2, pool_wait=0.2))
            target = up.target()
            try:
                first = [asyncio.create_task(roundtrip(pool, target, b"%d" % i)) for i in range(2)]
                assert {await up.received.get(), await up.received.get()} == {0, 1}  # both requests in the upstream
                with pytest.raises(PoolTimeout) as info:
                    await pool.post(target, b"third")
                assert "2 connections" in str(info.value) and "127.0.0.1" in str(info.value)
                err = connection_error(info.value)
                assert isinstance(err, GatewayError) and err.retryable and err.status == 503
                assert err.code == "upstream_pool_exhausted"
                # a waiter gets the first connection that comes back, and no third one is ever opened
                waiting = asyncio.create_task(roundtrip(pool, target, b"fourth"))
                await asyncio.sleep(0.02)
                up.hold.set()
                assert sorted(await asyncio.gather(*first)) == [b"conn0:0", b"conn1:1"]
                assert (await waiting).endswith(b":fourth")
                assert up.connections == 2
            finally:
                pool.close()

    run(main())


def test_a_closed_connection_frees_its_slot_for_a_waiter(run: Any) -> None:
    async def main() -> None:
        async with Upstream(hold=asyncio.Event()) as up:
            assert up.hold is not None
            pool = Pool(LOOPBACK, UpstreamSettings(max_connections=1, pool_wait=1.0))
            target = up.target()
            try:
                first = asyncio.create_task(pool.post(target, b"a"))  # holds the only slot, no answer yet
                assert await up.received.get() == 0
                waiting = asyncio.create_task(roundtrip(pool, target, b"b"))
                await asyncio.sleep(0.02)
                assert not waiting.done()
                first.cancel()  # gives up mid-request: that connection is closed, its slot handed on
                up.hold.set()
                assert await waiting == b"conn1:b"
            finally:
                pool.close()

    run(main())


def test_a_cancelled_waiter_does_not_leak_a_slot(run: Any) -> None:
    async def main() -> None:
        async with Upstream() as up:
            pool = Pool(LOOPBACK, UpstreamSettings(max_connections=1, pool_wait=1.0))
            target = up.target()
            try:
                resp = await pool.post(target, b"a")
                waiting = asyncio.create_task(pool.post(target, b"b"))
                await asyncio.sleep(0.02)
                waiting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiting
                assert await resp.read() == b"conn0:a"
                assert await roundtrip(pool, target, b"c") == b"conn0:c"
            finally:
                pool.close()

    run(main())


# -- keep-alive expiry -------------------------------------------------------------------------------


def test_upstream_keep_alive_timeout_bounds_reuse(run: Any) -> None:
    async def main() -> None:
        async with Upstream(extra=b"Keep-Alive: timeout=2, max=100\r\n") as up:
            pool = Pool(LOOPBACK)
            target = up.target()
            try:
                assert await roundtrip(pool, target, b"a") == b"conn0:a"
                (conn,) = pool._idle[target.origin]  # white-box: age the idle connection past the server's limit
                conn.idle_since -= 1.5  # 2 s announced: reusing at 1.5 s would race the server's close
                assert await roundtrip(pool, target, b"b") == b"conn1:b"
            finally:
                pool.close()

    run(main())


def test_short_default_keep_alive_without_the_header(run: Any) -> None:
    async def main() -> None:
        async with Upstream() as up:
            pool = Pool(LOOPBACK, UpstreamSettings(keep_alive=3.0))
            target = up.target()
            try:
                assert await roundtrip(pool, target, b"a") == b"conn0:a"
                (conn,) = pool._idle[target.origin]
                conn.idle_since -= 1.0
                assert await roundtrip(pool, target, b"b") == b"conn0:b"  # within the default: reused
                (conn,) = pool._idle[target.origin]
                conn.idle_since -= 3.5
                assert await roundtrip(pool, target, b"c") == b"conn1:c"
            finally:
                pool.close()

    run(main())


def test_default_keep_alive_is_short() -> None:
    assert UpstreamSettings().keep_alive <= 5.0  # below uvicorn's, Node's and most servers' 5 s


# -- TLS with a throwaway CA -------------------------------------------------------------------------


def test_tls_verify_on_by_default_refuses_an_unknown_ca(run: Any, tls: CA) -> None:
    async def main() -> None:
        async with Upstream(ssl_ctx=tls.server_ctx) as up:
            pool = Pool(LOOPBACK)
            try:
                with pytest.raises(TLSFailure) as info:
                    await pool.post(up.target(), b"x")
                assert "certificate verify failed" in str(info.value)
                assert "Operation not permitted" not in str(info.value)
                err = connection_error(info.value)
                assert err.status == 502 and err.code == "upstream_tls_failed"
                assert "certificate" in err.message
            finally:
                pool.close()

    run(main())


def test_tls_custom_ca_bundle_and_verify_off(run: Any, tls: CA) -> None:
    async def main() -> None:
        async with Upstream(ssl_ctx=tls.server_ctx) as up:
            pool = Pool(LOOPBACK)
            try:
                assert await roundtrip(pool, up.target(verify=str(tls.ca_path)), b"a") == b"conn0:a"
                assert await roundtrip(pool, up.target(verify=False), b"b") == b"conn1:b"  # its own pool
                assert await roundtrip(pool, up.target(verify=str(tls.ca_path)), b"c") == b"conn0:c"
            finally:
                pool.close()

    run(main())


def test_tls_custom_ca_still_checks_the_host_name(run: Any, tmp_path: Path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.example").configure_cert(server_ctx)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))

    async def main() -> None:
        async with Upstream(ssl_ctx=server_ctx) as up:
            pool = Pool(LOOPBACK)
            try:
                with pytest.raises(TLSFailure) as info:
                    await pool.post(up.target(verify=str(tmp_path / "ca.pem")), b"x")
                assert "127.0.0.1" in str(info.value)
            finally:
                pool.close()

    run(main())


def test_tls_bad_ca_bundle_is_a_clear_error(run: Any, tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate")

    async def main() -> None:
        async with Upstream(ssl_ctx=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)) as up:
            pool = Pool(LOOPBACK)
            try:
                for path in (tmp_path / "bad.pem", tmp_path / "missing.pem"):
                    with pytest.raises(TLSFailure) as info:
                        await pool.post(up.target(verify=str(path)), b"x")
                    assert str(path) in str(info.value)
            finally:
                pool.close()

    run(main())


# -- CR/LF in any header value -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\r\nX-Injected: 1", "a\x00b"])
def test_control_characters_in_any_header_value_are_refused(bad: str) -> None:
    with pytest.raises(HeaderInjection) as info:
        Target.build("https://api.example.com/v1/x", (("content-type", "application/json"), ("x-key", bad)))
    assert bad not in str(info.value)  # the value may be a credential: named by its header only
    with pytest.raises(HeaderInjection):
        Target.build("https://api.example.com/v1/x", ((f"x{bad}", "v"),))


# -- DNS cache ---------------------------------------------------------------------------------------


class CountingPolicy:
    """Counts lookups; checks addresses with whichever policy `check` is now (as a reload would swap it)."""

    def __init__(self, check: EgressPolicy) -> None:
        self.check = check
        self.lookups = 0

    async def resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        self.lookups += 1
        return await self.check.resolve(host, port)

    def check_address(self, addr: Any, host: str = "") -> None:
        self.check.check_address(addr, host)


def test_dns_results_are_cached_and_rechecked_on_every_use(run: Any) -> None:
    async def main() -> None:
        async with Upstream() as up:
            policy = CountingPolicy(LOOPBACK)
            pool = Pool(policy, UpstreamSettings(dns_ttl=60))  # type: ignore[arg-type]  # duck-typed policy
            target = up.target(host="localhost")
            try:
                results = await asyncio.gather(*(roundtrip(pool, target, b"%d" % i) for i in range(3)))
                assert len(results) == 3 and up.connections >= 2
                assert policy.lookups == 1, "each new connection looked the name up again"
                pool.close()  # new connections from here on
                policy.check = EgressPolicy()  # the allow-list shrank (a reload): loopback no longer allowed
                with pytest.raises(DestinationRefused):
                    await pool.post(target, b"x")
                assert policy.lookups == 1, "the cached addresses must be checked, not looked up again"
            finally:
                pool.close()

    run(main())


def test_dns_cache_expires_after_its_ttl(run: Any) -> None:
    async def main() -> None:
        async with Upstream() as up:
            policy = CountingPolicy(LOOPBACK)
            pool = Pool(policy, UpstreamSettings(dns_ttl=5))  # type: ignore[arg-type]
            target = up.target(host="localhost")
            try:
                await roundtrip(pool, target, b"a")
                pool.close()
                for key, (expires, addresses) in list(pool._dns.items()):  # white-box: age the entry
                    pool._dns[key] = (expires - 6, addresses)
                await roundtrip(pool, target, b"b")
                assert policy.lookups == 2
            finally:
                pool.close()

    run(main())


# -- HTTPS_PROXY / NO_PROXY --------------------------------------------------------------------------


@dataclass
class ConnectProxy:
    """A CONNECT-only HTTP proxy on loopback, recording every request line it gets."""

    seen: list[str] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> ConnectProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        line = head.split("\r\n", 1)[0]
        self.seen.append(line)
        self.auth += [h.split(":", 1)[1].strip() for h in head.split("\r\n") if h.lower().startswith("proxy-auth")]
        method, where, _ = line.split(" ")
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        host, port = where.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def test_https_proxy_tunnels_tls_end_to_end(run: Any, tls: CA) -> None:
    async def main() -> None:
        async with ConnectProxy() as proxy, Upstream(ssl_ctx=tls.server_ctx) as up:
            env = {"HTTPS_PROXY": f"http://user:s%40cret@127.0.0.1:{proxy.port}", "NO_PROXY": "internal.example"}
            pool = Pool(LOOPBACK, UpstreamSettings.from_env(env))
            try:
                assert await roundtrip(pool, up.target(verify=str(tls.ca_path)), b"a") == b"conn0:a"
                assert await roundtrip(pool, up.target(verify=str(tls.ca_path)), b"b") == b"conn0:b"
                assert proxy.seen == [f"CONNECT 127.0.0.1:{up.port} HTTP/1.1"]
                assert proxy.auth == ["Basic dXNlcjpzQGNyZXQ="]  # user:s@cret
                # verification is end to end: an unknown CA through the tunnel is still refused
                with pytest.raises(TLSFailure):
                    await pool.post(up.target(), b"c")
            finally:
                pool.close()

    run(main())


def test_no_proxy_goes_direct(run: Any, tls: CA) -> None:
    async def main() -> None:
        async with ConnectProxy() as proxy, Upstream(ssl_ctx=tls.server_ctx) as up:
            env = {"https_proxy": f"http://127.0.0.1:{proxy.port}", "no_proxy": "localhost,127.0.0.1"}
            pool = Pool(LOOPBACK, UpstreamSettings.from_env(env))
            try:
                assert await roundtrip(pool, up.target(verify=str(tls.ca_path)), b"a") == b"conn0:a"
                assert proxy.seen == []
            finally:
                pool.close()

    run(main())


def test_proxy_does_not_bypass_the_egress_policy(run: Any) -> None:
    async def main() -> None:
        async with ConnectProxy() as proxy:
            pool = Pool(EgressPolicy(), UpstreamSettings.from_env({"HTTP_PROXY": f"http://127.0.0.1:{proxy.port}"}))
            try:
                with pytest.raises(DestinationRefused):  # a loopback literal, not allow-listed
                    await pool.post(Target.build("http://127.0.0.1:9/v1/x", JSON), b"x")
                with pytest.raises(DestinationRefused):
                    await pool.post(Target.build("http://169.254.169.254/latest", JSON), b"x")
                assert proxy.seen == []
            finally:
                pool.close()

    run(main())


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"HTTPS_PROXY": "https://proxy.example:3128"}, ["HTTPS_PROXY", "http://"]),
        ({"https_proxy": "socks5://proxy.example:1080"}, ["https_proxy", "http://"]),
        ({"HTTP_PROXY": "http://169.254.169.254:80"}, ["HTTP_PROXY", "metadata"]),
        ({"ALL_PROXY": "not a url"}, ["ALL_PROXY"]),
        ({"ROUTEIQ_UPSTREAM_MAX_CONNECTIONS": "0"}, ["ROUTEIQ_UPSTREAM_MAX_CONNECTIONS"]),
        ({"ROUTEIQ_UPSTREAM_POOL_WAIT_SECONDS": "soon"}, ["ROUTEIQ_UPSTREAM_POOL_WAIT_SECONDS"]),
    ],
)
def test_bad_settings_are_refused_at_start_by_name(env: dict[str, str], words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        UpstreamSettings.from_env(env)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_proxy_credentials_never_in_the_error() -> None:
    with pytest.raises(ValueError) as info:
        UpstreamSettings.from_env({"HTTPS_PROXY": "https://user:hunter2@proxy.example:3128"})
    assert "hunter2" not in str(info.value)


def test_settings_from_env() -> None:
    s = UpstreamSettings.from_env(
        {
            "ROUTEIQ_UPSTREAM_MAX_CONNECTIONS": "64",
            "ROUTEIQ_UPSTREAM_POOL_WAIT_SECONDS": "2.5",
            "ROUTEIQ_UPSTREAM_KEEP_ALIVE_SECONDS": "3",
            "ROUTEIQ_UPSTREAM_DNS_TTL_SECONDS": "30",
        }
    )
    assert (s.max_connections, s.pool_wait, s.keep_alive, s.dns_ttl) == (64, 2.5, 3.0, 30.0)


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "direct"),
    [
        ("*", "api.openai.com", 443, True),
        ("openai.com", "api.openai.com", 443, True),
        (".openai.com", "api.openai.com", 443, True),
        ("openai.com", "notopenai.com", 443, False),
        ("api.openai.com:8443", "api.openai.com", 443, False),
        ("api.openai.com:443", "api.openai.com", 443, True),
        ("10.0.0.0/8, vllm.svc", "10.1.2.3", 8000, True),
        ("10.0.0.0/8", "11.1.2.3", 8000, False),
        (" , vllm.svc", "vllm.svc", 8000, True),
        ("::1", "::1", 8000, True),
        ("[::1]:8000", "::1", 8000, True),
        ("[::1]:9000", "::1", 8000, False),
    ],
)
def test_no_proxy_matching(no_proxy: str, host: str, port: int, direct: bool) -> None:
    assert bypasses(no_proxy, host, port) is direct
