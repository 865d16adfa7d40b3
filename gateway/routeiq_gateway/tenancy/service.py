"""Virtual keys' moving parts together: the pools, the key cache, the spend ledger, the invalidation channel.

Start-up (`open`) checks the schema and loads every key before the gateway binds: a gateway with DATABASE_URL
refuses to start on a schema older than it needs, or when PostgreSQL cannot be reached at all (a restarted pod
has no cache to serve from; running pods keep serving theirs)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from routeiq_shared.breaker import BreakerPolicy
from routeiq_shared.config_schema import BreakersSettings, KeysSettings, LimitsSettings
from routeiq_shared.redis_settings import RedisSettings

from routeiq_gateway.admission.budget import run_resets
from routeiq_gateway.admission.limits import Limiter
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.tenancy import migrate
from routeiq_gateway.tenancy.database import Database, DatabaseSettings
from routeiq_gateway.tenancy.invalidation import Invalidation
from routeiq_gateway.tenancy.key_cache import DB_ERRORS, KeyCache
from routeiq_gateway.tenancy.spend import SpendLedger

log = logging.getLogger("routeiq.gateway")


class StartupError(Exception):
    """Why the gateway cannot start with virtual keys; the message is for the operator."""


class Tenancy:
    def __init__(
        self,
        settings: DatabaseSettings,
        keys_settings: Callable[[], KeysSettings],
        metrics: GatewayMetrics,
        redis: RedisSettings | None,
        limits_settings: Callable[[], LimitsSettings] = LimitsSettings,
        breakers: Callable[[], Mapping[str, BreakerPolicy]] | None = None,  # routeiq.breakers, by dependency
    ) -> None:
        self.db = Database(settings)
        policies = breakers or BreakersSettings().policies
        self.cache = KeyCache(self.db, keys_settings, metrics, breaker_policy=lambda: policies()["postgres"])
        self.spend = SpendLedger(self.db, metrics, keys_settings, self.cache.breaker)
        self.invalidation = Invalidation(redis, self.cache.invalidate) if redis else None
        # rpm/tpm/parallel and budgets per key and team
        self.limits = Limiter(redis, limits_settings, metrics, lambda: policies()["redis"])
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self, wait_seconds: float = 10.0) -> None:
        await self.db.open()
        try:
            async with asyncio.timeout(wait_seconds):
                async with self.db.writer() as conn:
                    version = await migrate.check(conn)
        except migrate.SchemaError as exc:
            raise StartupError(str(exc)) from None
        except (*DB_ERRORS, TimeoutError) as exc:
            raise StartupError(f"PostgreSQL is unreachable: {self.db.settings.redact(str(exc))}") from None
        if version > migrate.required_version():
            log.warning(
                "Database schema is newer than this gateway knows; serving (migrations only add)",
                extra={"event": "schema_newer", "version": version, "required": migrate.required_version()},
            )
        if not await self.cache.refresh():
            raise StartupError("PostgreSQL is unreachable: virtual keys could not be loaded")
        log.info(
            "Virtual keys on",
            extra={
                "event": "virtual_keys",
                "enabled": True,
                "keys": self.cache.size,
                "schema_version": version,
                "invalidation": "redis" if self.invalidation else "interval only (no REDIS_URL)",
                "redis": self.invalidation.settings.target if self.invalidation else None,
            },
        )

    def start(self, stop: asyncio.Event) -> None:
        self._tasks = [
            asyncio.create_task(self.cache.run(stop)),
            asyncio.create_task(self.spend.run(stop)),
            asyncio.create_task(self.limits.run(stop)),
            asyncio.create_task(run_resets(self.db, lambda: self.cache.settings().refresh_seconds, self.changed, stop)),
        ]
        if self.invalidation is not None:
            self._tasks.append(asyncio.create_task(self.invalidation.run(stop)))

    async def changed(self, key_ids: set[str] | None = None) -> None:
        """An admin wrote keys or teams on this replica: drop what is gone, reload here, tell the others."""
        if key_ids:
            self.cache.drop(key_ids)
        else:
            self.cache.invalidate()
        if self.invalidation is not None:
            await self.invalidation.announce("changed")

    async def close(self) -> None:
        """After the drain: the last spend is written (tried once more), then the pools close."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        if not await self.spend.flush(force=True):
            log.error(
                "Spend could not be written before exit",
                extra={"event": "spend_lost_at_exit", "rows": self.spend.pending},
            )
        if self.invalidation is not None:
            await self.invalidation.close()
        await self.limits.close()
        await self.db.close()
