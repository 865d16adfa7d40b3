"""The PostgreSQL connection pools: one for writes (DATABASE_URL), one for reads (DATABASE_READ_URL, the replica;
the primary's pool when unset). Every call is bounded: connecting, waiting for a pooled connection, and each
statement (server-side `statement_timeout`), so a slow or gone database costs a background task seconds, never
a request (the hot path reads the key cache only). A database that accepts and never answers (a frozen host, a
black-holed route) would outlast the server-side timeout, so each use of a connection (`writer()`/`reader()`) is
also bounded on this side by `call_timeout`: the pool wait and two statements' time (6 s by default)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool
from routeiq_shared.egress import EgressError, check_setting_url

from routeiq_gateway.env_numbers import positive_numbers_from_env

_ENV_NAMES = {
    "connect_timeout": "ROUTEIQ_DB_CONNECT_TIMEOUT",
    "statement_timeout": "ROUTEIQ_DB_STATEMENT_TIMEOUT",
    "pool_timeout": "ROUTEIQ_DB_POOL_TIMEOUT",
    "pool_min": "ROUTEIQ_DB_POOL_MIN",
    "pool_max": "ROUTEIQ_DB_POOL_MAX",
}


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str
    read_url: str | None = None
    connect_timeout: float = 2.0  # seconds to open a connection
    statement_timeout: float = 2.0  # seconds a statement may run on the server
    pool_timeout: float = 2.0  # seconds to wait for a free pooled connection
    pool_min: int = 1
    pool_max: int = 4

    @property
    def call_timeout(self) -> float:
        """The longest one use of a connection may take, seen from here."""
        return self.pool_timeout + 2 * self.statement_timeout

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DatabaseSettings | None:
        """None without DATABASE_URL: virtual keys are off, the master key alone admits."""
        env = os.environ if env is None else env
        url = env.get("DATABASE_URL", "").strip()
        if not url:
            return None
        read_url = env.get("DATABASE_READ_URL", "").strip() or None
        for name, value in (("DATABASE_URL", url), ("DATABASE_READ_URL", read_url)):
            if value is not None:
                try:  # a postgresql:// URL, and never a link-local or metadata address
                    check_setting_url(name, value, ("postgresql", "postgres"))
                except EgressError as exc:
                    raise ValueError(str(exc)) from None
        numbers = positive_numbers_from_env(cls, _ENV_NAMES, env)  # ValueError naming the variable
        return cls(url=url, read_url=read_url, **numbers)

    def redact(self, text: str) -> str:
        """`text` without the URLs' passwords: for an error message that may quote what it was given."""
        for url in (self.url, self.read_url):
            password = urlsplit(url).password if url else None
            if password:
                text = text.replace(password, "***")
        return text

    def describe(self, exc: BaseException) -> str:
        """An error for a log line or a breaker's reason: its type (a TimeoutError says nothing else), no password."""
        return self.redact(f"{type(exc).__name__}: {exc}")

    def connect_kwargs(self) -> dict[str, object]:
        return {
            "connect_timeout": max(1, round(self.connect_timeout)),  # libpq takes whole seconds
            "options": f"-c statement_timeout={int(self.statement_timeout * 1000)}",
            "application_name": "routeiq-gateway",
            "autocommit": True,
            "row_factory": dict_row,
        }


class Database:
    """Pools opened by `open()` (never at import); while the database is away callers get an error within
    `pool_timeout`, and the first call after it is back connects again."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self._write = self._pool(settings.url, "write")
        self._read = self._pool(settings.read_url, "read") if settings.read_url else self._write

    def _pool(self, url: str, name: str) -> AsyncConnectionPool[AsyncConnection[DictRow]]:
        s = self.settings
        return AsyncConnectionPool(
            url,
            min_size=s.pool_min,
            max_size=max(s.pool_max, s.pool_min),
            kwargs=s.connect_kwargs(),
            open=False,
            timeout=s.pool_timeout,
            # No background reconnect loop of the pool's own while the database is away: the key cache's next
            # refresh (every second while degraded) asks for a connection, and that grows the pool again.
            reconnect_timeout=0,
            name=f"routeiq-{name}",
            connection_class=AsyncConnection[DictRow],
        )

    async def open(self) -> None:
        await self._write.open(wait=False)
        if self._read is not self._write:
            await self._read.open(wait=False)

    async def close(self) -> None:
        await self._write.close(timeout=2)
        if self._read is not self._write:
            await self._read.close(timeout=2)

    @asynccontextmanager
    async def writer(self) -> AsyncIterator[AsyncConnection[DictRow]]:
        async with asyncio.timeout(self.settings.call_timeout), self._write.connection() as conn:
            yield conn

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncConnection[DictRow]]:
        async with asyncio.timeout(self.settings.call_timeout), self._read.connection() as conn:
            yield conn
