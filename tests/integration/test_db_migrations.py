"""`routeiq-gateway db upgrade` against a real PostgreSQL: versions recorded, idempotent, two at once do not race,
and a database with a newer schema is refused, never downgraded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
from harness.processes import child_env

SCRIPT = Path(sys.executable).with_name("routeiq-gateway")


def db(args: list[str], url: str) -> subprocess.CompletedProcess[str]:
    env = child_env({"DATABASE_URL": url})
    return subprocess.run([str(SCRIPT), "db", *args], env=env, capture_output=True, text=True, timeout=60)


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def test_upgrade_applies_in_order_and_records_each(fresh_database: str) -> None:
    done = db(["upgrade"], fresh_database)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["applied"][0] == "0001_initial" and result["version"] >= 1
    assert {"teams", "keys", "spend", "schema_migrations"} <= tables(fresh_database)
    with psycopg.connect(fresh_database) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == list(range(1, result["version"] + 1))
    again = db(["upgrade"], fresh_database)
    assert again.returncode == 0 and json.loads(again.stdout)["applied"] == []
    status = json.loads(db(["status"], fresh_database).stdout)
    assert status["version"] == status["required"] == result["version"]


def test_two_upgrades_at_once_apply_each_migration_once(fresh_database: str) -> None:
    env = child_env({"DATABASE_URL": fresh_database})
    procs = [
        subprocess.Popen(
            [str(SCRIPT), "db", "upgrade"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    applied = [json.loads(out)["applied"] for out, _ in outs]
    assert sorted(len(a) for a in applied)[:-1] == [0, 0]  # one did the work, the others found nothing to do
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations WHERE version = 1").fetchone() == (1,)


def test_a_newer_schema_is_refused_and_left_alone(fresh_database: str) -> None:
    assert db(["upgrade"], fresh_database).returncode == 0
    with psycopg.connect(fresh_database) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'from_the_future')")
        conn.execute("CREATE TABLE future_table (x int)")
    refused = db(["upgrade"], fresh_database)
    assert refused.returncode == 1
    assert "9999" in refused.stderr and "never downgraded" in refused.stderr
    assert "future_table" in tables(fresh_database)  # nothing dropped
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (9999,)


def test_without_database_url_it_says_so() -> None:
    done = subprocess.run([str(SCRIPT), "db", "upgrade"], env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "DATABASE_URL" in done.stderr
