"""Lua script calls coalesced into pipelines: every call made while one round trip is on the wire goes out together
in the next, on one connection. Under load a request's limits cost a share of one round trip instead of one
each, and the pool never runs dry however many requests are in flight.

Scripts are called by SHA (EVALSHA); a Redis that does not know them (restarted, flushed) answers NOSCRIPT for
those calls alone, which did nothing: they are loaded and sent once more. Calls that ran are never repeated."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError, RedisError
from routeiq_shared.redis_settings import RedisSettings

from routeiq_gateway.admission.redis_wire import open_wire, pack

_ERRORS = (RedisError, OSError, TimeoutError)
_HEADS = 10_000  # encoded command heads kept (one per scope and limits)
Late = Callable[[list[Any]], None]


@dataclass(slots=True)
class _Group:
    """Commands of one caller, answered together: the replies in order (an error reply as its exception)."""

    commands: list[bytes]
    future: asyncio.Future[list[Any]]
    late: Late | None  # called with the replies when they come after the caller stopped waiting
    timer: asyncio.TimerHandle | None


class ScriptBatch:
    def __init__(self, settings: RedisSettings, scripts: dict[str, str], flush_timeout: float) -> None:
        self.wire = open_wire(settings)
        self.scripts = scripts
        self.sha = {
            name: hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest() for name, text in scripts.items()
        }
        self._sha_bytes = {name: sha.encode() for name, sha in self.sha.items()}
        self.flush_timeout = flush_timeout  # one pipeline's bound; callers bound their own wait, shorter
        self._queue: list[_Group] = []
        self._flusher: asyncio.Task[None] | None = None
        self._heads: dict[tuple[str, tuple[str, ...], tuple[str, ...], int], bytes] = {}

    def encode(self, name: str, keys: tuple[str, ...], fixed: tuple[str, ...], variable: tuple[str, ...]) -> bytes:
        """EVALSHA of a script in RESP. `fixed` arguments come before `variable` ones and repeat from call to call
        (a scope's limits): their encoding is kept."""
        cache_key = (name, keys, fixed, len(variable))
        head = self._heads.get(cache_key)
        if head is None:
            if len(self._heads) >= _HEADS:
                self._heads.clear()
            parts = (b"EVALSHA", self._sha_bytes[name], str(len(keys)).encode(), *(k.encode() for k in keys))
            parts += tuple(a.encode() for a in fixed)
            head = b"*%d\r\n" % (len(parts) + len(variable)) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
            self._heads[cache_key] = head
        return head + b"".join(b"$%d\r\n%s\r\n" % (len(b), b) for b in (v.encode() for v in variable))

    def send(
        self, commands: list[bytes], late: Late | None = None, timeout: float | None = None
    ) -> asyncio.Future[list[Any]]:
        """The commands' replies, in a future: sent with the next pipeline. Past `timeout` the future fails with
        TimeoutError (one timer handle, cheaper than a timeout context per request); when it has failed or been
        cancelled, `late` gets the replies when they come."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        timer = loop.call_later(timeout, _expire, future) if timeout is not None else None
        self._queue.append(_Group(commands, future, late, timer))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return future

    async def warm(self) -> None:
        """Open the connections and load the scripts before the first request needs them (on a cluster: the slot
        map and every master): a first call on a cold connection can take longer than a request waits, and would
        send it, and the Redis breaker, to the fallback for nothing. Runs as the flusher, so nothing else uses the
        connection meanwhile; what requests queue in the meantime goes out right after. Failures are left for the
        first call to report."""
        if self._flusher is not None and not self._flusher.done():
            return  # requests are flowing already
        self._flusher = asyncio.get_running_loop().create_task(self._warm_then_flush())
        await asyncio.wait([self._flusher])

    async def _warm_then_flush(self) -> None:
        loads = [pack(b"SCRIPT", b"LOAD", text.encode()) for text in self.scripts.values()]
        try:
            async with asyncio.timeout(self.flush_timeout):
                await self.wire.broadcast(loads)
        except _ERRORS:
            self.wire.close()  # half-open, maybe: the next call starts afresh
        await self._flush()

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            await asyncio.wait([self._flusher], timeout=self.flush_timeout)
        self.wire.close()

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            commands = [c for group in batch for c in group.commands]
            try:
                async with asyncio.timeout(self.flush_timeout):
                    replies = await self._send(commands)
            except _ERRORS as exc:
                for group in batch:
                    _fail(group, exc)
                continue
            except BaseException as exc:  # cancelled at shutdown: nobody is left waiting for a reply
                for group in batch:
                    _fail(group, RedisError(f"script call abandoned: {type(exc).__name__}"))
                raise
            at = 0
            for group in batch:
                mine = replies[at : at + len(group.commands)]
                at += len(group.commands)
                if group.timer is not None:
                    group.timer.cancel()
                if not group.future.done():
                    group.future.set_result(mine)
                elif group.late is not None:
                    group.late(mine)

    async def _send(self, commands: list[bytes]) -> list[Any]:
        replies = await self.wire.roundtrip(commands)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            # On every node of a cluster: the one that said NOSCRIPT may not be the only one that lost them.
            loads = [pack(b"SCRIPT", b"LOAD", text.encode()) for text in self.scripts.values()]
            for reply in await self.wire.broadcast(loads):
                if isinstance(reply, Exception):
                    raise reply
            again = await self.wire.roundtrip([commands[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies


def _expire(future: asyncio.Future[list[Any]]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("Redis did not answer in time"))


def _fail(group: _Group, exc: BaseException) -> None:
    if group.timer is not None:
        group.timer.cancel()
    if not group.future.done():
        group.future.set_exception(exc)
    elif not group.future.cancelled():
        group.future.exception()  # retrieved: a timed-out caller has its answer already
