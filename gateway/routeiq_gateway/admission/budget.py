"""Budgets of virtual keys and teams: a key or team whose spend has reached its budget gets 429 `budget_exceeded`
(LiteLLM's code) until its period resets.

The spend read here is the key cache's (PostgreSQL's `spend` columns, which the spend ledger adds to every
`spend_flush_seconds`), so a replica sees another's spend within about `spend_flush_seconds + refresh_seconds`:
a budget can be overrun by what the fleet spends in that time, never more.

Resets (`reset_due`): rows whose `budget_reset_at` has passed get spend 0 and their next reset time, in one
transaction that locks the rows it changes and re-checks `budget_reset_at <= now()`, so when every replica runs
it, each row is reset once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.tenancy.database import Database
from routeiq_gateway.tenancy.fields import duration_seconds
from routeiq_gateway.tenancy.key_cache import DB_ERRORS
from routeiq_gateway.tenancy.records import Limits, VirtualKey

log = logging.getLogger("routeiq.gateway")


def check(vkey: VirtualKey) -> tuple[str, GatewayError] | None:
    """("key" | "team", the 429) when the key's or its team's spend has reached its budget; else None."""
    scopes: list[tuple[str, Limits, float]] = [("key", vkey.limits, vkey.spend)]
    if vkey.team is not None:
        scopes.append(("team", vkey.team.limits, vkey.team.spend))
    for scope, limits, spend in scopes:
        if limits.budget is not None and spend >= limits.budget:
            return scope, _exceeded(scope, spend, limits)
    return None


def _exceeded(scope: str, spend: float, limits: Limits) -> GatewayError:
    headers: tuple[tuple[bytes, bytes], ...] = ()
    when = ""
    if limits.budget_reset_at is not None:
        seconds = max(1, int(limits.budget_reset_at - time.time()) + 1)
        headers = ((b"retry-after", str(seconds).encode()),)
        when = f" It resets in {seconds} s."
    return GatewayError(
        429,
        f"Budget has been exceeded for this {scope}! Current cost: {spend:.6g}, Max budget: {limits.budget:.6g}.{when}",
        code="budget_exceeded",
        headers=headers,
    )


def next_reset(reset_at: datetime, period: str, now: datetime) -> datetime:
    """The first reset time after `now`, in steps of `period` from the one that passed (no drift, no catch-up)."""
    step = timedelta(seconds=duration_seconds(period, "budget_period"))
    behind = (now - reset_at) // step + 1
    return reset_at + step * behind


async def reset_due(db: Database) -> int:
    """Zero the spend of every key and team whose budget period is over; the number of rows reset."""
    done = 0
    async with db.writer() as conn, conn.transaction():
        row = await (await conn.execute("SELECT now() AS now")).fetchone()
        assert row is not None
        now: datetime = row["now"]
        for table in ("teams", "keys"):
            rows = await (
                await conn.execute(
                    f"SELECT id, budget_period, budget_reset_at FROM {table} "
                    "WHERE budget_period IS NOT NULL AND budget_reset_at <= now() FOR UPDATE SKIP LOCKED"
                )
            ).fetchall()
            for r in rows:
                await conn.execute(
                    f"UPDATE {table} SET spend = 0, budget_reset_at = %s, updated_at = now() "
                    "WHERE id = %s AND budget_reset_at <= now()",
                    (next_reset(r["budget_reset_at"], r["budget_period"], now), r["id"]),
                )
                done += 1
    return done


async def run_resets(
    db: Database, interval: Callable[[], float], changed: Callable[[], Awaitable[None]], stop: asyncio.Event
) -> None:
    """At the key cache's pace (`routeiq.keys.refresh_seconds`): reset what is due; when anything was, reload the
    keys here and on every replica."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval())
        if stop.is_set():
            return
        try:
            count = await reset_due(db)
        except DB_ERRORS as exc:
            log.warning(
                "Budget reset not done; tried again later",
                extra={"event": "budget_reset_failed", "reason": db.settings.describe(exc)},
            )
            continue
        if count:
            log.info("Budgets reset", extra={"event": "budget_reset", "rows": count})
            await changed()
