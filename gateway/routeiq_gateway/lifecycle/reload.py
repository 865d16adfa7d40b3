"""SIGHUP / admin reload: read both files, build a whole new state, swap the reference — or keep the old one.

A bad file never replaces a good state: the reason is logged with the key's path and counted as a failure.
Reloads are serialised, so a burst of SIGHUPs cannot interleave two builds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from routeiq_shared.config_schema import ConfigError

from routeiq_gateway.audit.record import Actor, signal_actor
from routeiq_gateway.audit.trail import AuditTrail
from routeiq_gateway.lifecycle.status_report import StatusReport
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.state import GatewayState, StateRef, load_state_from_files

log = logging.getLogger("routeiq.gateway.reload")


class Reloader:
    def __init__(
        self,
        ref: StateRef,
        config_path: Path,
        candidates_path: Path,
        metrics: GatewayMetrics,
        prepare: Callable[[GatewayState], None],
        after_swap: Callable[[], Awaitable[None]] | None = None,
        report: StatusReport | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        self.ref = ref
        self.config_path = config_path
        self.candidates_path = candidates_path
        self.metrics = metrics
        # Runs in the worker thread before the swap: e.g. load LiteLLM when the new config first needs it.
        self.prepare = prepare
        # Runs on the event loop after a successful swap: e.g. load the router models the new config names.
        self.after_swap = after_swap
        self.report = report  # the status file config-sync reads back, and the auth-disabled warning
        self.audit = audit  # one record per reload, with its result
        self._lock = asyncio.Lock()

    def _build(self) -> GatewayState:
        state = load_state_from_files(self.config_path, self.candidates_path, int(time.time()))
        self.prepare(state)
        return state

    async def reload(self, trigger: str, actor: Actor | None = None, trace_id: str | None = None) -> tuple[bool, str]:
        """`actor` is who asked (an admin API caller); a signal's trigger names it otherwise."""
        who = actor or signal_actor(trigger)
        async with self._lock:
            old = self.ref.current
            try:
                new = await asyncio.to_thread(self._build)
            except (ConfigError, OSError) as exc:
                self.metrics.reloads.labels("failure").inc()
                log.error(
                    "Config reload failed; keeping version %s",
                    old.version,
                    extra={
                        "event": "config_reload",
                        "result": "failure",
                        "trigger": trigger,
                        "version": old.version,
                        "reason": str(exc),
                        "key_path": getattr(exc, "path", None),
                    },
                )
                if self.report is not None:
                    self.report.refused(old, trigger, exc)
                self._audit(who, old.version, None, "refused", trace_id)
                return False, str(exc)
            self.ref.current = new
            self.metrics.reloads.labels("success").inc()
            self.metrics.set_config_version(new.version, time.time())
            log.info(
                "Config reloaded",
                extra={
                    "event": "config_reload",
                    "result": "success",
                    "trigger": trigger,
                    "version": new.version,
                    "previous_version": old.version,
                    "model_groups": len(new.groups),
                    "deployments": sum(len(g) for g in new.groups.values()),
                    # the version digests the files, not the secrets: this says which secret files were re-read
                    "secret_files": list(new.secret_files),
                },
            )
            if self.report is not None:
                self.report.loaded(new, trigger)
            result = "reloaded" if new.version != old.version else "unchanged"
            self._audit(who, old.version, new.version, result, trace_id)
        if self.after_swap is not None:
            await self.after_swap()
        return True, "reloaded" if new.version != old.version else "unchanged"

    def _audit(self, actor: Actor, before: str, after: str | None, result: str, trace_id: str | None) -> None:
        if self.audit is not None:  # config versions are content digests: the record holds no config text
            self.audit.record(
                actor,
                "config.reload",
                "config",
                result=result,
                before_digest=before,
                after_digest=after,
                trace_id=trace_id,
            )
