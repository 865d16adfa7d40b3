"""Ships sealed spool segments to the object store, oldest first; deletes each only once the store has it. While
the store is down the spool keeps everything (up to its bound) and the shipper retries with capped, jittered
backoff; at drain it seals the open segment and tries once more, within the time it is given.

What is shipped is a `ShipTarget`: routing records (`<store>/records/YYYY/MM/DD/…jsonl`, RecordsTarget below) and
the audit trail (audit/shipping.py), which names objects by content so a replay after a crash is no duplicate."""

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
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter, Gauge
from routeiq_shared.breaker import CircuitBreaker
from routeiq_shared.objectstore import ObjectStore, PutOptions, StoreError, open_store
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


class ShipSettings(Protocol):
    """The reloadable settings a shipper reads (RecordsSettings, AuditSettings)."""

    @property
    def store(self) -> str | None: ...
    @property
    def batch_records(self) -> int: ...
    @property
    def flush_seconds(self) -> float: ...


class ShipTarget(Protocol):
    what: str  # for log lines: "Routing records", "Audit records"
    event: str  # log events are f"{event}_shipped", f"{event}_ship_failed", f"{event}_drain"
    # True when key() is a function of the content: an object already there is this segment shipped before a
    # crash cut the spool's delete short, so it is not written again (a versioned bucket would keep a copy).
    idempotent: bool

    def key(self, segment: Segment, data: bytes) -> str: ...

    def options(self) -> PutOptions | None: ...


@dataclass(frozen=True, slots=True)
class ShipCounters:
    shipped: Counter  # objects
    failures: Counter  # by reason
    last_shipped: Gauge
    shipped_records: Counter | None = None  # lines, where someone counts records


class RecordsTarget:
    """Routing records: named by writer and sequence (`<store>/records/YYYY/MM/DD/<writer>-<time>-<seq>.jsonl`)."""

    what = "Routing records"
    event = "records"
    idempotent = False

    def __init__(self) -> None:
        self.writer = writer_name()
        self._seq = 0

    def key(self, segment: Segment, data: bytes) -> str:
        self._seq += 1
        return record_key(segment.first_time, self.writer, self._seq)

    def options(self) -> PutOptions | None:
        return None


class Shipper:
    def __init__(
        self,
        spool: Spool,
        metrics: GatewayMetrics,
        settings: Callable[[], ShipSettings],
        store_factory: Callable[[str], ObjectStore] = open_store,
        *,
        target: ShipTarget | None = None,
        counters: ShipCounters | None = None,
        breaker: CircuitBreaker | None = None,  # the process's S3 breaker, shared by the records and audit shippers
    ) -> None:
        self.spool = spool
        self.breaker = breaker
        self.settings = settings
        self.target: ShipTarget = target or RecordsTarget()
        self.counters = counters or ShipCounters(
            metrics.records_shipped, metrics.records_ship_failures, metrics.records_last_shipped
        )
        self._store_factory = store_factory
        self._store: ObjectStore | None = None
        self._store_uri: str | None = None
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
            await asyncio.wait_for(self.ship_ready(store, force=True), seconds)
        except TimeoutError:
            log.warning(
                f"{self.target.what} left in the spool at shutdown",
                extra={"event": f"{self.target.event}_drain", "segments": len(self.spool.ready())},
            )

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def ship_ready(self, uri: str, force: bool = False) -> int:
        """Ship every sealed segment, oldest first; stops at the first failure (and backs off). Returns how many.
        While the S3 breaker is open nothing is tried (the spool keeps it all), unless `force` (at drain)."""
        segments = self.spool.ready()
        if not segments or (not force and self.breaker is not None and not self.breaker.allow()):
            return 0
        store = await self._store_for(uri)
        shipped = 0
        for segment in segments:
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
        key = self.target.key(segment, data)
        options = self.target.options()
        replayed = False
        try:
            if self.target.idempotent and await store.exists(key):
                replayed = True
            elif options is None:
                await store.put(key, data, metadata={"sha256": hashlib.sha256(data).hexdigest()})
            else:
                await store.put(key, data, metadata={"sha256": hashlib.sha256(data).hexdigest()}, options=options)
        except StoreError as exc:
            if self.breaker is not None:
                self.breaker.failure(f"{exc.reason}: {exc}")
            self._failed(exc.reason, segment, str(exc))
            return False
        if self.breaker is not None:
            self.breaker.success()
        self.spool.shipped(segment)
        c = self.counters
        c.shipped.inc()
        if c.shipped_records is not None:
            c.shipped_records.inc(data.count(b"\n"))
        c.last_shipped.set(time.time())
        log.info(
            f"{self.target.what} shipped",
            extra={"event": f"{self.target.event}_shipped", "key": key, "bytes": len(data), "replayed": replayed},
        )
        return True

    def _failed(self, reason: str, segment: Segment, detail: str) -> None:
        self.counters.failures.labels(reason).inc()
        self._backoff = min(BACKOFF_MAX, max(BACKOFF_FIRST, self._backoff * 2))
        delay = self._backoff * (0.5 + self._rng.random() / 2)
        self._retry_at = time.monotonic() + delay
        log.warning(
            f"{self.target.what} not shipped; kept in the spool",
            extra={
                "event": f"{self.target.event}_ship_failed",
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
