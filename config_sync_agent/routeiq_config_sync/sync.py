"""One sync: fetch both files by ETag, validate them together, write them atomically, tell the gateway, and read
back its verdict.

The agent never deletes or truncates the files on the volume: a rejected upload, an unreachable store or a
failed write leaves the last good files serving, and a failed write is retried at the next poll (what counts as
applied is what was written, not what was fetched). The agent checks what it can know without the gateway's
secrets (structure, references' syntax); whether the gateway loaded the files is the gateway's to say, through
`gateway.status.json` or its admin reload answer. When the gateway refuses files this agent wrote, the agent puts
back the ones they replaced (a gateway restart would otherwise read the refused files and exit) and does not
write that upload again while the store holds it. What happened is kept in an immutable `SyncStatus`, swapped
whole after every attempt, which the health endpoint serves as it is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from routeiq_shared.atomic import atomic_write
from routeiq_shared.config_schema import ConfigError, check_config, content_version
from routeiq_shared.gateway_files import read_status
from routeiq_shared.objectstore import ObjectMissing, ObjectStore, ObjectTooLarge, StoredObject, StoreError
from routeiq_shared.store_health import STORE_DOWN_REASONS, StoreHealth
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from .metrics import AgentMetrics
from .notify import reload_over_http, signal_gateway
from .replaced import ReplacedFiles, read_if_present
from .settings import CANDIDATES_NAME, CONFIG_NAME, AgentSettings

log = logging.getLogger("routeiq.config_sync")
# Store errors a retry cannot cure within one sync.
_NOT_RETRIED = (ObjectMissing, ObjectTooLarge)
tracer = trace.get_tracer("routeiq.config_sync")


# What the gateway made of the files on the volume.
GATEWAY_OK = "ok"  # it serves this version
GATEWAY_REJECTED = "rejected_by_gateway"  # it read this version and refused it (e.g. a secret it lacks)
GATEWAY_PENDING = "pending"  # signalled, no verdict yet
GATEWAY_NOT_SIGNALLED = "not_signalled"  # neither a verified signal nor the admin endpoint reached it
GATEWAY_UNKNOWN = "unknown"  # no status from the gateway (none on this volume, or not signalled yet)
GATEWAY_STATES = (GATEWAY_OK, GATEWAY_REJECTED, GATEWAY_PENDING, GATEWAY_NOT_SIGNALLED, GATEWAY_UNKNOWN)


@dataclass(frozen=True, slots=True)
class GatewayVerdict:
    state: str = GATEWAY_UNKNOWN
    loaded_version: str | None = None
    reason: str | None = None

    def document(self) -> dict[str, object]:
        return {"state": self.state, "loaded_version": self.loaded_version, "reason": self.reason}


def verdict_from_status(status: dict[str, Any] | None, version: str | None, since: float = 0.0) -> GatewayVerdict:
    """The gateway's verdict on `version` from its status file; PENDING until it reports an attempt at or after
    `since` that read that version (or already serves it)."""
    if status is None:
        return GatewayVerdict()
    loaded = status.get("loaded_version")
    loaded = loaded if isinstance(loaded, str) else None
    attempt = status["last_attempt"]
    at = attempt.get("at")
    fresh = isinstance(at, (int, float)) and at >= since
    if fresh and attempt.get("version") == version and attempt.get("result") == "failure":
        return GatewayVerdict(GATEWAY_REJECTED, loaded, str(attempt.get("error") or "refused"))
    if loaded is not None and loaded == version and (fresh or since == 0.0):
        return GatewayVerdict(GATEWAY_OK, loaded)
    return GatewayVerdict(GATEWAY_PENDING, loaded)


@dataclass(frozen=True, slots=True)
class SyncStatus:
    source: str
    started_at: float
    last_attempt_at: float | None = None
    last_success_at: float | None = None
    version: str | None = None  # of the files on the volume
    etag: str | None = None  # of config.yaml in the store, as last applied
    last_result: str | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    gateway: GatewayVerdict = GatewayVerdict()

    @property
    def synced(self) -> bool:
        return self.last_success_at is not None

    def document(self, now: float) -> dict[str, object]:
        if not self.synced:
            status = "starting" if self.consecutive_failures == 0 else "failing"
        elif self.consecutive_failures:
            status = "stale"
        else:
            status = GATEWAY_REJECTED if self.gateway.state == GATEWAY_REJECTED else "ok"
        return {
            "status": status,
            "source": self.source,
            "last_success_at": self.last_success_at,
            "last_attempt_at": self.last_attempt_at,
            "staleness_seconds": None if self.last_success_at is None else round(now - self.last_success_at, 3),
            "version": self.version,
            "etag": self.etag,
            "last_result": self.last_result,
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "gateway": self.gateway.document(),
        }


@dataclass(frozen=True, slots=True)
class _Seen:
    """What the store held when we last looked (valid or not): the ETags to send as If-None-Match."""

    config_etag: str | None = None
    candidates_etag: str | None = None
    config: bytes | None = None
    candidates: bytes | None = None


class _Missing:
    """The optional object is not in the store (unlike None: not modified since the ETag we sent)."""


MISSING = _Missing()


class SyncFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Syncer:
    def __init__(self, settings: AgentSettings, store: ObjectStore, metrics: AgentMetrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self._seen = _Seen()
        self._rejected: SyncFailed | None = None
        self._volume_version = self._read_volume_version()
        self._applied_etag: str | None = None  # of the config.yaml written (and signalled), not merely fetched
        self._notify_failed = False  # the last write's reload request reached nobody: ask again next poll
        self._gateway = GatewayVerdict()
        self._replaced: ReplacedFiles | None = None  # what the last write replaced, until the gateway's verdict
        self._refused: str | None = None  # the version the gateway refused and the agent took off the volume
        self._wrote = False  # this process has written to the volume (else a refusal on record may be a past one's)
        self.status = SyncStatus(source=settings.source, started_at=time.time(), version=self._volume_version)
        self.store_health = StoreHealth(metrics.registry, "routeiq_config_sync", settings.store_breaker, log)

    def document(self, now: float) -> dict[str, object]:
        """The health document: the sync's status and the object store's (staleness, breaker)."""
        return {**self.status.document(now), "store": self.store_health.document()}

    def _read_volume_version(self) -> str | None:
        paths = self.settings.paths
        config = read_if_present(paths.config_file)
        return None if config is None else content_version(config, read_if_present(paths.candidates_file) or b"")

    async def sync_once(self) -> str:
        """Run one sync; returns the result ("applied", "unchanged") or raises SyncFailed. Status is updated."""
        now = time.time()
        self.metrics.last_attempt.set(now)
        with tracer.start_as_current_span("config_sync") as span:
            try:
                try:
                    result = await self._sync(span)
                except SyncFailed:
                    raise
                except Exception as exc:  # a fault no branch foresaw: report it and keep polling, never exit
                    log.exception("Config sync hit an unexpected error", extra={"event": "config_sync"})
                    raise SyncFailed("internal_error", f"{type(exc).__name__}: {exc}") from None
            except SyncFailed as exc:
                span.set_status(trace.StatusCode.ERROR, str(exc))
                self._record_failure(now, exc)
                raise
        self._record_success(now, result)
        return result

    async def _sync(self, span: trace.Span) -> str:
        if not self.store_health.allow():
            raise SyncFailed(
                "store_breaker_open",
                f"the object store failed {self.settings.store_breaker.failures} polls in a row; not polled for "
                f"{self.settings.store_breaker.cooldown_seconds:g} s (last: {self.store_health.breaker.last_reason})",
            )
        with tracer.start_as_current_span("fetch"):
            config_obj = await self._fetch(CONFIG_NAME, self._seen.config_etag, required=True)
            assert not isinstance(config_obj, _Missing)  # required: a missing config.yaml is a SyncFailed
            fetched = await self._fetch(CANDIDATES_NAME, self._seen.candidates_etag, required=False)
        seen = self._seen
        cand_gone = isinstance(fetched, _Missing)
        cand_obj = None if isinstance(fetched, _Missing) else fetched
        # A candidates file that was in the store and is not any more is a change too.
        cand_changed = cand_obj is not None or (cand_gone and seen.candidates_etag is not None)
        changed = config_obj is not None or cand_changed
        if changed:
            config_raw = config_obj.body if config_obj is not None else seen.config
            if cand_obj is not None:
                cand_raw: bytes | None = cand_obj.body
            elif cand_gone:
                cand_raw = self._volume_candidates()  # gone from the store: the gateway reads what the volume keeps
            else:
                cand_raw = seen.candidates
            # These are what the store holds now, valid or not: don't download them again until they change.
            self._seen = _Seen(
                config_etag=config_obj.etag if config_obj is not None else seen.config_etag,
                candidates_etag=cand_obj.etag
                if cand_obj is not None
                else (None if cand_gone else seen.candidates_etag),
                config=config_raw,
                candidates=cand_raw,
            )
            self._rejected = None
            self._refused = None  # a new upload is tried as usual
        elif self._rejected is not None:
            raise self._rejected  # the store still holds the upload we rejected: keep saying so
        config_raw, cand_raw = self._seen.config, self._seen.candidates
        assert config_raw is not None  # config.yaml is required, so the first fetch either got it or failed
        version = content_version(config_raw, cand_raw or b"")
        span.set_attribute("routeiq.config_version", version)
        if changed:
            with tracer.start_as_current_span("validate", attributes={"routeiq.config_version": version}):
                try:
                    # Off the event loop: a large file must not stall the health endpoint.
                    await asyncio.to_thread(check_config, config_raw, cand_raw)
                except ConfigError as exc:
                    self._rejected = SyncFailed("invalid", str(exc))
                    raise self._rejected from None
        # else: validated when it was fetched; it is still waiting to be written (a write failed before)
        if version == self._refused:
            # The store still holds what the gateway refused; the volume holds what it serves. Say so, quietly.
            self._refresh_gateway(version)
            return "unchanged"
        if version == self._volume_version:
            self._applied_etag = self._seen.config_etag
            if self._notify_failed:
                await self._notify_gateway(version)
            else:
                self._refresh_gateway(version)
            return self._settle(version, "unchanged")  # e.g. an agent restart: the volume already holds exactly this
        if not self._wrote and self._refused_before_restart(version):
            return "unchanged"
        with tracer.start_as_current_span("write", attributes={"routeiq.config_version": version}):
            try:
                replaced = ReplacedFiles.read(self.settings.paths, version, self._applied_etag)
                self._write(config_raw, cand_raw)
            except OSError as exc:
                raise SyncFailed("write_error", f"cannot write to {self.settings.paths.config_dir}: {exc}") from None
        self._replaced = replaced
        self._wrote = True
        self._volume_version = version
        self._applied_etag = self._seen.config_etag
        with tracer.start_as_current_span("signal", attributes={"routeiq.config_version": version}):
            await self._notify_gateway(version)
        result = self._settle(version, "applied")
        if result != "applied":
            return result
        log.info(
            "Config synced",
            extra={
                "event": "config_sync",
                "result": "applied",
                "version": version,
                "etag": self._applied_etag,
                "gateway": self._gateway.state,
            },
        )
        return "applied"

    async def _fetch(self, name: str, etag: str | None, *, required: bool) -> StoredObject | _Missing | None:
        """Conditional GET with jittered exponential retries for an unreachable or throttling store: None when
        unchanged since `etag`, MISSING when an optional object is not in the store."""
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(lambda e: isinstance(e, StoreError) and not isinstance(e, _NOT_RETRIED)),
                wait=wait_random_exponential(multiplier=0.2, max=5),
                stop=stop_after_attempt(3 if self.store_health.breaker.closed else 1),  # a probe: one try
                reraise=True,
            ):
                with attempt:
                    obj = await self.store.get(name, if_none_match=etag, max_bytes=self.settings.max_object_bytes)
        except ObjectMissing as exc:
            self.store_health.ok()  # it answered
            if required:
                raise SyncFailed(exc.reason, str(exc)) from None
            return MISSING
        except StoreError as exc:
            if exc.reason in STORE_DOWN_REASONS:
                self.store_health.failed(f"{exc.reason}: {exc}")
            else:
                self.store_health.ok()
            raise SyncFailed(exc.reason, str(exc)) from None
        self.store_health.ok()
        if obj is not None:
            self.metrics.bytes_fetched.inc(len(obj.body))
        return obj

    def _volume_candidates(self) -> bytes | None:
        return read_if_present(self.settings.paths.candidates_file)

    def _write(self, config_raw: bytes, cand_raw: bytes | None) -> None:
        paths = self.settings.paths
        if cand_raw is not None:
            atomic_write(paths.candidates_file, cand_raw)  # candidates first: config names them, not the reverse
        atomic_write(paths.config_file, config_raw)

    async def _notify_gateway(self, version: str) -> None:
        """Ask the gateway to reload, then wait (bounded) for its verdict on `version`."""
        asked_at = time.time()
        problem = signal_gateway(self.settings.paths.gateway_pidfile)
        if problem is None:
            self.metrics.signals.labels("signal", "ok").inc()
            self._notify_failed = False
            await self._await_gateway(version, asked_at)
            return
        self.metrics.signals.labels("signal", "failed").inc()
        url = self.settings.gateway_admin_url
        if url is None:
            log.warning(
                "Could not signal the gateway; it keeps its config until its next reload", extra={"reason": problem}
            )
            self._notify_failed = True
            self._set_gateway(GatewayVerdict(GATEWAY_NOT_SIGNALLED, self._gateway.loaded_version, problem))
            return
        answer = await reload_over_http(url, self.settings.gateway_admin_key)
        self.metrics.signals.labels("http", "ok" if answer.problem is None else "failed").inc()
        if answer.problem is not None:
            reason = f"{problem}; {answer.problem}"
            log.warning("Could not reach the gateway to reload", extra={"reason": reason})
            self._notify_failed = True
            self._set_gateway(GatewayVerdict(GATEWAY_NOT_SIGNALLED, self._gateway.loaded_version, reason))
            return
        self._notify_failed = False
        if answer.reloaded and answer.version == version:
            self._set_gateway(GatewayVerdict(GATEWAY_OK, answer.version))
        elif not answer.reloaded:
            self._set_gateway(GatewayVerdict(GATEWAY_REJECTED, answer.version, answer.detail or "refused"))
        else:  # reloaded, but other files than ours (a newer write raced it): the next poll settles it
            self._set_gateway(GatewayVerdict(GATEWAY_PENDING, answer.version))

    async def _await_gateway(self, version: str, since: float) -> None:
        deadline = time.monotonic() + self.settings.gateway_verdict_timeout
        run_dir = self.settings.paths.run_dir
        while True:
            verdict = verdict_from_status(read_status(run_dir), version, since)
            if verdict.state != GATEWAY_PENDING or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        self._set_gateway(verdict)  # still PENDING at the deadline: no verdict, so nothing is undone

    def _refused_before_restart(self, version: str) -> bool:
        """True when the gateway's status says it refused `version` and serves what the volume holds: this agent
        put the files back before it restarted, so writing and signalling them again would only be refused again.
        A gateway restart since then rewrites the status, and the upload is tried again."""
        verdict = verdict_from_status(read_status(self.settings.paths.run_dir), version)
        if verdict.state != GATEWAY_REJECTED or self._volume_version is None:
            return False
        if verdict.loaded_version != self._volume_version:
            return False
        self._refused = version
        self._set_gateway(verdict)
        log.error(
            "The gateway refused this version before the agent restarted; not writing it again",
            extra={
                "event": "config_sync",
                "result": GATEWAY_REJECTED,
                "version": version,
                "serving_version": verdict.loaded_version,
                "reason": verdict.reason,
            },
        )
        return True

    def _settle(self, version: str, result: str) -> str:
        """Act on the gateway's verdict on `version`, which this agent wrote: once served, there is no going back;
        once refused (over HTTP, in the status file at once, or at a later poll), put back what it replaced."""
        replaced = self._replaced
        if replaced is None or replaced.written_version != version:
            return result
        if self._gateway.state == GATEWAY_OK:
            self._replaced = None
            return result
        if self._gateway.state != GATEWAY_REJECTED:
            return result  # pending or not signalled: wait for a verdict
        log.error(
            "The gateway refused the config the agent wrote; it keeps serving its previous version",
            extra={
                "event": "config_sync",
                "result": GATEWAY_REJECTED,
                "version": version,
                "serving_version": self._gateway.loaded_version,
                "reason": self._gateway.reason,
            },
        )
        if replaced.config is None:
            self._replaced = None
            log.warning(
                "Nothing to put back on a fresh volume: the refused files stay (a gateway restart will refuse them "
                "too) until a valid upload replaces them",
                extra={"event": "config_sync", "result": "nothing_to_restore", "version": version},
            )
            return GATEWAY_REJECTED
        try:
            replaced.put_back(self.settings.paths)
        except OSError as exc:  # the refused files still stand: try again at the next poll
            raise SyncFailed(
                "restore_error", f"cannot put back the files in {self.settings.paths.config_dir}: {exc}"
            ) from None
        self._replaced = None
        self._refused = version
        self._volume_version = replaced.version
        self._applied_etag = replaced.etag
        log.warning(
            "Put back the files the gateway refused; they stay off the volume until a new upload",
            extra={
                "event": "config_sync",
                "result": "restored",
                "version": replaced.version,
                "refused_version": version,
                "reason": self._gateway.reason,
            },
        )
        return GATEWAY_REJECTED

    def _refresh_gateway(self, version: str) -> None:
        """Between writes, follow the gateway's own status (it may have restarted, or been reloaded by hand)."""
        status = read_status(self.settings.paths.run_dir)
        if status is None:
            return  # no status on this volume (e.g. reloads go over HTTP): keep the last verdict
        verdict = verdict_from_status(status, version)
        if verdict.state == GATEWAY_PENDING and self._gateway.state == GATEWAY_REJECTED:
            # still not serving it, and nothing newer was tried: the refusal stands
            verdict = dataclasses.replace(self._gateway, loaded_version=verdict.loaded_version)
        self._set_gateway(verdict)

    def _set_gateway(self, verdict: GatewayVerdict) -> None:
        self._gateway = verdict
        self.metrics.set_gateway_state(verdict.state, GATEWAY_STATES)

    def _record_success(self, now: float, result: str) -> None:
        self.status = dataclasses.replace(
            self.status,
            last_attempt_at=now,
            last_success_at=now,
            version=self._volume_version,
            etag=self._applied_etag,
            last_result=result,
            last_error=None,
            consecutive_failures=0,
            gateway=self._gateway,
        )
        self.metrics.attempts.labels(result).inc()
        self.metrics.last_success.set(now)
        self.metrics.consecutive_failures.set(0)
        if self._volume_version is not None:
            self.metrics.set_version(self._volume_version)

    def _record_failure(self, now: float, exc: SyncFailed) -> None:
        failures = self.status.consecutive_failures + 1
        self.status = dataclasses.replace(
            self.status,
            last_attempt_at=now,
            last_result=exc.reason,
            last_error=str(exc),
            consecutive_failures=failures,
            gateway=self._gateway,
        )
        self.metrics.attempts.labels(exc.reason).inc()
        self.metrics.consecutive_failures.set(failures)
        log.error(
            "Config sync failed; the files on the volume keep serving",
            extra={"event": "config_sync", "result": exc.reason, "reason": str(exc), "version": self._volume_version},
        )
