"""Ships sealed spool segments to `<store>/records/YYYY/MM/DD/…jsonl`, oldest first; deletes each only once the
store has it. While the store is down the spool keeps everything (up to its bound) and the shipper retries with
capped, jittered backoff; at drain it seals the open segment and tries once more, within the time it is given."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable

from routeiq_shared.config_schema import RecordsSettings
from routeiq_shared.objectstore import ObjectStore, StoreError, open_store
from routeiq_shared.routing_records import record_key

from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.records.spool import Segment, Spool

log = logging.getLogger("routeiq.gateway")

TICK_SECONDS = 1.0
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0


def writer_name() -> str:
    """Unique per process across the fleet: the pod's name (hostname) and a random token (a restarted container
    keeps its hostname and often its pid)."""
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())[:63] or "gateway"
    return f"{host}-{os.urandom(3).hex()}"


class Shipper:
    def __init__(
        self,
        spool: Spool,
        metrics: GatewayMetrics,
        settings: Callable[[], RecordsSettings],
        store_factory: Callable[[str], ObjectStore] = open_store,
    ) -> None:
        self.spool = spool
        self.metrics = metrics
        self.settings = settings
        self.writer = writer_name()
        self._store_factory = store_factory
        self._store: ObjectStore | None = None
        self._store_uri: str | None = None
        self._seq = 0
        self._backoff = 0.0
        self._retry_at = 0.0
        self._rng = random.Random()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_SECONDS)

    async def tick(self) -> None:
        s = self.settings()
        if self.spool.due(s.batch_records, s.flush_seconds):
            self.spool.seal()
        if s.store is not None and time.monotonic() >= self._retry_at:
            await self.ship_ready(s.store)

    async def drain(self, seconds: float) -> None:
        """At SIGTERM: seal what is open and ship what the store takes within `seconds`; the rest stays spooled
        on the run volume for the next start (a pod that is gone for good loses only what its volume held)."""
        self.spool.seal()
        store = self.settings().store
        if store is None:
            return
        try:
            await asyncio.wait_for(self.ship_ready(store), seconds)
        except TimeoutError:
            log.warning(
                "Routing records left in the spool at shutdown",
                extra={"event": "records_drain", "segments": len(self.spool.ready())},
            )

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def ship_ready(self, uri: str) -> int:
        """Ship every sealed segment, oldest first; stops at the first failure (and backs off). Returns how many."""
        store = await self._store_for(uri)
        shipped = 0
        for segment in self.spool.ready():
            if not await self._ship(store, segment):
                return shipped
            shipped += 1
        self._backoff = 0.0
        return shipped

    async def _ship(self, store: ObjectStore, segment: Segment) -> bool:
        try:
            data = await asyncio.to_thread(segment.path.read_bytes)
        except OSError as exc:
            self._failed("read_error", segment, str(exc))
            return False
        self._seq += 1
        key = record_key(segment.first_time, self.writer, self._seq)
        try:
            await store.put(key, data, metadata={"sha256": hashlib.sha256(data).hexdigest()})
        except StoreError as exc:
            self._failed(exc.reason, segment, str(exc))
            return False
        self.spool.shipped(segment)
        self.metrics.records_shipped.inc()
        self.metrics.records_last_shipped.set(time.time())
        log.info("Routing records shipped", extra={"event": "records_shipped", "key": key, "bytes": len(data)})
        return True

    def _failed(self, reason: str, segment: Segment, detail: str) -> None:
        self.metrics.records_ship_failures.labels(reason).inc()
        self._backoff = min(BACKOFF_MAX, max(BACKOFF_FIRST, self._backoff * 2))
        delay = self._backoff * (0.5 + self._rng.random() / 2)
        self._retry_at = time.monotonic() + delay
        log.warning(
            "Routing records not shipped; kept in the spool",
            extra={
                "event": "records_ship_failed",
                "reason": reason,
                "detail": detail,
                "segment": segment.path.name,
                "retry_in_s": round(delay, 2),
            },
        )

    async def _store_for(self, uri: str) -> ObjectStore:
        if self._store is None or uri != self._store_uri:  # a reload may point records elsewhere
            await self.close()
            self._store = self._store_factory(uri)
            self._store_uri = uri
        return self._store
