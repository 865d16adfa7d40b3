"""uvicorn's httptools protocol with the bounds it lacks: deadlines for the request head and body, a size/count
cap on the head, idle connections closed before their first request too, a cap on open connections that evicts
idle ones, and the upstream call cancelled when its client disconnects (disconnect.py).

uvicorn bounds heads only for h11 (`h11_max_incomplete_event_size`); with httptools a 16 MB header was accepted,
a head sent one byte at a time was waited on forever, and a connection that never sent a byte stayed open.

The deadlines live here rather than in the app because here they are nearly free: a timer is armed only when a
read ends inside a request, so the usual request (head and body in one read) arms none.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from routeiq_gateway.http.disconnect import BODY_TIMED_OUT, cancel_for_disconnect
from routeiq_gateway.http.errors import error_body
from routeiq_gateway.http.limits import EdgeLimits


def _scope(cycle: Any) -> dict[str, Any]:
    """The request's scope as the plain dict it is (uvicorn types it as a closed TypedDict; our keys are extra)."""
    return cast(dict[str, Any], cycle.scope)


class _HeadRefused(Exception):
    """Raised from a parser callback; httptools re-raises it wrapped, and uvicorn answers through send_400_response."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[EdgeLimits] = EdgeLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.keep_alive
        self._in_head = False
        self._in_body = False
        self._head_bytes = 0
        self._head_lines = 0
        self._started = 0.0  # when the current request's first byte arrived
        self._body_started: float | None = None  # when a read first ended inside its body
        self._timer: asyncio.TimerHandle | None = None  # the current request's deadline, when a read ended inside it
        self._refusal: tuple[int, str, str] | None = None
        self.idle_since = self.loop.time()

    @classmethod
    def with_limits(cls, limits: EdgeLimits) -> type[BoundedHttpToolsProtocol]:
        """The protocol class to give uvicorn (it instantiates the class itself, so the limits ride on it)."""
        return type(cls.__name__, (cls,), {"limits": limits})

    # -- connection life -----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self._answer_and_close(503, "The gateway has too many open connections; retry shortly.", "overloaded")
            return
        # A connection that has not sent a byte yet is as idle as one between requests: the same timeout.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._unset_keepalive_if_required()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cancel_for_disconnect(_scope(cycle))  # the app's upstream call, if it is waiting on one
        super().connection_lost(exc)

    def is_idle(self) -> bool:
        return not self._in_head and not self._in_body and (self.cycle is None or self.cycle.response_complete)

    def _make_room(self) -> bool:
        """Close the longest-idle connection; False when every other connection is busy."""
        oldest: BoundedHttpToolsProtocol | None = None
        for conn in self.connections:
            if (
                conn is not self
                and isinstance(conn, BoundedHttpToolsProtocol)
                and conn.is_idle()
                and (oldest is None or conn.idle_since < oldest.idle_since)
            ):
                oldest = conn
        if oldest is None:
            return False
        oldest.transport.close()
        self.connections.discard(oldest)
        return True

    def on_response_complete(self) -> None:
        self.idle_since = self.loop.time()
        super().on_response_complete()

    # -- the request head ----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # A read that ends inside a head is counted whole: httptools holds an unfinished header line without calling
        # on_header, so the callbacks alone would not bound it. Lines completed in such a read are counted by the
        # callbacks too, so a head spread over reads meets the limit early (never late): SDK heads are ~1 KB.
        if self._in_head and self._refusal is None:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse_head()
                return
        if (self._in_head or self._in_body) and not self.transport.is_closing():
            self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._head_lines = 0
        self._started = self.loop.time()
        self._body_started = None

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self.limits.max_header_bytes:
            self._too_large()
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        self._head_lines += 1
        if self._head_bytes > self.limits.max_header_bytes or self._head_lines > self.limits.max_headers:
            self._too_large()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._in_body = True
        self._stop_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._stop_timer()
        super().on_message_complete()

    # -- deadlines -----------------------------------------------------------------------------------------

    def _arm(self) -> None:
        """A read ended inside a request: (re)arm its deadline. The head has one deadline from its first byte; the
        body one from the first read that ended inside it, and one for the gap until the next read."""
        if self._in_head:
            if self._timer is None:
                self._timer = self.loop.call_at(self._started + self.limits.header_timeout, self._timed_out)
            return
        now = self.loop.time()
        if self._body_started is None:
            self._body_started = now
        when = min(self._body_started + self.limits.body_timeout, now + self.limits.body_idle_timeout)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._timed_out)

    def _too_large(self) -> None:
        limits = self.limits
        message = f"Request headers exceed {limits.max_header_bytes} bytes or {limits.max_headers} lines."
        self._refusal = (431, message, "headers_too_large")
        raise _HeadRefused

    def _refuse_head(self) -> None:
        try:
            self._too_large()
        except _HeadRefused:
            self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:  # our own refusal, raised from a parser callback
            status, message, code = self._refusal
            self._answer_and_close(status, message, code)
            return
        super().send_400_response(msg)

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        limits = self.limits
        if self._in_head:
            message = f"Request headers were not received within {limits.header_timeout:g} seconds."
            self._answer_and_close(408, message, "request_timeout")
            return
        if not self._in_body:
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started:  # the app answered already (e.g. 401): just stop reading
            self.transport.close()
            return
        started = self._body_started if self._body_started is not None else self._started
        if self.loop.time() >= started + limits.body_timeout:
            message = f"The request body was not received within {limits.body_timeout:g} seconds."
        else:
            message = f"The request body stalled: no data for {limits.body_idle_timeout:g} seconds."
        if cycle is not None:
            _scope(cycle)[BODY_TIMED_OUT] = True  # the app, waiting on the body, counts it as 408 (not 499)
        self._answer_and_close(408, message, "request_timeout")

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _answer_and_close(self, status: int, message: str, code: str) -> None:
        """An OpenAI-shaped error written straight to the socket, then the connection closed: the parser's state
        is no longer trustworthy, and the client may still be sending."""
        self._in_head = self._in_body = False
        self._stop_timer()
        body = error_body(status, message, code)
        head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        if not self.transport.is_closing():
            self.transport.write(STATUS_LINE[status] + head + body)
            self.transport.close()
