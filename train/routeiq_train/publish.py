"""`routeiq-train publish`: the artifact, its held-out metrics, the training data's digest and row count, signed
into the model registry through routeiq_model_sync's registry code, behind a quality gate."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import orjson
from routeiq_model_sync import registry
from routeiq_shared.manifest import ManifestError
from routeiq_shared.objectstore import ObjectStore, StoreError, open_store
from routeiq_shared.signing import KeyFileError, load_private_key

from . import tracking

GATE_METRIC = "savings_at_95"
log = logging.getLogger("routeiq.train")


class PublishRefused(Exception):
    pass


def read_report(artifact: Path) -> dict[str, object]:
    from .cli import metrics_path

    path = metrics_path(artifact)
    try:
        report = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise PublishRefused(f"{path} is missing: publish what `routeiq-train train` wrote") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise PublishRefused(f"{path}: unreadable ({exc})") from None
    if not isinstance(report, dict) or not isinstance(report.get("metrics"), dict):
        raise PublishRefused(f"{path}: no metrics object")
    return report


def manifest_metrics(report: dict[str, object]) -> dict[str, float]:
    """The held-out metrics as the manifest's numbers (nulls and non-numbers left out), plus the threshold."""
    raw = dict(report["metrics"])  # type: ignore[call-overload]
    raw["default_threshold"] = report.get("default_threshold")
    out: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[str(key)] = float(value)
    return out


async def current_metric(store: ObjectStore, name: str) -> tuple[str, float] | None:
    """The CURRENT version and its gate metric; None when there is no CURRENT or it carries no such metric."""
    try:
        current = await registry.read_current(store, name)
    except registry.RegistryError as exc:
        if exc.reason == "no_current":
            return None
        raise
    manifest, _ = await registry.read_manifest(store, name, current.version)
    value = manifest.metrics.get(GATE_METRIC)
    return None if value is None else (current.version, float(value))


async def run_publish(args: argparse.Namespace) -> int:
    if not args.artifact.is_file():
        sys.stderr.write(f"routeiq-train publish: {args.artifact}: no such file\n")
        return 2
    try:
        report = read_report(args.artifact)
    except PublishRefused as exc:
        sys.stderr.write(f"routeiq-train publish: {exc}\n")
        return 2
    metrics = manifest_metrics(report)
    data = report.get("training_data") or {}
    digest = str(data.get("digest") or "unknown") if isinstance(data, dict) else "unknown"
    rows = int(data.get("rows") or 0) if isinstance(data, dict) else 0
    store = open_store(args.registry)
    try:
        key = load_private_key(args.key)
        current = await current_metric(store, args.name)
        new = metrics.get(GATE_METRIC)
        if current is not None and not args.force and (new is None or new < current[1]):
            shown = "none" if new is None else f"{new:.4f}"
            sys.stderr.write(
                f"routeiq-train publish: refused: held-out {GATE_METRIC} {shown} is worse than CURRENT "
                f"{args.name} {current[0]} ({current[1]:.4f}); --force publishes anyway\n"
            )
            return 1
        manifest = registry.build_manifest(args.name, args.version, args.artifact, metrics, digest, rows)
        signed = await registry.publish(store, manifest, args.artifact, key, set_current=args.set_current)
    except (registry.RegistryError, ManifestError, StoreError, KeyFileError, OSError, ValueError) as exc:
        sys.stderr.write(f"routeiq-train publish: {exc}\n")
        return 1
    finally:
        await store.close()
    log.info(
        "router published",
        extra={"event": "router_published", "model": signed.name, "version": signed.version, GATE_METRIC: new},
    )
    run_id = report.get("mlflow_run_id")
    if tracking.enabled() and isinstance(run_id, str):
        try:
            tracking.log_publish(
                run_id, signed.name, signed.version, signed.created_at, args.registry, args.set_current
            )
        except Exception as exc:  # noqa: BLE001 - the model is published; a tracking failure must not hide that
            sys.stderr.write(f"routeiq-train publish: published, but MLflow was not updated: {exc}\n")
    now = " (now CURRENT)" if args.set_current else ""
    sys.stdout.write(f"published {signed.name} {signed.version}, sha256 {signed.artifact.sha256}{now}\n")
    return 0
