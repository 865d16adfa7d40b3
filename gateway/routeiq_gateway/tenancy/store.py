"""SQL for teams, keys and spend. Reads go to the replica (`db.reader()`), writes to the primary, and so do the
reads that must see the latest write (a lookup of a new key, the reload after a change). Column names
come only from fields.py's fixed lists, never from input, so building SET clauses by name is safe."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from routeiq_gateway.http.errors import GatewayError, bad_request
from routeiq_gateway.tenancy.database import Database
from routeiq_gateway.tenancy.records import Team, VirtualKey, key_hash, new_secret

_KEY_COLUMNS = (
    "id, key_prefix, alias, team_id, models, rpm, tpm, max_parallel, budget, budget_period, budget_reset_at, "
    "spend, expires_at, revoked, metadata, created_at, updated_at"
)
_TEAM_COLUMNS = (
    "id, alias, models, rpm, tpm, max_parallel, budget, budget_period, budget_reset_at, spend, created_at, updated_at"
)


@dataclass(frozen=True, slots=True)
class SpendRow:
    day: date
    key_id: str
    team_id: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: float


async def load_all(db: Database, primary: bool = False) -> tuple[dict[str, Team], dict[bytes, VirtualKey]]:
    """Every team and key: what the cache holds. `primary`: after a change, when a lagging replica could still
    show what the change undid."""
    async with db.writer() if primary else db.reader() as conn:
        teams = {
            row["id"]: Team.of_row(row)
            for row in await (await conn.execute(f"SELECT {_TEAM_COLUMNS} FROM teams")).fetchall()
        }
        cur = await conn.execute(f"SELECT key_hash, {_KEY_COLUMNS} FROM keys")
        keys = {bytes(row["key_hash"]): VirtualKey.of_row(row, teams) for row in await cur.fetchall()}
    return teams, keys


async def find_key(db: Database, digest: bytes) -> VirtualKey | None:
    """One key by its hash, with its team: a key created on another replica since the last refresh. From the
    primary: a replica a moment behind would call a key made a moment ago unknown."""
    async with db.writer() as conn:
        cur = await conn.execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE key_hash = %s", (digest,))
        row = await cur.fetchone()
        if row is None:
            return None
        teams: dict[str, Team] = {}
        if row["team_id"]:
            team_row = await (
                await conn.execute(f"SELECT {_TEAM_COLUMNS} FROM teams WHERE id = %s", (row["team_id"],))
            ).fetchone()
            if team_row is not None:
                teams[team_row["id"]] = Team.of_row(team_row)
    return VirtualKey.of_row(row, teams)


# --- teams ---------------------------------------------------------------------------------------------------


async def create_team(db: Database, fields: dict[str, Any]) -> dict[str, Any]:
    fields = {"id": fields.get("id") or f"team-{uuid.uuid4().hex[:12]}", **fields}
    try:
        return await _insert(db, "teams", fields, _TEAM_COLUMNS)
    except psycopg.errors.UniqueViolation:
        raise GatewayError(409, f"A team '{fields['id']}' exists already.", code="conflict", param="team_id") from None


async def get_team(db: Database, team_id: str) -> dict[str, Any]:
    async with db.reader() as conn:
        row = await (await conn.execute(f"SELECT {_TEAM_COLUMNS} FROM teams WHERE id = %s", (team_id,))).fetchone()
    if row is None:
        raise _not_found("team", team_id)
    return row


async def list_teams(db: Database) -> list[dict[str, Any]]:
    async with db.reader() as conn:
        return await (await conn.execute(f"SELECT {_TEAM_COLUMNS} FROM teams ORDER BY created_at, id")).fetchall()


async def update_team(db: Database, team_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    return await _update(db, "teams", team_id, fields, _TEAM_COLUMNS)


async def delete_team(db: Database, team_id: str) -> None:
    try:
        async with db.writer() as conn:
            cur = await conn.execute("DELETE FROM teams WHERE id = %s", (team_id,))
    except psycopg.errors.ForeignKeyViolation:
        raise GatewayError(409, f"Team '{team_id}' still has keys: delete them first.", code="conflict") from None
    if cur.rowcount == 0:
        raise _not_found("team", team_id)


# --- keys ----------------------------------------------------------------------------------------------------


async def create_key(db: Database, fields: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The stored key and its secret: the one time the secret exists outside the caller's hands."""
    secret = new_secret()
    row = {
        "id": f"key-{uuid.uuid4().hex[:16]}",
        "key_hash": key_hash(secret.encode()),
        "key_prefix": secret[:10],
        **fields,
    }
    try:
        return await _insert(db, "keys", row, _KEY_COLUMNS), secret
    except psycopg.errors.ForeignKeyViolation:
        raise bad_request(f"Unknown team '{fields.get('team_id')}': create the team first.", "team_id") from None


