"""A CONNECT tunnel through an HTTP proxy (HTTPS_PROXY), then TLS to the upstream inside it, end to end."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TypeVar

from routeiq_gateway.providers.upstream_settings import Proxy

P = TypeVar("P", bound=asyncio.Protocol)
_MAX_ANSWER_BYTES = 16 * 1024


class ProxyRefused(ConnectionError):
    """The proxy closed the connection or answered CONNECT with something other than 2xx."""


class _ConnectAnswer(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT, nothing more: the upstream speaks only after we do."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._buf = b""

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            return
        self._buf += data
        if b"\r\n\r\n" in self._buf:
            self.answer.set_result(self._buf)
        elif len(self._buf) > _MAX_ANSWER_BYTES:
            self.answer.set_exception(ProxyRefused("the proxy's answer to CONNECT has no end"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(ProxyRefused("the proxy closed the connection before answering CONNECT"))


async def open_tunnel(
    address: str,
    proxy: Proxy,
    host: str,
    port: int,
    ctx: ssl.SSLContext | None,
    protocol_factory: Callable[[], P],
) -> P:
    """Connect to the proxy at `address`, open a tunnel to host:port, and hand it to a new protocol (over TLS
    when `ctx` is given, the certificate checked against `host`)."""
    loop = asyncio.get_running_loop()
    transport, tunnel = await loop.create_connection(_ConnectAnswer, address, proxy.port)
    try:
        where = (f"[{host}]" if ":" in host else host) + f":{port}"
        request = f"CONNECT {where} HTTP/1.1\r\nHost: {where}\r\n".encode("idna")
        if proxy.authorization is not None:
            request += b"Proxy-Authorization: " + proxy.authorization + b"\r\n"
        transport.write(request + b"\r\n")
        answer = await tunnel.answer
        head, _, rest = answer.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split(b" ", 2)
        status = status_line[1] if len(status_line) > 1 else b""
        if not (status.isdigit() and 200 <= int(status) < 300):
            shown = status.decode("latin-1") if status.isdigit() else "no HTTP status"
            raise ProxyRefused(f"the proxy {proxy.host}:{proxy.port} answered {shown} to CONNECT {where}")
        if rest:
            raise ProxyRefused(f"the proxy {proxy.host}:{proxy.port} sent bytes before the upstream spoke")
        protocol = protocol_factory()
        if ctx is not None:
            tls = await loop.start_tls(transport, protocol, ctx, server_hostname=host)
            assert tls is not None  # None only when the transport closed, which start_tls raises for
            protocol.connection_made(tls)
        else:
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
        return protocol
    except BaseException:
        transport.close()
        raise
