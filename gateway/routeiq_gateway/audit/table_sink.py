"""The audit trail's PostgreSQL sink (audit/table.py's `audit_log`, for search). `write` only queues, so an admin
request never waits on the database; `run` writes the queue in batches every `routeiq.audit.table_flush_seconds`
(sooner when a batch is full). PostgreSQL down: the queue is kept and retried with backoff, and not tried at all
while PostgreSQL's circuit breaker (shared with the key cache) is open; past `max_pending`
new records are refused here — counted as dropped (`table_queue_full`) — while the spool and S3 still have them.
Records still queued at exit are counted too (`table_unwritten`)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from routeiq_shared.breaker import CircuitBreaker
from routeiq_shared.config_schema import AuditSettings

from routeiq_gateway.audit.metrics import AuditMetrics
from routeiq_gateway.audit.table import insert_records
from routeiq_gateway.tenancy.database import Database
from routeiq_gateway.tenancy.key_cache import DB_ERRORS

log = logging.getLogger("routeiq.gateway.audit")

BATCH = 500
MAX_BACKOFF = 30.0


class TableSink:
    def __init__(
        self,
        db: Database,
        settings: Callable[[], AuditSettings],
        metrics: AuditMetrics,
        max_pending: int = 10_000,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.db = db
        self.breaker = breaker
        self.settings = settings
        self.metrics = metrics
        self.max_pending = max_pending
        self._queue: deque[Mapping[str, Any]] = deque()
        self._full_batch = asyncio.Event()
        self._lock = asyncio.Lock()  # one writer at a time: the periodic one and the drain's
        metrics.table_pending.set_function(lambda: len(self._queue))

    def write(self, record: Mapping[str, Any]) -> str | None:
        if len(self._queue) >= self.max_pending:
            return "table_queue_full"
        self._queue.append(record)
        if len(self._queue) >= BATCH:
            self._full_batch.set()
        return None

    async def flush(self, force: bool = False) -> bool:
        """Write everything queued; False (the queue kept) when PostgreSQL refuses or its breaker is open (unless
        `force`, at exit)."""
        async with self._lock:
            if self._queue and not force and self.breaker is not None and not self.breaker.allow():
                return False
            while self._queue:
                batch = [self._queue[i] for i in range(min(BATCH, len(self._queue)))]
                try:
                    await insert_records(self.db, batch)
                except DB_ERRORS as exc:
                    if self.breaker is not None:
                        self.breaker.failure(self.db.settings.describe(exc))
                    self.metrics.table_write_failures.inc()
                    log.warning(
                        "Audit records not written to PostgreSQL; kept for the next attempt",
                        extra={
                            "event": "audit_table_write_failed",
                            "records": len(self._queue),
                            "reason": self.db.settings.describe(exc),
                        },
                    )
                    return False
                if self.breaker is not None:
                    self.breaker.success()
                for _ in batch:
                    self._queue.popleft()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.0
        while not stop.is_set():
            wait = backoff or self.settings().table_flush_seconds
            stopping = asyncio.ensure_future(stop.wait())
            full = asyncio.ensure_future(self._full_batch.wait())
            await asyncio.wait({stopping, full}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for task in (stopping, full):
                task.cancel()
            self._full_batch.clear()
            ok = await self.flush()
            backoff = 0.0 if ok else min(MAX_BACKOFF, max(1.0, backoff * 2))  # PostgreSQL down: retry less often

    async def close(self, grace: float) -> None:
        """At exit: one last write within `grace` seconds; what it cannot write is counted as dropped."""
        try:
            async with asyncio.timeout(grace):
                await self.flush(force=True)
        except TimeoutError:
            pass
        if self._queue:
            self.metrics.dropped.labels("table_unwritten").inc(len(self._queue))
            log.error(
                "Audit records not written to PostgreSQL at exit (the spool has them)",
                extra={"event": "audit_dropped", "reason": "table_unwritten", "records": len(self._queue)},
            )
