"""Write the router model of the `routeiq-auto` bench target: a built-in learned router (routeiq-train's own
fitter for KIND, e.g. `gain` or `logistic`) trained on the even rows of a routellm-mmlu shaped CSV (the bench
sends the odd rows' prompts, which it never trained on), with an unsigned manifest (the target runs the gateway
with MODEL_REQUIRE_SIGNATURE=false).

    <venv>/bin/python bench/baselines/bench_router.py MODELS_DIR NAME DATA_CSV KIND

Run with the pod's environment plus the training package (numpy, scikit-learn, joblib, routeiq_shared,
routeiq_train, routeiq_model_sync); the bench itself stays stdlib-only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import joblib
from routeiq_model_sync.registry import build_manifest
from routeiq_shared.atomic import atomic_write
from routeiq_shared.routing_models import RouterArtifact
from routeiq_train.data import load_dataset
from routeiq_train.routers import FITTERS
from routeiq_train.splits import subset


def main(models_dir: Path, name: str, data: Path, kind: str) -> None:
    import numpy as np

    dataset = load_dataset(data)
    rows = subset(dataset.rows, np.arange(0, len(dataset.rows.texts), 2))
    artifact = RouterArtifact(kind=kind, scorer=FITTERS[kind](rows, 0), default_threshold=0.5)
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{name}.pkl"
    joblib.dump(artifact, path)
    manifest = build_manifest(name, f"bench-{kind}", path, {}, dataset.digest, len(rows.texts))
    atomic_write(models_dir / f"{name}.manifest.json", manifest.to_json())


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4])
