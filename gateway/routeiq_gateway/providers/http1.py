"""A lean HTTP/1.1 client for the native path: keep-alive pools per origin, httptools for parsing.

Why not aiohttp: on the request path it was the largest single cost (about a third of the gateway's CPU under
load), spent on generality this path does not need: cookies, redirects, auto headers, multipart. This client
does one thing: POST a prepared body to an origin it already knows and hand back status, a few headers and the
body, whole or as it arrives.
"""

from __future__ import annotations

import asyncio
import collections
import os
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools
from routeiq_shared.egress import EgressError, EgressPolicy

from routeiq_gateway.providers.relayed_headers import PASSED_HEADERS, RATELIMIT_PREFIX

IDLE_SECONDS = 60.0  # close pooled connections idle longer than this (upstreams drop them around here too)
MAX_IDLE_PER_ORIGIN = 512
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
_RETRY_AFTER, _CONTENT_TYPE, _FRAMING, _PASSED = range(4)
_HEADER_KINDS = {
    b"retry-after": _RETRY_AFTER,
    b"content-type": _CONTENT_TYPE,
    b"content-length": _FRAMING,
    b"transfer-encoding": _FRAMING,
    **dict.fromkeys(PASSED_HEADERS, _PASSED),  # relayed to the client (relayed_headers.py), with x-ratelimit-*
}
_PAUSE_AT = 1024 * 1024  # stop reading a stream from upstream while this much waits for a slow client


class UpstreamClosed(ConnectionError):
    """The upstream closed or reset the connection before the response was complete."""


class ResponseTooLarge(ConnectionError):
    pass


class DestinationRefused(Exception):
    """The egress policy refuses every address the upstream's host resolves to. The message names the host."""


class HeaderInjection(ValueError):
    """A header name or value (or the URL's path) holds a character that would end or split the header line."""


def check_header_line(name: str, value: str) -> None:
    """Refuse what could split a request head: CR, LF, NUL and other control characters (a tab is legal)."""
    if not name or any(c <= " " or c in ":\x7f" or not c.isascii() for c in name):
        raise HeaderInjection(f"header name {name!r} is not a valid token")
    bad = next((c for c in value if (c < " " and c != "\t") or c == "\x7f"), None)
    if bad is not None:
        # Name the header and the character, never the value: it is often a credential.
        raise HeaderInjection(f"header {name!r} holds a control character ({bad!r}); refusing to send it")


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> bytes:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal keeps its brackets
        return (host if self.port == default else f"{host}:{self.port}").encode("idna")


