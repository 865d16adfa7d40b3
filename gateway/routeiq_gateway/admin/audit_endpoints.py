"""`GET /v1/admin/audit?actor=&action=&target=&since=&until=&limit=&cursor=` on the admin port (viewer): audit
records from PostgreSQL's search table, newest first. `since`/`until` are RFC 3339 times or dates (UTC);
`limit` 1..1000 (100); the answer's `next_cursor`, passed back as `cursor`, gives the next page (null: no more).
Records reach the table in batches (audit/table_sink.py), so the newest may take a moment to appear."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

import orjson

from routeiq_gateway.admin.tenancy_endpoints import db_call, query_param
from routeiq_gateway.audit.table import AuditQuery, search
from routeiq_gateway.http.asgi import Receive, Scope, Send, send_response
from routeiq_gateway.http.errors import GatewayError, bad_request
from routeiq_gateway.tenancy.database import Database

MAX_LIMIT = 1000
_OFF = GatewayError(
    503,
    "Audit search needs PostgreSQL: set DATABASE_URL (the records are in the spool and S3).",
    code="audit_search_off",
)


class AuditEndpoints:
    def __init__(self, db: Database | None) -> None:
        self.db = db

    async def search(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.db is None:
            raise _OFF
        q = parse_query(scope)
        records = await db_call(search(self.db, q))
        last = records[-1] if len(records) == q.limit else None
        body = {"data": records, "next_cursor": encode_cursor(last) if last else None}
        await send_response(send, 200, orjson.dumps(body))


def parse_query(scope: Scope) -> AuditQuery:
    raw_limit = query_param(scope, "limit", required=False)
    try:
        limit = 100 if raw_limit is None else int(raw_limit)
    except ValueError:
        raise bad_request("limit must be a whole number.", "limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_request(f"limit must be between 1 and {MAX_LIMIT}.", "limit")
    cursor = query_param(scope, "cursor", required=False)
    q = AuditQuery(
        actor=query_param(scope, "actor", required=False),
        action=query_param(scope, "action", required=False),
        target=query_param(scope, "target", required=False),
        since=_time(scope, "since"),
        until=_time(scope, "until"),
        limit=limit,
        after=decode_cursor(cursor) if cursor is not None else None,
    )
    if q.since is not None and q.until is not None and q.since >= q.until:
        raise bad_request("since must be before until.", "since")
    return q


def _time(scope: Scope, name: str) -> datetime | None:
    raw = query_param(scope, name, required=False)
    if raw is None:
        return None
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise bad_request(f"{name} must be an RFC 3339 time or a date (YYYY-MM-DD).", name) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def encode_cursor(record: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([record["at"], record["id"]])).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, ident = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(at, str) or not isinstance(ident, str):
            raise ValueError(cursor)
        return datetime.fromisoformat(at), ident
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise bad_request("cursor is not one this API gave.", "cursor") from None
