"""One pass over the models this pod follows: find the wanted version, and if it is not the one installed,
verify its manifest, take a fleet-wide download permit, download, verify the bytes, install.

Nothing unverified is ever renamed into place: the signature is checked before a byte of the artifact is
fetched, and size and sha256 after, on the temp file. Every failure leaves the installed version serving and
is reported (status, metrics, log) with a reason code.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from opentelemetry import trace
from redis.exceptions import RedisError
from routeiq_shared.lease import LeaseSemaphore, LeaseUnavailable
from routeiq_shared.manifest import Manifest, ManifestError
from routeiq_shared.objectstore import ObjectStore, StoreError
from routeiq_shared.signing import VerificationError, verify_artifact, verify_manifest

from .metrics import ModelSyncMetrics
from .registry import RegistryError, artifact_key, read_current, read_manifest
from .settings import ModelSyncSettings
from .volume import PREVIOUS, artifact_file, install, installed, remove_stale_downloads, temp_path
from .wanted import wanted_models

log = logging.getLogger("routeiq.model_sync")
tracer = trace.get_tracer("routeiq.model_sync")


@dataclass(frozen=True, slots=True)
class ModelStatus:
    version: str | None = None
    sha256: str | None = None
    synced_at: float | None = None
    last_result: str | None = None
    last_error: str | None = None

    def document(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class SyncFailure(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ModelSyncer:
    def __init__(
        self,
        settings: ModelSyncSettings,
        store: ObjectStore,
        redis: Any | None,
        metrics: ModelSyncMetrics,
        public_key: Ed25519PublicKey | None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.redis = redis
        self.metrics = metrics
        self.public_key = public_key
        self.models: Mapping[str, ModelStatus] = MappingProxyType({})
        self.redis_state = "not_configured" if redis is None else "unknown"
        self.passes = 0
        self._rng = random.Random()

    # --- a pass ----------------------------------------------------------------------------------------

    async def sync_once(self) -> dict[str, str]:
        paths = self.settings.paths
        wanted = wanted_models(paths.config_file, self.settings.names)
        await self._check_redis()
        results = {}
        for name, pin in sorted(wanted.items()):
            results[name] = await self.sync_model(name, pin)
        self.passes += 1
        return results

    async def _check_redis(self) -> None:
        """Health says how Redis is now, not how it was at the last download (one PING a pass)."""
        if self.redis is None:
            return
        try:
            await self.redis.ping()
        except (RedisError, OSError):
            self.redis_state = "unreachable"
        else:
            self.redis_state = "ok"

    async def sync_model(self, name: str, pin: str | None) -> str:
        with tracer.start_as_current_span("model_sync", attributes={"routeiq.model": name}) as span:
            try:
                result, manifest = await self._sync(name, pin, span)
            except SyncFailure as exc:
                span.set_status(trace.StatusCode.ERROR, str(exc))
                self._record(name, ModelStatus(last_result=exc.reason, last_error=str(exc)), failed=True)
                self.metrics.downloads.labels(name, exc.reason).inc()
                if exc.reason in _VERIFICATION_REASONS:
                    self.metrics.verification_failures.labels(exc.reason).inc()
                log.error(
                    "Model not updated; the installed version keeps serving",
                    extra={
                        "event": "model_sync",
                        "model": name,
                        "result": exc.reason,
                        "reason": str(exc),
                        "serving_version": self._installed_version(name),
                    },
                )
                return exc.reason
            self._record(name, ModelStatus(manifest.version, manifest.artifact.sha256, time.time(), result), False)
            if result != "unchanged":
                self.metrics.downloads.labels(name, result).inc()
                fields = {"event": "model_sync", "model": name, "result": result, "version": manifest.version}
                log.info("Model installed", extra=fields)
            return result

    async def _sync(self, name: str, pin: str | None, span: trace.Span) -> tuple[str, Manifest]:
        models_dir = self.settings.paths.models_dir
        models_dir.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_downloads(models_dir, name):
            log.warning(
                "Removed a partial download left by an earlier run",
                extra={"event": "model_sync", "model": name, "path": str(stale)},
            )
        try:
            target = pin or await read_current(self.store, name)
            local = installed(models_dir, name)
            span.set_attribute("routeiq.model.version", target)
            if local is not None and local.version == target:
                return "unchanged", local
            manifest, _ = await read_manifest(self.store, name, target)
        except RegistryError as exc:
            raise SyncFailure(exc.reason, str(exc)) from None
        except ManifestError as exc:
            raise SyncFailure("bad_manifest", str(exc)) from None
        except StoreError as exc:
            raise SyncFailure(exc.reason, str(exc)) from None
        if manifest.name != name or manifest.version != target:
            raise SyncFailure(
                "bad_manifest", f"{name}/{target}/manifest.json describes {manifest.name} {manifest.version}"
            )
        self._verify_signature(manifest)
        previous = installed(models_dir, name, PREVIOUS)
        if previous is not None and previous.version == target and await self._reinstall_previous(previous):
            return "restored_previous", previous
        async with self._permit(name):
            await self._download_and_install(manifest)
        return "installed", manifest

    def _verify_signature(self, manifest: Manifest) -> None:
        if self.public_key is None:
            if self.settings.require_signature:
                raise SyncFailure(
                    "no_public_key", "MODEL_REQUIRE_SIGNATURE is on but MODEL_SIGNING_PUBLIC_KEY is unset"
                )
            return
        if manifest.signature is None and not self.settings.require_signature:
            return
        try:
            verify_manifest(manifest, self.public_key)
        except VerificationError as exc:
            raise SyncFailure(exc.reason, str(exc)) from None

    async def _download_and_install(self, manifest: Manifest) -> None:
        models_dir = self.settings.paths.models_dir
        tmp = temp_path(models_dir, manifest.name)
        try:
            with tracer.start_as_current_span("download"):
                try:
                    size = await self.store.download(
                        artifact_key(manifest.name, manifest.version), tmp, max_bytes=self.settings.max_artifact_bytes
                    )
                except StoreError as exc:
                    raise SyncFailure(exc.reason, str(exc)) from None
            self.metrics.bytes.inc(size)
            with tracer.start_as_current_span("verify"):
                try:
                    await asyncio.to_thread(verify_artifact, manifest, tmp)
                except VerificationError as exc:
                    raise SyncFailure(exc.reason, str(exc)) from None
            with tracer.start_as_current_span("install"):
                install(models_dir, manifest, tmp)
        finally:
            tmp.unlink(missing_ok=True)

    async def _reinstall_previous(self, previous: Manifest) -> bool:
        """Rollback to the version kept on disk: verified again, installed without a download."""
        models_dir = self.settings.paths.models_dir
        self._verify_signature(previous)
        source = artifact_file(models_dir, previous.name, PREVIOUS)
        tmp = temp_path(models_dir, previous.name)
        try:
            await asyncio.to_thread(verify_artifact, previous, source)
        except (VerificationError, OSError):
            return False  # damaged or gone: download it like any other version
        try:
            tmp.unlink(missing_ok=True)
            tmp.hardlink_to(source)
            install(models_dir, previous, tmp)
        finally:
            tmp.unlink(missing_ok=True)
        return True

    # --- the fleet-wide download permit --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _permit(self, name: str) -> AsyncIterator[None]:
        if self.redis is None:
            await self._fallback_delay(name, "REDIS_URL is not set")
            yield
            return
        semaphore = LeaseSemaphore(
            self.redis, f"model-download:{name}", self.settings.max_concurrent, self.settings.lease_ttl_ms
        )
        start = time.monotonic()
        try:
            lease = await semaphore.acquire(timeout_s=self.settings.lock_wait_seconds)
        except LeaseUnavailable as exc:
            self.redis_state = "unreachable"
            await self._fallback_delay(name, str(exc))
            yield
            return
        self.redis_state = "ok"
        waited = time.monotonic() - start
        self.metrics.lock_waits.inc()
        self.metrics.lock_wait_seconds.observe(waited)
        if lease is None:
            raise SyncFailure(
                "lock_timeout", f"no download permit for {name} within {self.settings.lock_wait_seconds} s"
            )
        log.info(
            "Download permit acquired", extra={"event": "model_permit", "model": name, "waited_s": round(waited, 3)}
        )
        async with lease:
            yield
        if lease.lost:
            log.warning("Download permit expired while held", extra={"event": "model_permit", "model": name})

    async def _fallback_delay(self, name: str, why: str) -> None:
        delay = self._rng.uniform(0, self.settings.fallback_delay_max)
        self.metrics.redis_fallbacks.inc()
        log.warning(
            "No download permit (Redis unavailable): downloading after a random delay",
            extra={"event": "model_permit", "model": name, "delay_s": round(delay, 3), "reason": why},
        )
        await asyncio.sleep(delay)

    # --- status ------------------------------------------------------------------------------------------

    def _installed_version(self, name: str) -> str | None:
        local = installed(self.settings.paths.models_dir, name)
        return local.version if local else None

    def _record(self, name: str, status: ModelStatus, failed: bool) -> None:
        if failed:  # keep what is installed in the document; only the outcome changes
            old = self.models.get(name, ModelStatus())
            local = installed(self.settings.paths.models_dir, name)
            status = dataclasses.replace(
                status,
                version=local.version if local else old.version,
                sha256=local.artifact.sha256 if local else old.sha256,
                synced_at=old.synced_at,
            )
        else:
            self.metrics.set_version(name, status.version or "")
            self.metrics.last_success.labels(name).set(status.synced_at or time.time())
        self.models = MappingProxyType({**self.models, name: status})

    def document(self) -> dict[str, Any]:
        failing = any(m.last_error for m in self.models.values())
        if self.passes == 0:
            status = "starting"
        elif failing or self.redis_state == "unreachable":
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status,
            "registry": self.settings.registry,
            "redis": self.redis_state,
            "models": {name: m.document() for name, m in sorted(self.models.items())},
        }


_VERIFICATION_REASONS = frozenset(
    {
        "unsigned",
        "bad_signature",
        "unknown_key",
        "unsupported_algorithm",
        "size_mismatch",
        "sha256_mismatch",
        "no_public_key",
        "bad_manifest",
        "incomplete",
    }
)
