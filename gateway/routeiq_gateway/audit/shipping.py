"""Where audit segments go: `<store>/audit/YYYY/MM/DD/audit-<time>-<sha256 of the content>.jsonl`.

The name is a function of the segment's bytes (sealed segments never change), so a segment shipped just before a
crash, and shipped again at the next start, has the same name; the shipper sees it there and writes nothing
(records/shipper.py). Objects are encrypted server-side and, when `retention_days` is set, locked.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from routeiq_shared.config_schema import AuditSettings
from routeiq_shared.objectstore import PutOptions

from routeiq_gateway.records.spool import Segment

AUDIT_PREFIX = "audit/"


def audit_key(first_time: float, data: bytes) -> str:
    day = time.strftime("%Y/%m/%d", time.gmtime(first_time))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(first_time))
    return f"{AUDIT_PREFIX}{day}/audit-{stamp}-{hashlib.sha256(data).hexdigest()[:24]}.jsonl"


class AuditTarget:
    what = "Audit records"
    event = "audit"
    idempotent = True

    def __init__(self, settings: Callable[[], AuditSettings]) -> None:
        self.settings = settings

    def key(self, segment: Segment, data: bytes) -> str:
        return audit_key(segment.first_time, data)

    def options(self) -> PutOptions:
        s = self.settings()
        retain_until = None
        if s.retention_days is not None:
            retain_until = datetime.now(UTC) + timedelta(days=s.retention_days)
        return PutOptions(
            sse=s.sse,
            kms_key_id=s.kms_key_id,
            lock_mode=s.retention_mode if retain_until is not None else None,
            retain_until=retain_until,
        )
