"""`GET /health/dependencies`: what the gateway is running without, and how old what it serves may be.

- each dependency's circuit breaker (redis, postgres, s3: closed / open / half_open) and the provider deployments
  whose breaker is not closed;
- the config: the age of config.yaml on the volume, and what config-sync last said about the object store
  (`<run_dir>/config-sync.status.json`: its status and seconds since the store last answered a poll);
- the router models: each installed manifest's age, and model-sync's word on the registry likewise.

Readiness does not depend on any of it: a gateway serving the last good config while S3 is down is ready. No
error text is shown (this port is public); the reasons are in the logs and the sidecars' own health.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from routeiq_shared.breaker import BreakerState, CircuitBreaker

from routeiq_gateway.routing.runtime import RuntimeState

_SYNC_FIELDS = ("status", "staleness_seconds", "last_success_at")
_STORE_FIELDS = ("breaker", "staleness_seconds", "last_ok_at")
_MANIFEST = ".manifest.json"
_PREVIOUS = ".previous" + _MANIFEST


class DependencyHealth:
    def __init__(
        self,
        config_path: Path,
        models_dir: Path,
        run_dir: Path,
        breakers: Mapping[str, CircuitBreaker],
        runtime: RuntimeState,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config_path = config_path
        self.models_dir = models_dir
        self.run_dir = run_dir
        self.breakers = breakers  # filled as the parts that own them start
        self.runtime = runtime
        self.clock = clock

    async def body(self) -> bytes:
        files = await asyncio.to_thread(self._files)  # small reads, off the loop all the same
        return orjson.dumps(self.document(files))

    def document(self, files: dict[str, Any]) -> dict[str, Any]:
        breakers = {name: b.state.label for name, b in sorted(self.breakers.items())}
        deployments = [
            {"deployment_id": dep_id, "model": self.runtime.names.get(dep_id, ""), "breaker": state.label}
            for dep_id in sorted(self.runtime.unhealthy)
            if (state := self.runtime.breaker(dep_id)) is not BreakerState.CLOSED
        ]
        syncs = (files["config"].get("sync"), files["models"].get("sync"))
        degraded = (
            any(label != "closed" for label in breakers.values())
            or bool(deployments)
            or any(s is not None and (s.get("store") or {}).get("breaker", "closed") != "closed" for s in syncs)
        )
        return {
            "status": "degraded" if degraded else "ok",
            "breakers": breakers,
            "deployments_not_closed": deployments,
            **files,
        }

    def _files(self) -> dict[str, Any]:
        now = self.clock()
        config: dict[str, Any] = {"file_age_seconds": _age(self.config_path, now)}
        models: dict[str, Any] = {}
        try:
            manifests = sorted(p for p in self.models_dir.iterdir() if p.name.endswith(_MANIFEST))
        except OSError:
            manifests = []
        models["installed"] = {
            p.name[: -len(_MANIFEST)]: {"manifest_age_seconds": _age(p, now)}
            for p in manifests
            if not p.name.endswith(_PREVIOUS)
        }
        for doc, agent in ((config, "config-sync"), (models, "model-sync")):
            status = _read_json(self.run_dir / f"{agent}.status.json")
            if status is not None:
                sync = {k: status.get(k) for k in _SYNC_FIELDS if k in status}
                store = status.get("store")
                written = status.get("written_at")
                if isinstance(store, dict):
                    seen: dict[str, Any] = {k: store.get(k) for k in _STORE_FIELDS}
                    last_ok, stale = store.get("last_ok_at"), store.get("staleness_seconds")
                    if isinstance(last_ok, int | float):  # as of now, not as of the report
                        seen["staleness_seconds"] = round(now - last_ok, 3)
                    elif isinstance(stale, int | float) and isinstance(written, int | float):
                        seen["staleness_seconds"] = round(stale + now - written, 3)
                    sync["store"] = seen
                if isinstance(written, int | float):
                    sync["report_age_seconds"] = round(now - written, 3)  # the agent itself may be gone
                doc["sync"] = sync
        return {"config": config, "models": models}


def _age(path: Path, now: float) -> float | None:
    try:
        return round(now - path.stat().st_mtime, 3)
    except OSError:
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
