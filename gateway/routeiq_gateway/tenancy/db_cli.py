"""`routeiq-gateway db upgrade` (apply missing migrations) and `routeiq-gateway db status` (print the versions)."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson
import psycopg

from routeiq_gateway.tenancy.database import DatabaseSettings
from routeiq_gateway.tenancy.migrate import SchemaError, current_version, required_version, upgrade


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="routeiq-gateway db", description=__doc__)
    p.add_argument("command", choices=("upgrade", "status"))
    args = p.parse_args(argv)
    try:
        settings = DatabaseSettings.from_env()
    except ValueError as exc:
        print(f"routeiq-gateway db: {exc}", file=sys.stderr)
        return 2
    if settings is None:
        print("routeiq-gateway db: DATABASE_URL is not set", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(_run(args.command, settings))
    except SchemaError as exc:
        print(f"routeiq-gateway db {args.command}: refused: {exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        print(f"routeiq-gateway db {args.command}: database error: {settings.redact(str(exc))}", file=sys.stderr)
        return 1
    print(orjson.dumps(result).decode())
    return 0


async def _run(command: str, settings: DatabaseSettings) -> dict[str, object]:
    kwargs = settings.connect_kwargs()
    # Migrations may take longer than a request-path statement: no statement timeout here.
    kwargs.pop("options", None)
    async with await psycopg.AsyncConnection.connect(settings.url, **kwargs) as conn:  # type: ignore[arg-type]
        if command == "upgrade":
            applied = await upgrade(conn)
            return {"applied": [f"{m.version:04d}_{m.name}" for m in applied], "version": await current_version(conn)}
        return {"version": await current_version(conn), "required": required_version()}
