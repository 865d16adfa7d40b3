"""What the gateway says about the config it serves, after start and after every reload attempt: the status file
config-sync reads back (routeiq_shared.gateway_files), and a loud warning plus a gauge while auth is off."""

from __future__ import annotations

import logging
from pathlib import Path

from routeiq_shared.gateway_files import write_status

from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.state import GatewayState

log = logging.getLogger("routeiq.gateway")


class StatusReport:
    def __init__(self, run_dir: Path, metrics: GatewayMetrics | None = None) -> None:
        self.run_dir = run_dir
        self.metrics = metrics

    def loaded(self, state: GatewayState, trigger: str) -> None:
        auth_off = state.master_key is None
        if self.metrics is not None:
            self.metrics.auth_disabled.set(1 if auth_off else 0)
        if auth_off:
            log.warning(
                "No master key is configured: the API answers every client without a key",
                extra={"event": "auth_disabled", "trigger": trigger, "version": state.version},
            )
        self._write(state.version, trigger, "success", state.version, None, None, auth_off)

    def refused(self, current: GatewayState | None, trigger: str, exc: Exception) -> None:
        """`exc`: a ConfigError carries the refused files' version (None when they could not be read)."""
        loaded = current.version if current is not None else None
        auth_off = current is not None and current.master_key is None
        attempted = getattr(exc, "version", None)
        self._write(loaded, trigger, "failure", attempted, str(exc), getattr(exc, "path", None), auth_off)

    def _write(
        self,
        loaded_version: str | None,
        trigger: str,
        result: str,
        attempted_version: str | None,
        error: str | None,
        key_path: str | None,
        auth_disabled: bool,
    ) -> None:
        try:
            write_status(
                self.run_dir,
                loaded_version=loaded_version,
                trigger=trigger,
                result=result,
                attempted_version=attempted_version,
                error=error,
                key_path=key_path,
                auth_disabled=auth_disabled,
            )
        except OSError as exc:  # the run volume is a courtesy to config-sync: serving goes on without it
            log.warning("Cannot write the gateway status file", extra={"reason": str(exc), "dir": str(self.run_dir)})