async def get_key(db: Database, key_id: str) -> dict[str, Any]:
    async with db.reader() as conn:
        row = await (await conn.execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE id = %s", (key_id,))).fetchone()
    if row is None:
        raise _not_found("key", key_id)
    return row


async def key_id_of_secret(db: Database, secret: str) -> str:
    async with db.reader() as conn:
        cur = await conn.execute("SELECT id FROM keys WHERE key_hash = %s", (key_hash(secret.encode()),))
        row = await cur.fetchone()
    if row is None:
        raise GatewayError(404, "No such key.", code="not_found", param="key")
    return str(row["id"])


async def list_keys(db: Database, team_id: str | None = None) -> list[dict[str, Any]]:
    query = f"SELECT {_KEY_COLUMNS} FROM keys" + (" WHERE team_id = %s" if team_id else "") + " ORDER BY created_at, id"
    async with db.reader() as conn:
        return await (await conn.execute(query, (team_id,) if team_id else ())).fetchall()


async def update_key(db: Database, key_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    try:
        return await _update(db, "keys", key_id, fields, _KEY_COLUMNS)
    except psycopg.errors.ForeignKeyViolation:
        raise bad_request(f"Unknown team '{fields.get('team_id')}': create the team first.", "team_id") from None


async def delete_keys(db: Database, key_ids: Iterable[str]) -> list[str]:
    async with db.writer() as conn:
        cur = await conn.execute("DELETE FROM keys WHERE id = ANY(%s) RETURNING id", (list(key_ids),))
        return [row["id"] for row in await cur.fetchall()]


# --- spend ---------------------------------------------------------------------------------------------------


async def add_spend(db: Database, rows: list[SpendRow]) -> None:
    """One transaction: the daily rows and the running totals on keys and teams move together."""
    async with db.writer() as conn, conn.transaction(), conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO spend (day, key_id, team_id, model, requests, prompt_tokens, completion_tokens, cost) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (day, key_id, team_id, model) DO UPDATE SET "
            "requests = spend.requests + EXCLUDED.requests, "
            "prompt_tokens = spend.prompt_tokens + EXCLUDED.prompt_tokens, "
            "completion_tokens = spend.completion_tokens + EXCLUDED.completion_tokens, "
            "cost = spend.cost + EXCLUDED.cost",
            [
                (r.day, r.key_id, r.team_id, r.model, r.requests, r.prompt_tokens, r.completion_tokens, r.cost)
                for r in rows
            ],
        )
        per_key: dict[str, float] = {}
        per_team: dict[str, float] = {}
        for r in rows:
            if r.key_id:
                per_key[r.key_id] = per_key.get(r.key_id, 0.0) + r.cost
            if r.team_id:
                per_team[r.team_id] = per_team.get(r.team_id, 0.0) + r.cost
        if per_key:
            await cur.executemany(
                "UPDATE keys SET spend = spend + %s WHERE id = %s", [(c, k) for k, c in per_key.items()]
            )
        if per_team:
            await cur.executemany(
                "UPDATE teams SET spend = spend + %s WHERE id = %s", [(c, t) for t, c in per_team.items()]
            )


async def spend_report(db: Database, start: date | None, end: date | None, team_id: str | None) -> list[dict[str, Any]]:
    """Spend per team and model over [start, end] (days, inclusive)."""
    where: list[str] = ["TRUE"]
    args: list[Any] = []
    if start is not None:
        where.append("day >= %s")
        args.append(start)
    if end is not None:
        where.append("day <= %s")
        args.append(end)
    if team_id is not None:
        where.append("team_id = %s")
        args.append(team_id)
    query = (
        "SELECT team_id, model, sum(requests)::bigint AS requests, sum(prompt_tokens)::bigint AS prompt_tokens, "
        "sum(completion_tokens)::bigint AS completion_tokens, sum(cost) AS cost FROM spend WHERE "
        + " AND ".join(where)
        + " GROUP BY team_id, model ORDER BY team_id, model"
    )
    async with db.reader() as conn:
        return await (await conn.execute(query.encode(), args)).fetchall()


# --- helpers -------------------------------------------------------------------------------------------------


async def _insert(db: Database, table: str, fields: dict[str, Any], returning: str) -> dict[str, Any]:
    names = list(fields)
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING " + returning).format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(sql.Placeholder() * len(names)),
    )
    async with db.writer() as conn:
        row = await (await conn.execute(query, [_adapt(fields[n]) for n in names])).fetchone()
    assert row is not None
    return row


async def _update(db: Database, table: str, row_id: str, fields: dict[str, Any], returning: str) -> dict[str, Any]:
    fields = {k: v for k, v in fields.items() if k != "id"}
    assignments: list[sql.Composable] = [
        sql.SQL("{} = {}").format(sql.Identifier(n), sql.Placeholder()) for n in fields
    ]
    assignments.append(sql.SQL("updated_at = now()"))
    query = sql.SQL("UPDATE {} SET {} WHERE id = {} RETURNING " + returning).format(
        sql.Identifier(table), sql.SQL(", ").join(assignments), sql.Placeholder()
    )
    async with db.writer() as conn:
        row = await (await conn.execute(query, [*(_adapt(v) for v in fields.values()), row_id])).fetchone()
    if row is None:
        raise _not_found(table[:-1], row_id)
    return row


def _adapt(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, dict) else value


def _not_found(what: str, ident: str) -> GatewayError:
    return GatewayError(404, f"No {what} '{ident}'.", code="not_found")


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON-ready values (datetimes as ISO 8601)."""
    return orjson.loads(orjson.dumps(row, default=str))
