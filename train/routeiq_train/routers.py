"""Fitting each router kind: text features, then the scorer classes of routeiq_shared.routing_models.

Every learned kind is trained on the gain label of a row, strong_correct - weak_correct in {-1, 0, 1}: the
decision matters only where the models disagree, and the score ranks prompts by the strong model's expected gain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from routeiq_shared.routing_models import (
    DenseProjection,
    GainClassifierScorer,
    GainRegressorScorer,
    HashedTfidf,
    KnnScorer,
    LinearHead,
    MarginScorer,
    MatrixFactorizationScorer,
    RandomScorer,
    Scorer,
    SubjectGainScorer,
    expected_gain,
    hashed_buckets,
)
from sklearn.decomposition import TruncatedSVD
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor
from sklearn.svm import LinearSVC

from .metrics import apgr, quality_curve

SUBJECT_SMOOTHING = 10.0  # pseudo-rows of the overall gain in each subject's mean gain


@dataclass(frozen=True, slots=True)
class TrainingSet:
    texts: list[str]
    subjects: list[str]
    weak: np.ndarray  # bool
    strong: np.ndarray  # bool

    @property
    def gain(self) -> np.ndarray:
        return self.strong.astype(np.int64) - self.weak.astype(np.int64)


def sparse_features(texts: list[str], buckets: int = 1 << 20, max_features: int = 80000) -> HashedTfidf:
    """TF-IDF of hashed character 3-5-grams and word 1-2-grams (topic words and formula-ish tokens), keeping the
    n-grams seen in at least two prompts (one, for a tiny set), the most frequent `max_features` of them."""
    n = len(texts)
    seen = [np.unique(hashed_buckets(t, buckets)) for t in texts]
    df = np.bincount(np.concatenate(seen), minlength=2 * buckets) if seen else np.zeros(2 * buckets, np.int64)
    min_df = 2 if n >= 1000 else 1
    keep = np.flatnonzero(df >= min_df)
    if keep.size > max_features:
        keep = np.sort(keep[np.argsort(-df[keep], kind="stable")[:max_features]])
    columns = np.full(2 * buckets, -1, dtype=np.int32)
    columns[keep] = np.arange(keep.size, dtype=np.int32)
    idf = (np.log((1.0 + n) / (1.0 + df[keep])) + 1.0).astype(np.float32)
    return HashedTfidf(columns, idf, keep >= buckets, buckets)


def dense_features(texts: list[str], dims: int, seed: int) -> DenseProjection:
    """TF-IDF -> truncated SVD -> unit rows: a small dense text embedding for knn, mlp and mf."""
    sparse = sparse_features(texts)
    x = sparse.transform(texts)
    dims = max(2, min(dims, x.shape[0] - 1, x.shape[1] - 1))
    svd = TruncatedSVD(dims, random_state=seed).fit(x)
    return DenseProjection(sparse, np.ascontiguousarray(svd.components_.T, dtype=np.float32))


def fit_random(data: TrainingSet, seed: int) -> Scorer:
    return RandomScorer(salt=f"routeiq-{seed}")


def fit_logistic(data: TrainingSet, seed: int) -> Scorer:
    feats = sparse_features(data.texts)
    x = feats.transform(data.texts)
    clf = LogisticRegression(C=2.0, max_iter=1000, class_weight="balanced", random_state=seed).fit(x, data.gain)
    return GainClassifierScorer(feats, LinearHead.from_model(clf, "softmax"))


def fit_svm(data: TrainingSet, seed: int) -> Scorer:
    feats = sparse_features(data.texts)
    x = feats.transform(data.texts)
    clf = LinearSVC(C=0.1, class_weight="balanced", random_state=seed).fit(x, data.gain)
    margin = clf.decision_function(x)
    cls = [int(c) for c in clf.classes_]
    spread = float(np.std(margin[:, cls.index(1)] - margin[:, cls.index(-1)])) or 1.0
    return MarginScorer(feats, LinearHead.from_model(clf, "margin"), scale=2.0 / spread)


def fit_knn(data: TrainingSet, seed: int) -> Scorer:
    feats = dense_features(data.texts, 192, seed)
    bank = np.asarray(feats.transform(data.texts), dtype=np.float32)
    gain = data.gain.astype(np.float32)
    return KnnScorer(feats, bank, gain, k=min(40, len(data.texts)), prior=float(gain.mean()))


def fit_mlp(data: TrainingSet, seed: int) -> Scorer:
    feats = dense_features(data.texts, 192, seed)
    x = feats.transform(data.texts)
    # a regressor of the gain itself: a classifier's softmax drowned the rare -1/+1 classes in the ties
    reg = MLPRegressor(
        hidden_layer_sizes=(64,), alpha=1e-1, max_iter=200, early_stopping=len(data.texts) >= 200, random_state=seed
    ).fit(x, data.gain.astype(np.float64))
    return GainRegressorScorer(feats, reg)


def fit_mf(data: TrainingSet, seed: int, dim: int = 32, steps: int = 400, lr: float = 0.05) -> Scorer:
    """RouteLLM-style MF trained by full-batch Adam on binary cross-entropy. The target is P(strong beats weak):
    1 where only the strong model is right, 0 where only the weak one is, 0.5 on ties (they carry no preference)."""
    feats = dense_features(data.texts, 192, seed)
    x = np.asarray(feats.transform(data.texts), dtype=np.float64)
    y = (data.gain + 1) / 2.0
    rng = np.random.default_rng(seed)
    params = {
        "W": rng.normal(0, 1 / np.sqrt(x.shape[1]), (x.shape[1], dim)),
        "V": rng.normal(0, 0.1, (2, dim)),
        "h": rng.normal(0, 0.1, dim),
        "b": np.zeros(1),
    }
    m = {k: np.zeros_like(v) for k, v in params.items()}
    s = {k: np.zeros_like(v) for k, v in params.items()}
    l2 = 1e-4
    for t in range(1, steps + 1):
        W, V, h, b = params["W"], params["V"], params["h"], params["b"]
        q = x @ W
        d = V[1] - V[0]
        z = (q * d) @ h + b[0]
        p = 1 / (1 + np.exp(-z))
        gz = (p - y) / len(y)  # dBCE/dz
        gq = np.outer(gz, d * h)
        gd = (q * h).T @ gz
        grads = {
            "W": x.T @ gq + l2 * W,
            "V": np.stack([-gd, gd]) + l2 * V,
            "h": (q * d).T @ gz + l2 * h,
            "b": np.array([gz.sum()]),
        }
        for k, g in grads.items():
            m[k] = 0.9 * m[k] + 0.1 * g
            s[k] = 0.999 * s[k] + 0.001 * g * g
            params[k] -= lr * (m[k] / (1 - 0.9**t)) / (np.sqrt(s[k] / (1 - 0.999**t)) + 1e-8)
    return MatrixFactorizationScorer(feats, params["W"], params["V"], params["h"], float(params["b"][0]))


def _subject_gains(subjects: list[str], gain: np.ndarray, classes: np.ndarray) -> np.ndarray:
    overall = float(gain.mean())
    arr = np.asarray(subjects)
    out = []
    for subject in classes:
        mask = arr == subject
        out.append((gain[mask].sum() + SUBJECT_SMOOTHING * overall) / (mask.sum() + SUBJECT_SMOOTHING))
    return np.asarray(out, dtype=np.float64)


def fit_subject_gain(data: TrainingSet, seed: int) -> Scorer:
    """The stronger router (kind `gain`). The blend of subject prior and item model is chosen on a validation
    split carved from the training rows (never the held-out split), then the parts are refit on all of them."""
    if len(set(data.subjects)) < 2:
        # No subjects to learn (a CSV without the column, live routing records): the item model alone answers.
        return fit_logistic(data, seed)
    feats = sparse_features(data.texts)
    x = feats.transform(data.texts)
    gain = data.gain

    def fit_parts(idx: np.ndarray) -> tuple[SGDClassifier, np.ndarray, LogisticRegression]:
        subj = np.asarray(data.subjects)[idx]
        sc = SGDClassifier(loss="log_loss", alpha=2e-5, max_iter=30, tol=1e-3, random_state=seed).fit(x[idx], subj)
        prior = _subject_gains(list(subj), gain[idx], sc.classes_)
        item = LogisticRegression(C=2.0, max_iter=1000, class_weight="balanced", random_state=seed)
        item.fit(x[idx], gain[idx])
        return sc, prior, item

    weight = 0.5
    subjects = np.asarray(data.subjects)
    if len(data.texts) >= 500 and len(set(gain.tolist())) > 1:
        counts = {s: int((subjects == s).sum()) for s in set(subjects.tolist())}
        strat = subjects if min(counts.values()) >= 2 else None
        fit_idx, val_idx = train_test_split(
            np.arange(len(data.texts)), test_size=0.25, random_state=seed, stratify=strat
        )
        sc, prior, item = fit_parts(fit_idx)
        prior_val = sc.predict_proba(x[val_idx]) @ prior
        item_val = expected_gain(item.predict_proba(x[val_idx]), item.classes_)
        best = -1.0
        for w in np.linspace(0.0, 1.0, 11):
            blend = (1 - w) * prior_val + w * item_val
            area = apgr(quality_curve(blend, data.weak[val_idx], data.strong[val_idx]))
            if area > best:
                best, weight = area, float(w)
    sc, prior, item = fit_parts(np.arange(len(data.texts)))
    return SubjectGainScorer(
        feats,
        LinearHead.from_model(sc, "ovr"),
        prior,
        LinearHead.from_model(item, "softmax"),
        item_weight=weight,
        subjects=tuple(str(c) for c in sc.classes_),
    )


FITTERS: dict[str, Callable[[TrainingSet, int], Scorer]] = {
    "random": fit_random,
    "logistic": fit_logistic,
    "knn": fit_knn,
    "mlp": fit_mlp,
    "svm": fit_svm,
    "mf": fit_mf,
    "gain": fit_subject_gain,
}
KINDS = tuple(FITTERS)
