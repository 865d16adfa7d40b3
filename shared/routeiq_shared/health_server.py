"""The small HTTP server each sidecar runs: its health document, liveness, readiness and Prometheus metrics.

The sidecar owns the facts; this only serves them. `status` is a callable so every answer is current.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest


class HealthServer:
    def __init__(
        self,
        health_path: str,
        status: Callable[[], dict[str, Any]],
        ready: Callable[[], bool],
        registry: CollectorRegistry,
    ) -> None:
        self._status = status
        self._ready = ready
        self._registry = registry
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get(health_path, self._health)
        app.router.add_get("/health/liveness", self._liveness)
        app.router.add_get("/health/readiness", self._readiness)
        app.router.add_get("/metrics", self._metrics)
        self._app = app

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self._status()), content_type="application/json")

    async def _liveness(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"alive"}', content_type="application/json")

    async def _readiness(self, request: web.Request) -> web.Response:
        ready = self._ready()
        body = b'{"status":"ready"}' if ready else b'{"status":"not ready"}'
        return web.Response(status=200 if ready else 503, body=body, content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self._registry), content_type="text/plain")
