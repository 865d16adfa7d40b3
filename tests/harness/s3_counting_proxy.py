"""A counting, throttling HTTP proxy in front of `moto_server`: what the S3 side saw, not what clients claim.

    proxy = CountingProxy(moto_s3.endpoint_url, listeners=5, rate_bytes_per_s=40e6).start()
    env = {"AWS_ENDPOINT_URL_S3": proxy.url(0), ...}       # client group 0 talks to listener 0
    ...
    proxy.peak                  # most GETs of */model.pkl ever in flight at once
    proxy.transfers()           # every such GET: which listener, when it started and ended, bytes sent
    proxy.stop()

Every request is forwarded to the upstream unchanged (method, raw path and query, headers, body); the answer is
streamed back, at most `rate_bytes_per_s` per response when a rate is set, so that a download of a few MB
takes long enough to overlap with others if nothing kept them apart. The proxy listens on several loopback
ports, one per client group (a process of agents), so each request is attributed to the group that sent it
by the port it arrived on, without trusting anything in the request.

A watched GET (path ending in `suffix`) is in flight from the moment its request line arrives until the last
byte of the answer is written or the client goes away; `peak` is the running maximum of that count, kept as
requests come and go. The proxy runs in a thread of the test process with its own event loop, like
`otlp_collector.py`: only the test reads what it records.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from dataclasses import dataclass, replace

import aiohttp
from aiohttp import web
from yarl import URL

# Per-connection headers, never forwarded (RFC 9110 §7.6.1), plus the ones aiohttp sets from the body itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Transfer:
    """One watched GET as the proxy saw it. Times are `time.monotonic()` (system-wide on Linux, so they
    compare with the test's own clock)."""

    listener: int
    path: str
    started: float
    ended: float | None = None  # None while in flight
    status: int | None = None
    bytes_sent: int = 0
    complete: bool = False  # every byte of the answer was written

    @property
    def in_flight(self) -> bool:
        return self.ended is None


class CountingProxy:
    def __init__(
        self,
        upstream_url: str,
        listeners: int = 1,
        *,
        suffix: str = "/model.pkl",
        rate_bytes_per_s: float | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if listeners < 1:
            raise ValueError("listeners must be >= 1")
        self.upstream_url = upstream_url.rstrip("/")
        self.suffix = suffix
        self.rate = rate_bytes_per_s
        self.host = host
        self._count = listeners
        self._ports: list[int] = []
        self._lock = threading.Lock()
        self._transfers: list[Transfer] = []
        self._in_flight = 0
        self._peak = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- what the store saw -------------------------------------------------------------------------------

    @property
    def peak(self) -> int:
        with self._lock:
            return self._peak

    def transfers(self) -> list[Transfer]:
        with self._lock:
            return list(self._transfers)

    def in_flight(self) -> list[Transfer]:
        return [t for t in self.transfers() if t.in_flight]

    def url(self, listener: int = 0) -> str:
        return f"http://{self.host}:{self._ports[listener]}"

    # -- life ---------------------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> CountingProxy:
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, errors), name="s3-counting-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("counting proxy did not start")
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already stopped
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = None

    def __enter__(self) -> CountingProxy:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event, errors: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 — handed to start(), which raises it in the test's thread
            errors.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _serve(self) -> None:
        # No connection limit: fifty agents may all be talking at once, and the count is the point.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None)
        )
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        for _ in range(self._count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, 0))
            sock.listen(512)
            self._ports.append(int(sock.getsockname()[1]))
            await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- forwarding ---------------------------------------------------------------------------------------

    def _begin(self, listener: int, path: str) -> int:
        with self._lock:
            self._transfers.append(Transfer(listener, path, time.monotonic()))
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            return len(self._transfers) - 1

    def _end(self, index: int, status: int | None, sent: int, complete: bool) -> None:
        with self._lock:
            self._in_flight -= 1
            t = self._transfers[index]
            self._transfers[index] = replace(
                t, ended=time.monotonic(), status=status, bytes_sent=sent, complete=complete
            )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        listener = self._ports.index(sockname[1]) if sockname else -1
        watched = request.method == "GET" and request.path.endswith(self.suffix)
        index = self._begin(listener, request.path) if watched else -1
        status: int | None = None
        sent = 0
        complete = False
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
            body = await request.read()
            async with self._session.request(
                request.method,
                URL(self.upstream_url + request.raw_path, encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            ) as upstream:
                status = upstream.status
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in _HOP_BY_HOP:
                        response.headers.add(key, value)
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                started = time.monotonic()
                async for chunk in upstream.content.iter_chunked(CHUNK_BYTES):
                    await response.write(chunk)
                    sent += len(chunk)
                    if self.rate:
                        delay = started + sent / self.rate - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                await response.write_eof()
                complete = True
                return response
        except ConnectionResetError:  # the client went away mid-answer (a killed agent): nothing left to send
            return web.Response(status=499)
        finally:
            if watched:
                self._end(index, status, sent, complete)
