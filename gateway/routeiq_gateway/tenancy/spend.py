"""Spend per key, team, model and day: usage times llm_candidates.json prices (per million tokens), added up in memory
on the hot path and written to PostgreSQL in one transaction every `routeiq.keys.spend_flush_seconds`.

A failed write keeps the batch and adds it back, so nothing is lost while the database is away; while PostgreSQL's
circuit breaker is open (key_cache.py) no write is tried before its probe; the drain flushes what is left before
exit (server.py), whatever the breaker says."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from routeiq_shared.breaker import CircuitBreaker
from routeiq_shared.config_schema import KeysSettings

from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.tenancy import store
from routeiq_gateway.tenancy.database import Database
from routeiq_gateway.tenancy.key_cache import DB_ERRORS
from routeiq_gateway.tenancy.records import VirtualKey

log = logging.getLogger("routeiq.gateway")

_Slot = tuple[date, str, str, str]  # day, key id, team id, model
_TOKEN_NAMES = (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens"))


def tokens_of(usage: dict[str, Any] | None) -> tuple[int, int]:
    """(prompt, completion) tokens, whichever protocol's names the usage has (Responses/Messages: input/output)."""
    if not usage:
        return 0, 0
    out = []
    for names in _TOKEN_NAMES:
        value = next((usage[n] for n in names if isinstance(usage.get(n), int)), 0)
        out.append(max(0, value))
    return out[0], out[1]


class SpendLedger:
    def __init__(
        self,
        db: Database,
        metrics: GatewayMetrics,
        settings: Callable[[], KeysSettings],
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.db = db
        self.breaker = breaker
        self.metrics = metrics
        self.settings = settings
        self._pending: dict[_Slot, list[float]] = {}  # slot → [requests, prompt, completion, cost]
        self._lock = asyncio.Lock()  # one flush at a time (the periodic one and the drain's)

    def add(self, key: VirtualKey, model: str, usage: dict[str, Any] | None, price: tuple[float, float] | None) -> None:
        prompt, completion = tokens_of(usage)
        cost = (prompt * price[0] + completion * price[1]) / 1e6 if price is not None else 0.0
        slot = (datetime.now(UTC).date(), key.id, key.team_id or "", model)
        acc = self._pending.get(slot)
        if acc is None:
            self._pending[slot] = [1, prompt, completion, cost]
        else:
            acc[0] += 1
            acc[1] += prompt
            acc[2] += completion
            acc[3] += cost

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self, force: bool = False) -> bool:
        """Write what is pending; `force` (at exit) tries even while the breaker is open."""
        async with self._lock:
            if not self._pending:
                return True
            if not force and self.breaker is not None and not self.breaker.allow():
                return False
            batch, self._pending = self._pending, {}
            rows = [
                store.SpendRow(day, key_id, team_id, model, int(a[0]), int(a[1]), int(a[2]), a[3])
                for (day, key_id, team_id, model), a in batch.items()
            ]
            try:
                await store.add_spend(self.db, rows)
            except DB_ERRORS as exc:
                if self.breaker is not None:
                    self.breaker.failure(self.db.settings.describe(exc))
                for slot, acc in batch.items():  # back in, added to what came meanwhile
                    mine = self._pending.setdefault(slot, [0, 0, 0, 0.0])
                    for i, v in enumerate(acc):
                        mine[i] += v
                self.metrics.spend_flushes.labels("error").inc()
                log.warning(
                    "Spend not written; kept in memory for the next flush",
                    extra={
                        "event": "spend_flush_failed",
                        "rows": len(rows),
                        "reason": self.db.settings.describe(exc),
                    },
                )
                return False
            if self.breaker is not None:
                self.breaker.success()
            self.metrics.spend_flushes.labels("ok").inc()
            return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.settings().spend_flush_seconds)
            except TimeoutError:
                await self.flush()