@dataclass(frozen=True, slots=True)
class Target:
    """Where one deployment's endpoint lives, with the request head that never changes prepared once."""

    origin: Origin
    head_prefix: bytes  # request line + static headers, without Content-Length and the final CRLF

    @classmethod
    def build(cls, url: str, headers: tuple[tuple[str, str], ...]) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        origin = Origin(parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if any(c <= " " or c == "\x7f" or not c.isascii() for c in path):
            raise HeaderInjection("the URL's path holds a space, control or non-ASCII character")
        for name, value in headers:
            check_header_line(name, value)
        lines = [f"POST {path} HTTP/1.1".encode(), b"Host: " + origin.host_header]
        try:
            lines += [f"{k}: {v}".encode("latin-1") for k, v in headers]
        except UnicodeEncodeError:
            raise HeaderInjection("a header value is not Latin-1 text") from None
        return cls(origin, b"\r\n".join(lines) + b"\r\n")


class _Connection(asyncio.Protocol):
    """One keep-alive connection. A response is read into `body` (whole) or handed out chunk by chunk (stream)."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.idle_since = time.monotonic()
        self.closed = False
        self.was_reset = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.retry_after: bytes | None = None
        self.content_type: bytes | None = None
        self.passed: list[tuple[bytes, bytes]] = []  # response headers the client gets too (PASSED_HEADERS)
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.got_bytes = False
        self.headers_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.complete = False
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._whole = False  # read_all() wants the body at once: no backpressure
        self._framed = False  # Content-Length or Transfer-Encoding seen
        self._interim = False  # inside a 1xx response

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports don't subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamClosed(f"malformed HTTP response: {exc}"))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.was_reset = exc is not None
        if not self.complete and exc is None and self.error is None and self.headers_done.done() and not self._framed:
            self.complete = True  # RFC 9112 §6.3 (8): a body with neither framing ends when the server closes
            self._wake()
            return
        if not self.complete:
            self._fail(UpstreamClosed("upstream reset the connection" if exc else "upstream closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        kind = _HEADER_KINDS.get(name)  # one lookup for every header this client reads
        if kind is None:
            if name.startswith(RATELIMIT_PREFIX):
                self.passed.append((name, value))
        elif kind == _RETRY_AFTER:
            self.retry_after = value
        elif kind == _CONTENT_TYPE:
            self.content_type = value
        elif kind == _FRAMING:
            self._framed = True
        else:
            self.passed.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if 100 <= self.status < 200:  # interim (100 Continue, 103 Early Hints): the final response follows
            self._interim = True
            self.retry_after = None
            self.content_type = None
            self.passed = []
            self._framed = False
            return
        if not self.headers_done.done():
            self.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > MAX_RESPONSE_BYTES:
            self._fail(ResponseTooLarge(f"upstream response over {MAX_RESPONSE_BYTES} bytes"))
            self._close()
            return
        if self.buffered > _PAUSE_AT and not self._whole and self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        if not self.parser.should_keep_alive():
            self._close()
        self._wake()

    # used by the client
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        if not self.headers_done.done():
            self.headers_done.set_exception(exc)
            self.headers_done.exception()  # mark retrieved: nobody may be waiting any more
        self._wake()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def send(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await self.headers_done

    async def read_all(self) -> bytes:
        self._whole = True
        self._resume()
        while True:
            if self.error is not None:  # before `complete`: an oversized body can complete in the same read
                raise self.error
            if self.complete:
                break
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        body = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        return body

    async def next_chunk(self) -> bytes | None:
        """The next piece of a streamed body, or None at its end."""
        while not self.chunks:
            if self.error is not None:
                raise self.error
            if self.complete:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.buffered < _PAUSE_AT // 2:
            self._resume()
        return chunk

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    def reusable(self) -> bool:
        return self.complete and not self.closed and self.error is None


class Response:
    """A response whose headers have arrived. Read the body with `read()` or iterate it; always `release()`."""

    __slots__ = ("_conn", "_pool", "content_type", "headers", "retry_after", "status")

    def __init__(self, conn: _Connection, pool: Pool) -> None:
        self._conn: _Connection | None = conn
        self._pool = pool
        self.status = conn.status
        self.retry_after = conn.retry_after.decode("latin-1") if conn.retry_after else None
        self.content_type = conn.content_type.decode("latin-1").lower() if conn.content_type else ""
        self.headers = tuple(conn.passed)

    async def read(self) -> bytes:
        assert self._conn is not None
        try:
            return await self._conn.read_all()
        finally:
            self.release()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        assert conn is not None
        while (chunk := await conn.next_chunk()) is not None:
            yield chunk

    def release(self) -> None:
        """Return the connection to the pool when the response was read to its end; otherwise close it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.put_back(conn)


class Pool:
    """Keep-alive connections to every origin the native path talks to.

    Every new connection goes to an address `policy` accepted after resolving the origin's host (so a DNS name
    pointing at a metadata or unlisted private address is refused); pooled connections skip that cost.
    """

    def __init__(self, policy: EgressPolicy | None = None) -> None:
        self._idle: dict[Origin, collections.deque[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self.policy = policy if policy is not None else EgressPolicy()
        self._retained: frozenset[Origin] | None = None  # None: every origin may keep idle connections

    async def post(self, target: Target, body: bytes, extra_head: bytes = b"") -> Response:
        """Send and wait for the response headers. `extra_head`: per-request header lines (CRLF-terminated).

        A pooled connection that the upstream closed cleanly (FIN) before answering a single byte is the
        keep-alive race: the upstream timed the connection out as we reused it, and its application never saw
        the request. That case alone is retried here, once, on a new connection. A reset or a partial answer
        may mean the request was processed, so it is the dispatcher's to retry or not.
        """
        conn = self._take_idle(target.origin)
        if conn is not None:
            try:
                await conn.send(target.head_prefix + extra_head, body)
                return Response(conn, self)
            except UpstreamClosed:
                conn._close()
                if conn.got_bytes or conn.was_reset:
                    raise
            except BaseException:
                conn._close()
                raise
        conn = await self._connect(target.origin)
        try:
            await conn.send(target.head_prefix + extra_head, body)
        except BaseException:
            conn._close()
            raise
        return Response(conn, self)

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # most recently used first: the likeliest to be still open
            if conn.closed or now - conn.idle_since > IDLE_SECONDS:
                conn._close()
                continue
            conn._reset()
            return conn
        return None

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        ctx = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ctx = self._ssl
        try:
            addresses = await self.policy.resolve(origin.host, origin.port)
        except EgressError as exc:
            raise DestinationRefused(str(exc)) from None
        except OSError as exc:
            raise UpstreamClosed(f"cannot connect to {origin.host}:{origin.port}: {exc.strerror or exc}") from None
        failure: OSError | None = None
        for _family, address in addresses:
            try:
                # The checked address, never the name again (a second lookup could answer differently); TLS
                # still verifies the certificate against the host as configured.
                _, conn = await loop.create_connection(
                    lambda: _Connection(origin),
                    address,
                    origin.port,
                    ssl=ctx,
                    server_hostname=origin.host if ctx is not None else None,
                )
            except OSError as exc:
                failure = exc
                continue
            return conn
        assert failure is not None  # resolve() never returns an empty list
        reason = os.strerror(failure.errno) if failure.errno else str(failure)  # asyncio words it less plainly
        raise UpstreamClosed(f"cannot connect to {origin.host}:{origin.port}: {reason}") from None

    def put_back(self, conn: _Connection) -> None:
        if not conn.reusable() or (self._retained is not None and conn.origin not in self._retained):
            conn._close()
            return
        idle = self._idle.setdefault(conn.origin, collections.deque())
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            conn._close()
            return
        conn._resume()  # a body can end in the read that paused it: an idle connection must keep reading
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def retain(self, origins: frozenset[Origin]) -> None:
        """Keep idle connections only to `origins` (after a reload: the deployments that remain); close the rest
        now, and those in use when they come back."""
        self._retained = origins
        for origin in [o for o in self._idle if o not in origins]:
            for conn in self._idle.pop(origin):
                conn._close()

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn._close()
        self._idle.clear()
