"""Experiment tracking: with MLFLOW_TRACKING_URI set, each `train` is an MLflow run (params, held-out metrics, the
artifact and its metrics file, the training data's digest), and `publish` tags that run with the model name,
version and publish time, so the lineage dataset digest -> run -> model version -> publish time is one query.
Without the variable nothing is imported: mlflow is an optional extra (`routeiq-train[mlflow]`)."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT = os.environ.get("ROUTEIQ_MLFLOW_EXPERIMENT", "routeiq-routers")
log = logging.getLogger("routeiq.train")


class TrackingError(Exception):
    pass


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise TrackingError(f"{ENV} is set but mlflow is not installed (pip install 'routeiq-train[mlflow]')") from None
    return mlflow


def log_training(report: dict[str, Any], artifact: Path, metrics_file: Path) -> str:
    """One run for one `train`; returns its run id."""
    mlflow = _mlflow()
    mlflow.set_experiment(os.environ.get("ROUTEIQ_MLFLOW_EXPERIMENT", EXPERIMENT))
    data = report["training_data"]
    with mlflow.start_run(run_name=f"{report['kind']}-seed{report['split']['seed']}") as run:
        mlflow.log_params(
            {
                "router": report["kind"],
                "seed": report["split"]["seed"],
                "holdout": report["split"]["holdout"],
                "weak_column": report["columns"]["weak"],
                "strong_column": report["columns"]["strong"],
                "data_rows": data["rows"],
                "default_threshold": report["default_threshold"],
            }
        )
        numbers = {
            k: float(v)
            for k, v in report["metrics"].items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        mlflow.log_metrics({**numbers, "fit_seconds": float(report["fit_seconds"])})
        mlflow.set_tags({"routeiq.data_digest": data["digest"], "routeiq.data_path": data.get("path", "")})
        mlflow.log_artifact(str(artifact))
        mlflow.log_artifact(str(metrics_file))
        return str(run.info.run_id)


def log_publish(run_id: str, name: str, version: str, published_at: str, registry: str, current: bool) -> None:
    """Tag the training run with what it became in the registry."""
    mlflow = _mlflow()
    client = mlflow.tracking.MlflowClient()
    for key, value in {
        "routeiq.model_name": name,
        "routeiq.model_version": version,
        "routeiq.published_at": published_at,
        "routeiq.registry": registry,
        "routeiq.set_current": str(current).lower(),
    }.items():
        client.set_tag(run_id, key, value)
