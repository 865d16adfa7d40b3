"""routeiq-train end to end as a user runs it (the console script, real files): train on a sample, evaluate with
--scores, then publish to a file:// registry signed with a key from `routeiq-model-sync keygen`, behind the gate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from harness.router_artifacts import keygen
from harness.train_data import make_rows, mmlu_csv, run_train, write_csv
from routeiq_shared.manifest import Manifest, sha256_file
from routeiq_shared.signing import load_public_key, verify_manifest
from routeiq_train.metrics import router_metrics

pytestmark = pytest.mark.integration


def test_train_evaluate_publish_with_quality_gate(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "sample.csv", make_rows(300, seed=5))
    out = tmp_path / "router.joblib"
    done = run_train("train", "--router", "gain", "--data", data, "--out", out, "--seed", "3")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "router.joblib.metrics.json").read_text())
    held = report["metrics"]
    assert report["kind"] == "gain" and report["training_data"]["rows"] == 300
    assert report["training_data"]["digest"] == "sha256:" + sha256_file(data)[0]
    assert report["split"]["held_out_rows"] == held["rows"] == 60  # 20%, stratified: 20% of each subject
    assert held["savings_at_95"] == pytest.approx(1 - held["strong_share_at_95"])
    assert report["default_threshold"] == held["threshold_at_95"] == held["threshold"]

    # evaluate: JSON on the last line; --scores gives one score per row, in order, that re-derive the metrics
    scores_csv = tmp_path / "scores.csv"
    done = run_train("evaluate", "--artifact", out, "--data", data, "--scores", scores_csv)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    for key in (
        "strong_share_at_95",
        "savings_at_95",
        "apgr",
        "rows",
        "weak_accuracy",
        "strong_accuracy",
        "quality_at_threshold",
        "decision_p50_ms",
        "decision_p99_ms",
    ):
        assert key in metrics, key
    assert metrics["rows"] == 300
    with scores_csv.open() as fh:
        scores = np.array([float(r["score"]) for r in csv.DictReader(fh)])
    with data.open() as fh:
        rows = list(csv.DictReader(fh))
    weak = np.array([r["mixtral_8x7b_correct"] == "True" for r in rows])
    strong = np.array([r["gpt_4_1106_correct"] == "True" for r in rows])
    again = router_metrics(scores, weak, strong)
    assert again["strong_share_at_95"] == pytest.approx(metrics["strong_share_at_95"])
    assert again["apgr"] == pytest.approx(metrics["apgr"])
    assert metrics["savings_at_95"] > 0.5  # the sample's gain is learnable; random would save about a third
    chosen = np.where(scores >= metrics["threshold"], strong, weak).mean()
    assert chosen == pytest.approx(metrics["quality_at_threshold"])

    # publish v1 as CURRENT: the manifest carries the held-out metrics, the data digest and row count, signed
    keys = keygen(tmp_path / "keys")
    registry_dir = tmp_path / "registry"
    registry_dir.mkdir()
    registry = f"file://{registry_dir}/"
    pub = ("publish", "--artifact", out, "--name", "mmlu-router", "--registry", registry, "--key", keys.private)
    done = run_train(*pub, "--version", "v1", "--set-current")
    assert done.returncode == 0, done.stderr
    manifest = Manifest.from_json((registry_dir / "mmlu-router/v1/manifest.json").read_bytes())
    verify_manifest(manifest, load_public_key(keys.public))
    assert manifest.metrics["savings_at_95"] == pytest.approx(held["savings_at_95"])
    assert manifest.metrics["default_threshold"] == pytest.approx(report["default_threshold"])
    assert manifest.training_data.digest == report["training_data"]["digest"]
    assert manifest.training_data.rows == 300
    assert manifest.artifact.sha256 == sha256_file(out)[0]
    assert "v1" in (registry_dir / "mmlu-router/CURRENT").read_text()

    # a worse model is refused by the gate, and nothing of it lands; --force publishes it
    worse = tmp_path / "worse.joblib"
    worse.write_bytes(out.read_bytes())
    report["metrics"]["savings_at_95"] = held["savings_at_95"] - 0.1
    (tmp_path / "worse.joblib.metrics.json").write_text(json.dumps(report))
    pub_worse = (
        "publish",
        "--artifact",
        worse,
        "--name",
        "mmlu-router",
        "--registry",
        registry,
        "--key",
        keys.private,
        "--version",
        "v2",
    )
    done = run_train(*pub_worse, "--set-current")
    assert done.returncode == 1
    assert "refused" in done.stderr and "savings_at_95" in done.stderr and "Traceback" not in done.stderr
    assert not (registry_dir / "mmlu-router/v2").exists()
    assert "v1" in (registry_dir / "mmlu-router/CURRENT").read_text()
    done = run_train(*pub_worse, "--force")
    assert done.returncode == 0, done.stderr
    assert (registry_dir / "mmlu-router/v2/manifest.json").exists()
    assert "v1" in (registry_dir / "mmlu-router/CURRENT").read_text()  # not --set-current: CURRENT stays

    # an artifact published without its metrics file is refused up front
    (tmp_path / "worse.joblib.metrics.json").unlink()
    done = run_train(*pub_worse[:-1], "v3", "--force")
    assert done.returncode == 2 and "metrics.json is missing" in done.stderr


def test_bad_input_exits_2_without_traceback(tmp_path: Path) -> None:
    """The console script itself (not only main()): one line, exit 2."""
    data = write_csv(tmp_path / "d.csv", make_rows(30), ("subject", "prompt"))
    done = run_train("train", "--router", "knn", "--data", data, "--out", tmp_path / "a.joblib")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "missing column(s) mixtral_8x7b_correct, gpt_4_1106_correct" in done.stderr


@pytest.mark.parametrize("kind", ["mf", "knn", "boost"])
def test_real_mmlu_sample_trains_and_evaluates(tmp_path: Path, kind: str) -> None:
    source = mmlu_csv()
    if source is None:
        pytest.skip("../shared/data/routellm-mmlu/train.csv is not here")
    with source.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[::32]  # ~300 rows over all 57 subjects (the file is sorted by subject)
    data = write_csv(tmp_path / "mmlu.csv", rows)
    out = tmp_path / f"{kind}.joblib"
    done = run_train("train", "--router", kind, "--data", data, "--out", out)
    assert done.returncode == 0, done.stderr
    held = json.loads(done.stdout.strip().splitlines()[-1])["held_out"]
    assert 0.0 <= held["strong_share_at_95"] <= 1.0 and held["rows"] >= 57
    done = run_train("evaluate", "--artifact", out, "--data", data)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert metrics["rows"] == len(rows) and metrics["kind"] == kind
    assert metrics["weak_accuracy"] < metrics["strong_accuracy"]  # Mixtral 68%, GPT-4 81% over the file
