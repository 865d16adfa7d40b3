"""Scoring a dataset with an artifact, its quality metrics, and its decision latency per prompt."""

from __future__ import annotations

import math
import time
from pathlib import Path

import joblib
import numpy as np
from routeiq_shared.routing_models import RouterArtifact
from threadpoolctl import threadpool_limits

from .metrics import quality_at_threshold, router_metrics
from .routers import TrainingSet

BATCH = 512
LATENCY_SAMPLE = 300  # prompts timed one by one


class ArtifactError(Exception):
    pass


def load_artifact(path: Path) -> RouterArtifact:
    try:
        obj = joblib.load(path)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - unpickling may raise anything; it is one clear error to the user
        raise ArtifactError(f"{path}: not a loadable joblib artifact ({type(exc).__name__})") from None
    if not isinstance(obj, RouterArtifact):
        raise ArtifactError(
            f"{path}: holds a {type(obj).__name__}, not a RouterArtifact (a legacy estimator has no score to evaluate)"
        )
    return obj


def score_all(artifact: RouterArtifact, texts: list[str]) -> np.ndarray:
    parts = [
        np.asarray(artifact.scorer.score(texts[i : i + BATCH]), dtype=np.float64) for i in range(0, len(texts), BATCH)
    ]
    scores = np.concatenate(parts)
    if scores.shape != (len(texts),) or not np.all(np.isfinite(scores)):
        raise ArtifactError("the scorer returned scores of the wrong shape or non-finite values")
    return scores


def decision_latency_ms(artifact: RouterArtifact, texts: list[str], seed: int = 0) -> tuple[float, float]:
    """p50 and p99 of one `score([prompt])` call, on one BLAS thread (as the gateway scores one prompt: more
    threads only fight over the cores for a matrix this small)."""
    rng = np.random.default_rng(seed)
    sample = [texts[i] for i in rng.choice(len(texts), size=min(LATENCY_SAMPLE, len(texts)), replace=False)]
    timings = []
    with threadpool_limits(limits=1):
        artifact.scorer.score(sample[:1])  # warm caches once
        for text in sample:
            start = time.perf_counter()
            artifact.scorer.score([text])
            timings.append((time.perf_counter() - start) * 1000.0)
    return float(np.percentile(timings, 50)), float(np.percentile(timings, 99))


def evaluate(
    artifact: RouterArtifact, data: TrainingSet, *, latency: bool = True
) -> tuple[dict[str, float | None], np.ndarray]:
    scores = score_all(artifact, data.texts)
    metrics: dict[str, float | None] = dict(router_metrics(scores, data.weak, data.strong))
    quality, share = quality_at_threshold(scores, data.weak, data.strong, artifact.default_threshold)
    metrics["threshold"] = artifact.default_threshold
    metrics["quality_at_threshold"] = quality
    metrics["strong_share_at_threshold"] = share
    if latency:
        p50, p99 = decision_latency_ms(artifact, data.texts)
        metrics["decision_p50_ms"] = p50
        metrics["decision_p99_ms"] = p99
    # JSON has no NaN/inf: an undefined figure (e.g. APGR when the strong model is no better) is null
    clean = {k: (v if v is None or math.isfinite(v) else None) for k, v in metrics.items()}
    return clean, scores
