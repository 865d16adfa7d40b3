"""One sync: fetch both files by ETag, validate them together, write them atomically, tell the gateway.

The agent never deletes or truncates the files on the volume: a rejected upload, an unreachable store or a
failed write leaves the last good files serving. What happened is kept in an immutable `SyncStatus`, swapped
whole after every attempt, which the health endpoint serves as it is.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from routeiq_shared.atomic import atomic_write
from routeiq_shared.config_schema import ConfigError, content_version, load_config
from routeiq_shared.objectstore import ObjectMissing, ObjectStore, ObjectTooLarge, StoredObject, StoreError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from .metrics import AgentMetrics
from .notify import reload_over_http, signal_gateway
from .settings import CANDIDATES_NAME, CONFIG_NAME, AgentSettings

log = logging.getLogger("routeiq.config_sync")
# Store errors a retry cannot cure within one sync.
_NOT_RETRIED = (ObjectMissing, ObjectTooLarge)
tracer = trace.get_tracer("routeiq.config_sync")


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

    @property
    def synced(self) -> bool:
        return self.last_success_at is not None

    def document(self, now: float) -> dict[str, object]:
        if not self.synced:
            status = "starting" if self.consecutive_failures == 0 else "failing"
        else:
            status = "ok" if self.consecutive_failures == 0 else "stale"
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
    def __init__(
        self, settings: AgentSettings, store: ObjectStore, metrics: AgentMetrics, env: Mapping[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.env = os.environ if env is None else env
        self._seen = _Seen()
        self._rejected: SyncFailed | None = None
        self._volume_version = self._read_volume_version()
        self.status = SyncStatus(source=settings.source, started_at=time.time(), version=self._volume_version)

    def _read_volume_version(self) -> str | None:
        paths = self.settings.paths
        try:
            config = paths.config_file.read_bytes()
        except FileNotFoundError:
            return None
        candidates = paths.candidates_file.read_bytes() if paths.candidates_file.exists() else b""
        return content_version(config, candidates)

    async def sync_once(self) -> str:
        """Run one sync; returns the result ("applied", "unchanged") or raises SyncFailed. Status is updated."""
        now = time.time()
        self.metrics.last_attempt.set(now)
        with tracer.start_as_current_span("config_sync") as span:
            try:
                result = await self._sync(span)
            except SyncFailed as exc:
                span.set_status(trace.StatusCode.ERROR, str(exc))
                self._record_failure(now, exc)
                raise
        self._record_success(now, result)
        return result

    async def _sync(self, span: trace.Span) -> str:
        with tracer.start_as_current_span("fetch"):
            config_obj = await self._fetch(CONFIG_NAME, self._seen.config_etag, required=True)
            fetched = await self._fetch(CANDIDATES_NAME, self._seen.candidates_etag, required=False)
        seen = self._seen
        cand_gone = isinstance(fetched, _Missing)
        cand_obj = None if isinstance(fetched, _Missing) else fetched
        # A candidates file that was in the store and is not any more is a change too.
        cand_changed = cand_obj is not None or (cand_gone and seen.candidates_etag is not None)
        if config_obj is None and not cand_changed:
            if self._rejected is not None:
                raise self._rejected  # the store still holds the upload we rejected: keep saying so
            return "unchanged"
        config_raw = config_obj.body if config_obj is not None else seen.config
        if cand_obj is not None:
            cand_raw: bytes | None = cand_obj.body
        elif cand_gone:
            cand_raw = self._volume_candidates()  # gone from the store: the gateway reads what the volume keeps
        else:
            cand_raw = seen.candidates
        assert config_raw is not None  # config.yaml is required, so the first fetch either got it or failed
        # These are what the store holds now, valid or not: don't download them again until they change.
        self._seen = _Seen(
            config_etag=config_obj.etag if config_obj is not None else seen.config_etag,
            candidates_etag=cand_obj.etag if cand_obj is not None else (None if cand_gone else seen.candidates_etag),
            config=config_raw,
            candidates=cand_raw,
        )
        self._rejected = None
        version = content_version(config_raw, cand_raw or b"")
        span.set_attribute("routeiq.config_version", version)
        with tracer.start_as_current_span("validate", attributes={"routeiq.config_version": version}):
            try:
                load_config(config_raw, cand_raw, self.env)
            except ConfigError as exc:
                self._rejected = SyncFailed("invalid", str(exc))
                raise self._rejected from None
        if version == self._volume_version:
            return "unchanged"  # e.g. an agent restart: the volume already holds exactly this
        with tracer.start_as_current_span("write", attributes={"routeiq.config_version": version}):
            try:
                self._write(config_raw, cand_raw)
            except OSError as exc:
                raise SyncFailed("write_error", f"cannot write to {self.settings.paths.config_dir}: {exc}") from None
        self._volume_version = version
        with tracer.start_as_current_span("signal", attributes={"routeiq.config_version": version}):
            await self._notify_gateway()
        log.info(
            "Config synced",
            extra={"event": "config_sync", "result": "applied", "version": version, "etag": self._seen.config_etag},
        )
        return "applied"

    async def _fetch(self, name: str, etag: str | None, *, required: bool) -> StoredObject | _Missing | None:
        """Conditional GET with jittered exponential retries for an unreachable or throttling store: None when
        unchanged since `etag`, MISSING when an optional object is not in the store."""
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(lambda e: isinstance(e, StoreError) and not isinstance(e, _NOT_RETRIED)),
                wait=wait_random_exponential(multiplier=0.2, max=5),
                stop=stop_after_attempt(3),
                reraise=True,
            ):
                with attempt:
                    obj = await self.store.get(name, if_none_match=etag, max_bytes=self.settings.max_object_bytes)
        except ObjectMissing as exc:
            if required:
                raise SyncFailed(exc.reason, str(exc)) from None
            return MISSING
        except StoreError as exc:
            raise SyncFailed(exc.reason, str(exc)) from None
        if obj is not None:
            self.metrics.bytes_fetched.inc(len(obj.body))
        return obj

    def _volume_candidates(self) -> bytes | None:
        try:
            return self.settings.paths.candidates_file.read_bytes()
        except FileNotFoundError:
            return None

    def _write(self, config_raw: bytes, cand_raw: bytes | None) -> None:
        paths = self.settings.paths
        if cand_raw is not None:
            atomic_write(paths.candidates_file, cand_raw)  # candidates first: config names them, not the reverse
        atomic_write(paths.config_file, config_raw)

    async def _notify_gateway(self) -> None:
        problem = signal_gateway(self.settings.paths.gateway_pidfile)
        if problem is None:
            self.metrics.signals.labels("signal", "ok").inc()
            return
        self.metrics.signals.labels("signal", "failed").inc()
        url = self.settings.gateway_admin_url
        if url is None:
            log.warning(
                "Could not signal the gateway; it keeps its config until its next reload", extra={"reason": problem}
            )
            return
        http_problem = await reload_over_http(url, self.settings.gateway_admin_key)
        self.metrics.signals.labels("http", "ok" if http_problem is None else "failed").inc()
        if http_problem is not None:
            log.warning("Could not reach the gateway to reload", extra={"reason": f"{problem}; {http_problem}"})

    def _record_success(self, now: float, result: str) -> None:
        self.status = dataclasses.replace(
            self.status,
            last_attempt_at=now,
            last_success_at=now,
            version=self._volume_version,
            etag=self._seen.config_etag,
            last_result=result,
            last_error=None,
            consecutive_failures=0,
        )
        self.metrics.attempts.labels(result).inc()
        self.metrics.last_success.set(now)
        self.metrics.consecutive_failures.set(0)
        if self._volume_version is not None:
            self.metrics.set_version(self._volume_version)

    def _record_failure(self, now: float, exc: SyncFailed) -> None:
        failures = self.status.consecutive_failures + 1
        self.status = dataclasses.replace(
            self.status, last_attempt_at=now, last_result=exc.reason, last_error=str(exc), consecutive_failures=failures
        )
        self.metrics.attempts.labels(exc.reason).inc()
        self.metrics.consecutive_failures.set(failures)
        log.error(
            "Config sync failed; the files on the volume keep serving",
            extra={"event": "config_sync", "result": exc.reason, "reason": str(exc), "version": self._volume_version},
        )
