"""Audit trail metrics, in the gateway's registry: records written, shipped, pending in the spool, dropped."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from routeiq_gateway.records.shipper import ShipCounters


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.written = Counter(
            "routeiq_audit_records", "Audit records kept in the spool, by action", ["action"], registry=registry
        )
        self.dropped = Counter(
            "routeiq_audit_records_dropped",
            "Audit records not kept by a sink, by reason (spool_full, write_error, table_queue_full, table_unwritten)",
            ["reason"],
            registry=registry,
        )
        self.pending = Gauge(
            "routeiq_audit_records_pending", "Audit records in the local spool, not shipped yet", registry=registry
        )
        self.shipped_records = Counter(
            "routeiq_audit_records_shipped", "Audit records shipped to the audit store", registry=registry
        )
        self.shipped_objects = Counter(
            "routeiq_audit_shipped_objects", "Audit objects written to the audit store", registry=registry
        )
        self.ship_failures = Counter(
            "routeiq_audit_ship_failures",
            "Failed attempts to ship audit records, by reason",
            ["reason"],
            registry=registry,
        )
        self.last_shipped = Gauge(
            "routeiq_audit_last_shipped_timestamp_seconds", "When audit records were last shipped", registry=registry
        )

        self.table_pending = Gauge(
            "routeiq_audit_table_pending",
            "Audit records queued for the PostgreSQL search table, not written yet",
            registry=registry,
        )
        self.table_write_failures = Counter(
            "routeiq_audit_table_write_failures",
            "Failed batch writes of audit records to the PostgreSQL search table (the batch is kept and retried)",
            registry=registry,
        )

    def ship_counters(self) -> ShipCounters:
        return ShipCounters(self.shipped_objects, self.ship_failures, self.last_shipped, self.shipped_records)
