"""The agent's Prometheus metrics, in a registry of its own (made at start-up, not at import)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class AgentMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.attempts = Counter(
            "routeiq_config_sync_attempts",
            "Sync attempts by result (applied, unchanged, or why not)",
            ["result"],
            registry=r,
        )
        self.last_success = Gauge(
            "routeiq_config_sync_last_success_timestamp_seconds", "When a sync last succeeded", registry=r
        )
        self.last_attempt = Gauge(
            "routeiq_config_sync_last_attempt_timestamp_seconds", "When a sync last ran", registry=r
        )
        self.consecutive_failures = Gauge(
            "routeiq_config_sync_consecutive_failures", "Failed syncs since the last success", registry=r
        )
        self.signals = Counter(
            "routeiq_config_sync_reload_signals",
            "Reload requests sent to the gateway",
            ["method", "result"],
            registry=r,
        )
        self.bytes_fetched = Counter("routeiq_config_sync_bytes_fetched", "Bytes downloaded from the store", registry=r)
        self.info = Gauge(
            "routeiq_config_sync_info", "The version on the volume (value is always 1)", ["version"], registry=r
        )

        self.gateway_state = Gauge(
            "routeiq_config_sync_gateway_state",
            "What the gateway made of the files on the volume: 1 for the current state "
            "(ok, rejected_by_gateway, pending, not_signalled, unknown)",
            ["state"],
            registry=r,
        )

    def set_gateway_state(self, state: str, states: tuple[str, ...]) -> None:
        for each in states:
            self.gateway_state.labels(each).set(1 if each == state else 0)

    def set_version(self, version: str) -> None:
        self.info.clear()
        self.info.labels(version).set(1)
