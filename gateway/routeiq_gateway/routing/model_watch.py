"""Live swap of router models: watch the models directory, verify and load a new artifact in a worker thread,
then swap the reference. Requests in flight keep the model they started with; a failed load keeps the
previous model serving and says why (log, metric).

model-sync renames the artifact first and its manifest last, so a new manifest is the signal to act on. With
no model of that name loaded yet (start-up), a current pair that does not match falls back to the kept previous
pair; with one loaded, it keeps serving instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from routeiq_gateway.audit.record import SYSTEM
from routeiq_gateway.audit.trail import AuditTrail
from routeiq_gateway.routing.router_models import LoadedModel, ModelLoadError, VerifyPolicy, load_model

log = logging.getLogger("routeiq.gateway.models")
MANIFEST_SUFFIX = ".manifest.json"


class ModelsRef:
    """The loaded router models by artifact name: one immutable mapping, replaced whole on every change."""

    def __init__(self) -> None:
        self.current: Mapping[str, LoadedModel] = MappingProxyType({})

    def swap(self, loaded: LoadedModel) -> LoadedModel | None:
        previous = self.current.get(loaded.name)
        self.current = MappingProxyType({**self.current, loaded.name: loaded})
        return previous


class ModelMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.info = Gauge(
            "routeiq_router_model_info",
            "Router model version serving (value is always 1)",
            ["name", "version"],
            registry=registry,
        )
        self.reloads = Counter(
            "routeiq_router_model_reloads",
            "Router model loads by result (ok, or why not)",
            ["name", "result"],
            registry=registry,
        )
        self.load_seconds = Histogram(
            "routeiq_router_model_load_seconds",
            "Verify + load time of a router model",
            ["name"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=registry,
        )


class ModelWatcher:
    def __init__(
        self,
        models_dir: Path,
        policy: VerifyPolicy,
        ref: ModelsRef,
        metrics: ModelMetrics,
        wanted: Callable[[], set[str]],
        audit: AuditTrail | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.policy = policy
        self.ref = ref
        self.metrics = metrics
        self.wanted = wanted  # artifact names the current config's routers use
        self.audit = audit  # one record per swap, rollback to the kept pair, or refused load
        self._lock = asyncio.Lock()

    async def load(self, name: str) -> bool:
        async with self._lock:  # one load at a time: two quick renames must not race to the swap
            try:
                fall_back = name not in self.ref.current  # never trade a loaded model for an older one
                loaded = await asyncio.to_thread(load_model, self.models_dir, name, self.policy, fall_back=fall_back)
            except ModelLoadError as exc:
                self.metrics.reloads.labels(name, exc.reason).inc()
                current = self.ref.current.get(name)
                log.error(
                    "Router model not loaded; the previous one keeps serving",
                    extra={
                        "event": "model_load",
                        "model": name,
                        "result": exc.reason,
                        "reason": str(exc),
                        "serving_version": current.version if current else None,
                    },
                )
                self._audit("model.swap", name, current, None, exc.reason)
                return False
            previous = self.ref.swap(loaded)
        self.metrics.reloads.labels(name, "previous" if loaded.slot else "ok").inc()
        self.metrics.load_seconds.labels(name).observe(loaded.load_seconds)
        if previous is not None and previous.version != loaded.version:
            self.metrics.info.remove(name, previous.version)
        self.metrics.info.labels(name, loaded.version).set(1)
        if previous is None or previous.sha256 != loaded.sha256:
            # serving the kept previous pair is the gateway's own rollback
            self._audit("model.rollback" if loaded.slot else "model.swap", name, previous, loaded, "ok")
        log.info(
            "Router model loaded",
            extra={
                "event": "model_load",
                "model": name,
                "result": "ok",
                "version": loaded.version,
                "previous_version": previous.version if previous else None,
                "load_seconds": round(loaded.load_seconds, 4),
                "slot": loaded.slot or "current",
            },
        )
        if loaded.slot:
            log.warning(
                "Router model's artifact does not match its manifest (an install was cut short); "
                "serving the kept previous pair until model-sync repairs it",
                extra={"event": "model_load", "model": name, "version": loaded.version, "slot": loaded.slot},
            )
        return True

    async def load_wanted(self) -> None:
        """Load every wanted model that has a manifest and is not loaded yet (start-up, config reload)."""
        for name in sorted(self.wanted()):
            if name not in self.ref.current and (self.models_dir / f"{name}{MANIFEST_SUFFIX}").exists():
                await self.load(name)

    async def run(self, stop: asyncio.Event) -> None:
        from watchfiles import awatch

        self.models_dir.mkdir(parents=True, exist_ok=True)
        await self.load_wanted()
        async for changes in awatch(self.models_dir, stop_event=stop, debounce=100, step=20, recursive=False):
            names = {Path(p).name[: -len(MANIFEST_SUFFIX)] for _, p in changes if p.endswith(MANIFEST_SUFFIX)}
            for name in sorted(names & self.wanted()):
                await self.load(name)

    def _audit(
        self, action: str, name: str, before: LoadedModel | None, after: LoadedModel | None, result: str
    ) -> None:
        if self.audit is not None:  # digests are the artifacts' sha256, versions are in the target
            target = f"model:{name}@{after.version if after else (before.version if before else '-')}"
            self.audit.record(
                SYSTEM,
                action,
                target,
                result=result,
                before_digest=before.sha256 if before else None,
                after_digest=after.sha256 if after else None,
            )
