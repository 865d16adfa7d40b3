"""Write the router model of the `routeiq-auto` bench target: a scikit-learn text classifier (TF-IDF + logistic
regression, the legacy predict() kind of artifact) choosing between two candidate groups, with an unsigned
manifest (the target runs the gateway with MODEL_REQUIRE_SIGNATURE=false).

    <venv>/bin/python bench/baselines/bench_router.py MODELS_DIR NAME WEAK STRONG

Run with the pod's environment (scikit-learn, joblib, routeiq_shared, routeiq_model_sync); the bench itself
stays stdlib-only.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import joblib
from routeiq_model_sync.registry import build_manifest
from routeiq_shared.atomic import atomic_write
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

WORDS = ["what", "is", "the", "capital", "of", "france", "prove", "derive", "theorem"]


def main(models_dir: Path, name: str, weak: str, strong: str) -> None:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(2000)] + WORDS
    texts = [" ".join(rng.choices(words, k=rng.randint(4, 40))) for _ in range(2000)]
    labels = [strong if ("prove" in t or "theorem" in t) else weak for t in texts]
    pipeline = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression(max_iter=300))]).fit(texts, labels)
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{name}.pkl"
    joblib.dump(pipeline, path)
    manifest = build_manifest(name, "bench", path, {}, "sha256:bench", len(texts))
    atomic_write(models_dir / f"{name}.manifest.json", manifest.to_json())


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:5])
