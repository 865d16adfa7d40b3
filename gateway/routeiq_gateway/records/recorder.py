"""Writes routing records into the spool: the one place the request path hands a record over."""

from __future__ import annotations

from typing import Any

from routeiq_shared.config_schema import RecordsSettings
from routeiq_shared.routing_records import encode

from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.records.spool import Spool


class Recorder:
    def __init__(self, spool: Spool, metrics: GatewayMetrics) -> None:
        self.spool = spool
        self.metrics = metrics
        metrics.records_spool_bytes.set_function(lambda: spool.size)

    def write(self, rec: dict[str, Any], settings: RecordsSettings) -> bool:
        """Keep one record; False (and counted) when the spool could not keep it. Never raises: a record must
        not fail the request it describes."""
        self.spool.max_bytes = settings.spool_max_bytes  # reloadable
        dropped = self.spool.append(encode(rec))
        if dropped is not None:
            self.metrics.records_dropped.labels(dropped).inc()
            return False
        self.metrics.records.labels(rec["type"]).inc()
        if self.spool.pending >= settings.batch_records:
            self.spool.seal()
        return True
