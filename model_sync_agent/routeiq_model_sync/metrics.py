"""The agent's Prometheus metrics, in a registry of its own (made at start-up, not at import)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ModelSyncMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.downloads = Counter(
            "routeiq_model_sync_downloads",
            "Model updates by result (installed, or why not)",
            ["name", "result"],
            registry=r,
        )
        self.bytes = Counter("routeiq_model_sync_bytes", "Artifact bytes downloaded", registry=r)
        self.lock_waits = Counter("routeiq_model_sync_lock_waits", "Download permits waited for", registry=r)
        self.lock_wait_seconds = Histogram(
            "routeiq_model_sync_lock_wait_seconds",
            "Time waiting for a download permit",
            buckets=(0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.verification_failures = Counter(
            "routeiq_model_sync_verification_failures", "Artifacts refused, by reason", ["reason"], registry=r
        )
        self.redis_fallbacks = Counter(
            "routeiq_model_sync_redis_fallbacks", "Downloads started after a random delay, without a permit", registry=r
        )
        self.version = Gauge(
            "routeiq_model_sync_version_info",
            "Installed model version (value is always 1)",
            ["name", "version"],
            registry=r,
        )
        self.last_success = Gauge(
            "routeiq_model_sync_last_success_timestamp_seconds", "When a model was last in sync", ["name"], registry=r
        )

    def set_version(self, name: str, version: str) -> None:
        for labels in [s.labels for m in self.version.collect() for s in m.samples if s.labels.get("name") == name]:
            if labels["version"] != version:
                self.version.remove(name, labels["version"])
        self.version.labels(name, version).set(1)
