"""One pass over the models this pod follows: find the wanted version, and if it is not the one installed,
verify its manifest, take a fleet-wide download permit, download, verify the bytes, install.

Nothing unverified is ever renamed into place: the signature is checked before a byte of the artifact is
fetched, and size and sha256 after, on the temp file. Every failure leaves the installed version serving and
is reported (status, metrics, log) with a reason code; so does an error of the volume itself (full, read-only,
a name too long for it), after which the pair that served is put back.

Which version to serve is an authenticated decision: a config pin, or a signed CURRENT pointer whose sequence
is above the highest this volume has accepted (kept in `<name>.current.json`). A version whose bytes failed
verification is not downloaded again until its manifest changes or its backoff (doubling) has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from opentelemetry import trace
from routeiq_shared.lease import LeaseSemaphore, LeaseUnavailable
from routeiq_shared.manifest import NAME_PATTERN, CurrentPointer, Manifest, ManifestError
from routeiq_shared.objectstore import ObjectStore, ObjectTooLarge, StoreError
from routeiq_shared.redis_settings import REDIS_ERRORS
from routeiq_shared.signing import VerificationError, verify_artifact, verify_manifest, verify_pointer
from routeiq_shared.store_health import STORE_DOWN_REASONS, StoreHealth

from .metrics import ModelSyncMetrics
from .registry import RegistryError, artifact_key, read_current, read_manifest
from .settings import ModelSyncSettings
from .volume import (
    PREVIOUS,
    accepted_pointer,
    artifact_file,
    install,
    installed,
    keep_pointer,
    remove_stale_downloads,
    repair,
    temp_path,
)
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


@dataclass(frozen=True, slots=True)
class Refusal:
    """A version whose downloaded bytes failed verification: not fetched again before `retry_at`."""

    reason: str
    message: str
    failures: int
    retry_at: float  # time.monotonic()


# Failures that are facts about the published bytes, not accidents of the transfer: worth remembering.
_BYTES_REASONS = frozenset({"size_mismatch", "sha256_mismatch", "too_large"})


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
        self._refused: dict[tuple[str, str, str], Refusal] = {}  # (name, version, manifest sha256) → refusal
        self._accepted: dict[str, CurrentPointer] = {}  # name → newest CURRENT pointer accepted
        self._checked: set[str] = set()  # models whose volume pair was checked (repaired) since start
        self.store_health = StoreHealth(metrics.registry, "routeiq_model_sync", settings.store_breaker, log)

    # --- a pass ----------------------------------------------------------------------------------------

    async def sync_once(self) -> dict[str, str]:
        paths = self.settings.paths
        wanted = wanted_models(paths.config_file, self.settings.names)
        await self._check_redis()
        results: dict[str, str] = {}
        if not wanted or self.store_health.allow():
            for name, pin in sorted(wanted.items()):
                results[name] = await self.sync_model(name, pin)
        else:
            log.warning(
                "Registry not polled: its circuit breaker is open; the installed models keep serving",
                extra={"event": "model_sync", "result": "store_breaker_open"},
            )
        if results:
            down = [r for r in results.values() if r in STORE_DOWN_REASONS]
            if down:
                self.store_health.failed(f"{down[0]} ({len(down)} of {len(results)} models)")
            else:
                self.store_health.ok()  # it answered, whatever it said
        self.passes += 1
        return results

    async def _check_redis(self) -> None:
        """Health says how Redis is now, not how it was at the last download (one PING a pass)."""
        if self.redis is None:
            return
        try:
            await self.redis.ping()
        except REDIS_ERRORS:
            self.redis_state = "unreachable"
        else:
            self.redis_state = "ok"

    async def sync_model(self, name: str, pin: str | None) -> str:
        with tracer.start_as_current_span("model_sync", attributes={"routeiq.model": name}) as span:
            try:
                try:
                    result, manifest = await self._sync(name, pin, span)
                except OSError as exc:  # the volume itself: full, read-only, a name it cannot hold
                    self._checked.discard(name)  # look at the pair again next pass
                    raise SyncFailure("volume_error", _describe_os_error(exc)) from None
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
        if not re.match(NAME_PATTERN, name):  # MODEL_NAMES is free text; config names are checked by the schema
            raise SyncFailure(
                "bad_name", f"MODEL_NAMES: {name[:80]!r} is not a model name (lowercase a-z, 0-9, '.', '_', '-'; <= 64)"
            )
        models_dir = self.settings.paths.models_dir
        models_dir.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_downloads(models_dir, name):
            log.warning(
                "Removed a partial download left by an earlier run",
                extra={"event": "model_sync", "model": name, "path": str(stale)},
            )
        if name not in self._checked:
            done = await asyncio.to_thread(repair, models_dir, name)
            self._checked.add(name)
            if done:
                log.warning(
                    "Repaired a model pair left half-installed",
                    extra={"event": "model_sync", "model": name, "action": done},
                )
        try:
            target, pointer = (pin, None) if pin else await self._current(name)
            local = installed(models_dir, name)
            span.set_attribute("routeiq.model.version", target)
            if local is not None and local.version == target:
                self._accept(pointer)
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
        # Accepted before the download: a pointer seen once is the floor, whatever happens to the install.
        self._accept(pointer)
        previous = installed(models_dir, name, PREVIOUS)
        if previous is not None and previous.version == target and await self._reinstall_previous(previous):
            return "restored_previous", previous
        self._check_not_refused(manifest)
        if manifest.artifact.size > self.settings.max_artifact_bytes:
            raise SyncFailure(
                "too_large",
                f"{name} {target}: the manifest says {manifest.artifact.size} bytes, "
                f"over MODEL_MAX_BYTES ({self.settings.max_artifact_bytes})",
            )
        async with self._permit(name):
            try:
                await self._download_and_install(manifest)
            except SyncFailure as exc:
                self._remember_refusal(manifest, exc)
                raise
        self._refused.pop(_refusal_key(manifest), None)
        return "installed", manifest

    # --- CURRENT: which version to serve --------------------------------------------------------------------

    async def _current(self, name: str) -> tuple[str, CurrentPointer | None]:
        """The version CURRENT names, if it is an authenticated decision newer than any accepted before."""
        current = await read_current(self.store, name)
        pointer = current.pointer
        if pointer is None or pointer.signature is None:
            if self.settings.require_signature:
                raise SyncFailure(
                    "unsigned_current",
                    f"{name}/CURRENT is not a signed pointer; point it again with "
                    "`routeiq-model-sync rollback --to VERSION --key signing.key` (or publish --set-current)",
                )
            return current.version, None  # MODEL_REQUIRE_SIGNATURE=false: followed as it is
        if self.public_key is None:
            if self.settings.require_signature:
                raise SyncFailure(
                    "no_public_key", "MODEL_REQUIRE_SIGNATURE is on but MODEL_SIGNING_PUBLIC_KEY is unset"
                )
            return current.version, None
        try:
            verify_pointer(pointer, self.public_key)
        except VerificationError as exc:
            raise SyncFailure(f"current_{exc.reason}", str(exc)) from None
        floor = self._floor(name)
        if floor is not None and pointer.sequence <= floor.sequence and pointer.version != floor.version:
            raise SyncFailure(
                "stale_current",
                f"{name}/CURRENT names {pointer.version} with sequence {pointer.sequence}, not above the sequence "
                f"{floor.sequence} ({floor.version}) this pod accepted: refused as an unsigned rollback; "
                "roll back with `routeiq-model-sync rollback`",
            )
        return current.version, pointer

    def _floor(self, name: str) -> CurrentPointer | None:
        """The newest pointer accepted for `name`: in memory, else from the volume (if it verifies)."""
        if name in self._accepted:
            return self._accepted[name]
        kept = accepted_pointer(self.settings.paths.models_dir, name)
        if kept is None or kept.name != name or self.public_key is None:
            return None
        try:
            verify_pointer(kept, self.public_key)
        except VerificationError:
            log.warning(
                "Ignored a kept CURRENT pointer that does not verify",
                extra={"event": "model_sync", "model": name},
            )
            return None
        self._accepted[name] = kept
        return kept

    def _accept(self, pointer: CurrentPointer | None) -> None:
        if pointer is None:
            return
        floor = self._floor(pointer.name)
        if floor is not None and pointer.sequence <= floor.sequence:
            return  # the same pointer again, or an older one naming the same version: the floor stays
        self._accepted[pointer.name] = pointer  # in memory first: even if the volume refuses the write
        keep_pointer(self.settings.paths.models_dir, pointer)

    # --- versions whose bytes were refused ------------------------------------------------------------------

    def _check_not_refused(self, manifest: Manifest) -> None:
        refusal = self._refused.get(_refusal_key(manifest))
        if refusal is None:
            return
        wait = refusal.retry_at - time.monotonic()
        if wait > 0:
            raise SyncFailure(
                refusal.reason,
                f"{refusal.message} (not downloaded again for {wait:.0f} s, or until its manifest changes)",
            )

    def _remember_refusal(self, manifest: Manifest, exc: SyncFailure) -> None:
        if exc.reason not in _BYTES_REASONS:
            return  # a transfer or volume accident: the next poll tries again
        key = _refusal_key(manifest)
        failures = self._refused[key].failures + 1 if key in self._refused else 1
        base, cap = self.settings.retry_backoff, self.settings.retry_backoff_max
        delay = min(cap, base * 2 ** (failures - 1))
        self._refused[key] = Refusal(exc.reason, str(exc), failures, time.monotonic() + delay)

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
                # Never more than the manifest says (+1 byte, to see that there is more): a grown object costs
                # a manifest's worth of transfer, not its own size, while the fleet-wide permit is held.
                expected = manifest.artifact.size
                try:
                    size = await self.store.download(
                        artifact_key(manifest.name, manifest.version), tmp, max_bytes=expected
                    )
                except ObjectTooLarge as exc:
                    raise SyncFailure(
                        "size_mismatch", f"{manifest.name} {manifest.version}: {exc}; the manifest says {expected}"
                    ) from None
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
            "store": self.store_health.document(),
            "redis": self.redis_state,
            "models": {name: m.document() for name, m in sorted(self.models.items())},
        }


def _refusal_key(manifest: Manifest) -> tuple[str, str, str]:
    return manifest.name, manifest.version, manifest.artifact.sha256


def _describe_os_error(exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno or 0, "OSError")
    where = f": {exc.filename}" if exc.filename else ""
    return f"{code} {exc.strerror or exc}{where}"


_VERIFICATION_REASONS = frozenset(
    {
        "unsigned",
        "current_unsigned",
        "current_bad_signature",
        "current_unknown_key",
        "current_unsupported_algorithm",
        "unsigned_current",
        "bad_current",
        "stale_current",
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
