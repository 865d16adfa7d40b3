"""Budget resets on a real PostgreSQL: several replicas running the reset at once reset each row once, to the next
period boundary after now; rows not due are left alone."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
from routeiq_gateway.admission.budget import reset_due
from routeiq_gateway.tenancy.database import Database, DatabaseSettings
from test_virtual_keys import upgraded


def test_concurrent_resets_reset_each_row_once(fresh_database: str) -> None:
    url = upgraded(fresh_database)
    now = datetime.now(UTC)
    due_at = now - timedelta(hours=2, minutes=30)  # two and a half periods of 1h ago
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO teams (id, budget, budget_period, budget_reset_at, spend) VALUES "
            "('due', 10, '1h', %s, 12.5), ('later', 10, '1h', %s, 3.0)",
            (due_at, now + timedelta(minutes=10)),
        )
        conn.execute(
            "INSERT INTO keys (id, key_hash, key_prefix, team_id, budget, budget_period, budget_reset_at, spend) "
            "VALUES ('k1', '\\x01', 'sk-riq-x', 'due', 1, '30m', %s, 2.0)",
            (now - timedelta(minutes=1),),
        )

    async def replicas(n: int) -> list[int]:
        dbs = [Database(DatabaseSettings(url=url)) for _ in range(n)]
        for db in dbs:
            await db.open()
        try:
            return list(await asyncio.gather(*(reset_due(db) for db in dbs)))
        finally:
            for db in dbs:
                await db.close()

    counts = asyncio.run(replicas(4))
    assert sum(counts) == 2  # the due team and the due key, once each, whichever replica did it
    with psycopg.connect(url) as conn:
        teams = {r[0]: r[1:] for r in conn.execute("SELECT id, spend, budget_reset_at FROM teams").fetchall()}
        key = conn.execute("SELECT spend, budget_reset_at FROM keys").fetchone()
    spend, reset_at = teams["due"]
    assert float(spend) == 0.0 and reset_at == due_at + timedelta(hours=3)  # the next boundary, no drift
    assert float(teams["later"][0]) == 3.0  # not due: untouched
    assert key is not None and key[0] == 0.0 and now < key[1] <= now + timedelta(minutes=30)
    assert asyncio.run(replicas(1)) == [0]  # nothing due any more
