"""A fake OIDC issuer (aiohttp), run as its own process: the discovery document and a JWKS read from a file at
every request (a test rotates keys by rewriting the file), and `/_stats` counting the JWKS fetches.

    python oidc_issuer.py --host 127.0.0.1 --port N --jwks FILE

Imports nothing from the harness: it runs as a plain script.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from aiohttp import web


def make_app(base_url: str, jwks_path: Path) -> web.Application:
    stats = {"discovery": 0, "jwks": 0}

    async def discovery(request: web.Request) -> web.Response:
        stats["discovery"] += 1
        return web.json_response({"issuer": base_url, "jwks_uri": f"{base_url}/jwks.json"})

    async def jwks(request: web.Request) -> web.Response:
        stats["jwks"] += 1
        return web.Response(body=await asyncio.to_thread(jwks_path.read_bytes), content_type="application/json")

    async def stats_view(request: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/jwks.json", jwks)
    app.router.add_get("/_stats", stats_view)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jwks", type=Path, required=True)
    args = parser.parse_args()
    web.run_app(make_app(f"http://{args.host}:{args.port}", args.jwks), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
