"""Schema migrations: plain SQL files in `migrations/`, applied in order, each recorded in `schema_migrations`.

`upgrade()` runs every missing migration in one transaction under an advisory lock, so two replicas running
`routeiq-gateway db upgrade` at once do not race (the second waits, then finds nothing to do). A database whose
schema is newer than this code knows is refused, never downgraded. `check()` is what the gateway runs at start:
it refuses to serve on a schema older than the one it was built for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from psycopg import AsyncConnection

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant shared by every replica: pg_advisory_xact_lock's key for "migrating RouteIQ's schema".
_LOCK_KEY = 0x526F757465495121
_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


class SchemaError(Exception):
    """The database's schema is not the one this code needs; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> tuple[Migration, ...]:
    found = []
    for entry in resources.files("routeiq_gateway.tenancy.migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return tuple(found)


def required_version() -> int:
    return migrations()[-1].version


async def current_version(conn: AsyncConnection[Any]) -> int:
    """0 for a database never migrated."""
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL AS present")
    row = await cur.fetchone()
    if not row or not _first(row):
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) AS version FROM schema_migrations")
    row = await cur.fetchone()
    return int(_first(row)) if row else 0


async def upgrade(conn: AsyncConnection[Any]) -> list[Migration]:
    """Apply what is missing; return what was applied. Raises SchemaError on a newer schema (nothing changed)."""
    known = migrations()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await conn.execute(_CREATE_TABLE)
        have = await current_version(conn)
        if have > known[-1].version:
            raise SchemaError(
                f"the database schema is at version {have}, newer than this gateway knows "
                f"({known[-1].version}): upgrade the gateway; a schema is never downgraded"
            )
        applied = [m for m in known if m.version > have]
        for m in applied:
            await conn.execute(m.sql.encode())  # bytes: a literal script, no parameters
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (m.version, m.name))
    return applied


async def check(conn: AsyncConnection[Any]) -> int:
    """The schema version, when it is at least the one this code needs; else SchemaError saying what to do.
    A newer schema is served (migrations only add, so a rolled-back replica keeps working); the caller logs it."""
    have = await current_version(conn)
    need = required_version()
    if have < need:
        raise SchemaError(
            f"the database schema is at version {have}, this gateway needs {need}: run `routeiq-gateway db upgrade`"
        )
    return have


def _first(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]
