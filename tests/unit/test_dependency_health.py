"""GET /health/dependencies' document (lifecycle/dependency_health.py): breakers, deployments not closed, the age
of the config and models on the volume, and the sync agents' status files read as of now."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orjson
from routeiq_gateway.lifecycle.dependency_health import DependencyHealth
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.routing.runtime import RuntimeState
from routeiq_shared.breaker import BreakerPolicy

NOW = 1_800_000_000.0


def _volume(tmp_path: Path) -> tuple[Path, Path, Path]:
    config, models, run = tmp_path / "config", tmp_path / "models", tmp_path / "run"
    for d in (config, models, run):
        d.mkdir()
    (config / "config.yaml").write_text("model_list: []\n")
    os.utime(config / "config.yaml", (NOW - 120, NOW - 120))
    for name in ("router.manifest.json", "router.previous.manifest.json"):
        (models / name).write_text("{}")
        os.utime(models / name, (NOW - 30, NOW - 30))
    return config / "config.yaml", models, run


def test_ok_then_degraded_with_staleness_counted_to_now(tmp_path: Path) -> None:
    config, models, run = _volume(tmp_path)
    metrics = GatewayMetrics()
    redis = metrics.breaker("redis", lambda: BreakerPolicy(1, 1.0), logging.getLogger("t"))
    runtime = RuntimeState()
    health = DependencyHealth(config, models, run, metrics.dependency_breakers, runtime, clock=lambda: NOW)

    doc = health.document(health._files())
    assert doc["status"] == "ok" and doc["breakers"] == {"redis": "closed"}
    assert doc["config"] == {"file_age_seconds": 120.0}
    assert doc["models"] == {"installed": {"router": {"manifest_age_seconds": 30.0}}}  # not the kept previous

    status = {"status": "stale", "store": {"breaker": "open", "last_ok_at": NOW - 100, "staleness_seconds": 90}}
    (run / "config-sync.status.json").write_bytes(orjson.dumps({**status, "written_at": NOW - 10}))
    (run / "model-sync.status.json").write_bytes(b"not json")  # a torn or foreign file is ignored, not fatal
    redis.failure("down")
    runtime.failed("dep-1", allowed_fails=0, cooldown=10)
    doc = health.document(health._files())
    assert doc["status"] == "degraded" and doc["breakers"] == {"redis": "open"}
    assert doc["deployments_not_closed"] == [{"deployment_id": "dep-1", "model": "", "breaker": "open"}]
    sync = doc["config"]["sync"]
    assert sync["store"]["staleness_seconds"] == 100.0  # as of now, not as of the report (90)
    assert sync["report_age_seconds"] == 10.0 and sync["status"] == "stale"
    assert "sync" not in doc["models"]
