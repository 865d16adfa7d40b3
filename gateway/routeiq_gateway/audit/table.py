"""The audit records' PostgreSQL table (`audit_log`, migrations/0002_audit.sql), for search: insert a batch, and
find records by actor, action, target and time, newest first, paged by (at, id) so a page never repeats or skips
a record even while new ones arrive."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from routeiq_gateway.tenancy.database import Database

_COLUMNS = (
    "id, schema_version, at, actor_subject, actor_how, action, target, before_digest, after_digest, result, trace_id"
)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    actor: str | None = None  # actor.subject, exact
    action: str | None = None  # exact
    target: str | None = None  # exact
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    limit: int = 100
    after: tuple[datetime, str] | None = None  # the (at, id) of the previous page's last record


def _row(record: Mapping[str, Any]) -> tuple[Any, ...]:
    actor = record["actor"]
    return (
        record["id"],
        record["schema_version"],
        datetime.fromisoformat(record["at"]),
        actor["subject"],
        actor["how"],
        record["action"],
        record["target"],
        record.get("before_digest"),
        record.get("after_digest"),
        record["result"],
        record.get("trace_id"),
    )


async def insert_records(db: Database, records: Sequence[Mapping[str, Any]]) -> None:
    """One transaction; a record already there (same id: a retried batch) is kept once."""
    async with db.writer() as conn, conn.transaction(), conn.cursor() as cur:
        await cur.executemany(
            f"INSERT INTO audit_log ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (id) DO NOTHING",
            [_row(r) for r in records],
        )


def stamp(at: datetime) -> str:
    """The record's own `at` format (audit/record.py): RFC 3339 UTC, milliseconds."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def as_record(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": row["schema_version"],
        "id": row["id"],
        "at": stamp(row["at"]),
        "actor": {"subject": row["actor_subject"], "how": row["actor_how"]},
        "action": row["action"],
        "target": row["target"],
        "before_digest": row["before_digest"],
        "after_digest": row["after_digest"],
        "result": row["result"],
        "trace_id": row["trace_id"],
    }


async def search(db: Database, q: AuditQuery) -> list[dict[str, Any]]:
    """Up to `q.limit` records, newest first. Column names are fixed here, only values come from the caller."""
    where: list[str] = ["TRUE"]
    args: list[Any] = []
    for column, value in (("actor_subject", q.actor), ("action", q.action), ("target", q.target)):
        if value is not None:
            where.append(f"{column} = %s")
            args.append(value)
    if q.since is not None:
        where.append("at >= %s")
        args.append(q.since)
    if q.until is not None:
        where.append("at < %s")
        args.append(q.until)
    if q.after is not None:
        where.append("(at, id) < (%s, %s)")
        args.extend(q.after)
    query = f"SELECT {_COLUMNS} FROM audit_log WHERE {' AND '.join(where)} ORDER BY at DESC, id DESC LIMIT %s"
    args.append(q.limit)
    async with db.reader() as conn:
        rows = await (await conn.execute(query.encode(), args)).fetchall()
    return [as_record(r) for r in rows]
