"""With MLFLOW_TRACKING_URI set (a local store), `train` logs a run and `publish` tags it with what it became."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from harness.processes import child_env
from harness.router_artifacts import keygen
from harness.sidecar_process import venv_script
from harness.train_data import make_rows, write_csv

pytestmark = pytest.mark.integration
mlflow = pytest.importorskip("mlflow")


def test_train_and_publish_are_tracked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "mlruns"
    # a local file store: mlflow-skinny has no database backend, and MLflow 3 wants the file store opted into
    local = {"MLFLOW_TRACKING_URI": store.as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}
    env = child_env({**local, "ROUTEIQ_MLFLOW_EXPERIMENT": "routers-test"})
    for key, value in local.items():
        monkeypatch.setenv(key, value)

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        argv = [str(venv_script("routeiq-train")), *(str(a) for a in args)]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)

    data = write_csv(tmp_path / "d.csv", make_rows(200, seed=9))
    out = tmp_path / "r.joblib"
    done = run("train", "--router", "logistic", "--data", data, "--out", out, "--seed", "5")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.joblib.metrics.json").read_text())
    run_id = report["mlflow_run_id"]

    keys = keygen(tmp_path / "keys")
    (tmp_path / "reg").mkdir()
    registry = f"file://{tmp_path / 'reg'}/"
    done = run("publish", "--artifact", out, "--name", "r", "--version", "v1", "--registry", registry,
               "--key", keys.private, "--set-current")  # fmt: skip
    assert done.returncode == 0, done.stderr

    mlflow.set_tracking_uri(store.as_uri())
    logged = mlflow.tracking.MlflowClient().get_run(run_id)
    assert logged.data.params["router"] == "logistic" and logged.data.params["seed"] == "5"
    assert logged.data.metrics["savings_at_95"] == pytest.approx(report["metrics"]["savings_at_95"])
    tags = logged.data.tags
    assert tags["routeiq.data_digest"] == report["training_data"]["digest"]
    assert tags["routeiq.model_name"] == "r" and tags["routeiq.model_version"] == "v1"
    manifest = json.loads((tmp_path / "reg/r/v1/manifest.json").read_text())
    assert tags["routeiq.published_at"] == manifest["created_at"]
    names = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run_id)}
    assert names == {"r.joblib", "r.joblib.metrics.json"}
