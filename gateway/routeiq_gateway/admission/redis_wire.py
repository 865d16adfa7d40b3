"""A minimal RESP connection for the limits' pipelined script calls (script_batch.py): one socket, a batch of
commands written at once, their replies parsed from one buffer. redis-py's general parser cost more CPU per
reply than the rest of a limit check; the replies here are only what the scripts answer (a string, an integer or
an error). The URL is REDIS_URL's: redis://, rediss:// (TLS), unix://, with user, password and database."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

_READ = 65536


def pack(*parts: bytes) -> bytes:
    """One command in RESP."""
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def _error(line: bytes) -> ResponseError:
    text = line.decode(errors="replace")
    return NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text)


def parse_one(data: bytes | bytearray, pos: int) -> tuple[Any, int] | None:
    """(the reply at `pos`, where the next one starts), or None when it has not all arrived yet."""
    end = data.find(b"\r\n", pos)
    if end < 0:
        return None
    kind, line = data[pos], bytes(data[pos + 1 : end])
    if kind == 0x24:  # $ bulk string
        size = int(line)
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(data) < stop + 2:
            return None
        return bytes(data[end + 2 : stop]), stop + 2
    if kind == 0x3A:  # : integer
        return int(line), end + 2
    if kind == 0x2B:  # + simple string
        return line, end + 2
    if kind == 0x2D:  # - error
        return _error(line), end + 2
    raise RedisConnectionError(f"unexpected reply type {chr(kind)!r} from Redis")


class RespConnection:
    def __init__(self, url: str) -> None:
        self.options = parse_url(url)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buffer = bytearray()

    async def roundtrip(self, data: bytes, count: int) -> list[Any]:
        """Write `data` (`count` commands) and read their `count` replies; an error reply is returned, not raised.
        Any failure on the way closes the connection (the next call opens a new one)."""
        try:
            if self._writer is None:
                await self._open()
            assert self._writer is not None
            self._writer.write(data)
            return await self._read(count)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self._buffer.clear()

    async def _open(self) -> None:
        o = self.options
        if "path" in o:
            self._reader, self._writer = await asyncio.open_unix_connection(o["path"])
        else:
            tls = ssl.create_default_context() if o.get("connection_class") is SSLConnection else None
            self._reader, self._writer = await asyncio.open_connection(
                o.get("host", "localhost"), o.get("port", 6379), ssl=tls
            )
        setup = []
        if o.get("password"):
            auth = [o["username"].encode()] if o.get("username") else []
            setup.append(pack(b"AUTH", *auth, str(o["password"]).encode()))
        if o.get("db"):
            setup.append(pack(b"SELECT", str(o["db"]).encode()))
        if setup:
            self._writer.write(b"".join(setup))
            for reply in await self._read(len(setup)):
                if isinstance(reply, ResponseError):
                    raise RedisConnectionError(f"Redis refused the connection setup: {reply}")

    async def _read(self, count: int) -> list[Any]:
        assert self._reader is not None
        replies: list[Any] = []
        buf, pos = self._buffer, 0
        while len(replies) < count:
            parsed = parse_one(buf, pos) if pos < len(buf) else None
            if parsed is None:
                chunk = await self._reader.read(_READ)
                if not chunk:
                    raise RedisConnectionError("Redis closed the connection")
                buf += chunk
                continue
            reply, pos = parsed
            replies.append(reply)
        del buf[:pos]
        return replies
