"""`AuditTrail.record(...)`: build one record and hand it to every sink. Never raises and never waits: an audit
sink that fails counts a drop and logs; the action it describes has happened either way.

Sinks: `SpoolSink` (append + fsync to the local spool, shipped to S3) always; others (a PostgreSQL table for
search) are added with `add_sink` and must not block the event loop (queue, then write in the background).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from routeiq_shared.config_schema import AuditSettings
from routeiq_shared.routing_records import encode

from routeiq_gateway.audit.metrics import AuditMetrics
from routeiq_gateway.audit.record import Actor, audit_record
from routeiq_gateway.records.spool import Spool

log = logging.getLogger("routeiq.gateway.audit")


class AuditSink(Protocol):
    def write(self, record: Mapping[str, Any]) -> str | None:
        """Keep the record; None when kept, else why not (a short reason for the dropped metric)."""
        ...


class SpoolSink:
    def __init__(self, spool: Spool, settings: Callable[[], AuditSettings]) -> None:
        self.spool = spool
        self.settings = settings

    def write(self, record: Mapping[str, Any]) -> str | None:
        s = self.settings()
        self.spool.max_bytes = s.spool_max_bytes  # reloadable
        dropped = self.spool.append(encode(dict(record)))
        if dropped is None and self.spool.pending >= s.batch_records:
            self.spool.seal()
        return dropped


class AuditTrail:
    def __init__(self, settings: Callable[[], AuditSettings], metrics: AuditMetrics, sinks: list[AuditSink]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sinks = list(sinks)

    def add_sink(self, sink: AuditSink) -> None:
        self.sinks.append(sink)

    def record(
        self,
        actor: Actor,
        action: str,
        target: str,
        *,
        result: str,
        before_digest: str | None = None,
        after_digest: str | None = None,
        trace_id: str | None = None,
    ) -> dict[str, Any] | None:
        if not self.settings().enabled:
            return None
        rec = audit_record(
            actor,
            action,
            target,
            result=result,
            before_digest=before_digest,
            after_digest=after_digest,
            trace_id=trace_id,
        )
        kept = False
        for sink in self.sinks:
            try:
                dropped = sink.write(rec)
            except Exception as exc:  # a sink's bug must not undo or fail the admin action
                dropped = "sink_error"
                log.exception("Audit sink failed", extra={"event": "audit_sink_error", "reason": str(exc)})
            if dropped is not None:
                self.metrics.dropped.labels(dropped).inc()
                log.error(
                    "Audit record not kept by a sink",
                    extra={"event": "audit_dropped", "reason": dropped, "id": rec["id"], "action": action},
                )
            else:
                kept = True
        if kept:
            self.metrics.written.labels(action).inc()
        return rec


def pending_records(spool: Spool) -> int:
    """Records in the spool (sealed segments and the open one): for the pending gauge, read at scrape time."""
    total = spool.pending
    for segment in spool.ready():
        try:
            total += segment.path.read_bytes().count(b"\n")
        except OSError:
            continue  # shipped meanwhile
    return total
