"""Fitting each router kind: text features, then the scorer classes of routeiq_shared.routing_models.

Every learned kind is trained on the gain label of a row, strong_correct - weak_correct in {-1, 0, 1}: the
decision matters only where the models disagree, and the score ranks prompts by the strong model's expected gain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from routeiq_shared.routing_models import (
    GAIN_CLASSES,
    PROMPT_FEATURES,
    BoostedGainScorer,
    BoostedTrees,
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
    StackHeads,
    SubjectGainScorer,
    expected_gain,
    hashed_buckets,
    prompt_features,
    windowed,
)
from sklearn.decomposition import TruncatedSVD
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
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


# The dense embedding's width for knn, mlp and mf: 96 scored as well as 192 on seeds 42-44 (savings_at_95 / APGR,
# mean: knn 0.49 / 0.632 vs 0.486 / 0.631, mlp 0.519 / 0.666 vs 0.506 / 0.656, mf 0.527 / 0.668 vs 0.523 / 0.659)
# and halves the serving cost of the projection (and of knn's bank product), most of those kinds' decision time.
DENSE_DIMS = 96
# boost reads a prompt's last 1,200 characters (90% of MMLU prompts are shorter): its hand-made cues and its
# 64-wide heads cost in proportion to the text, and the longest prompts put its p99 over 1 ms
BOOST_WINDOW = 1200
KNN_DIMS = 64


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
    # 64, not DENSE_DIMS: knn reads its whole bank per prompt (n_train x dims floats), and 64 scored alike on seeds
    # 42-44 (0.470 / 0.631 against 96's 0.490 / 0.632 and 192's 0.486 / 0.631, within the seeds' spread)
    feats = dense_features(data.texts, KNN_DIMS, seed)
    bank = np.asarray(feats.transform(data.texts), dtype=np.float32)
    gain = data.gain.astype(np.float32)
    return KnnScorer(feats, bank, gain, k=min(40, len(data.texts)), prior=float(gain.mean()))


def fit_mlp(data: TrainingSet, seed: int) -> Scorer:
    feats = dense_features(data.texts, DENSE_DIMS, seed)
    x = feats.transform(data.texts)
    # a regressor of the gain itself: a classifier's softmax drowned the rare -1/+1 classes in the ties
    reg = MLPRegressor(
        hidden_layer_sizes=(64,), alpha=1e-1, max_iter=200, early_stopping=len(data.texts) >= 200, random_state=seed
    ).fit(x, data.gain.astype(np.float64))
    return GainRegressorScorer(feats, reg)


def fit_mf(data: TrainingSet, seed: int, dim: int = 32, steps: int = 400, lr: float = 0.05) -> Scorer:
    """RouteLLM-style MF trained by full-batch Adam on binary cross-entropy. The target is P(strong beats weak):
    1 where only the strong model is right, 0 where only the weak one is, 0.5 on ties (they carry no preference)."""
    feats = dense_features(data.texts, DENSE_DIMS, seed)
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


STACK_FOLDS = 5  # the trees learn from out-of-fold head outputs, as the heads will be on prompts they never saw
TREE_PARAMS = {"learning_rate": 0.05, "max_leaf_nodes": 8, "min_samples_leaf": 40, "l2_regularization": 1.0}
TREE_ROUNDS = 200  # P(weak wrong), learned on every row; each conditional part on its subset gets half
ABSENT = -30.0  # logit of a class a head never saw: probability ~0


def _subject_stats(subjects: np.ndarray, weak: np.ndarray, strong: np.ndarray, classes: list[str]) -> np.ndarray:
    """Per subject, smoothed towards the overall rates: mean gain, P(weak wrong), P(strong right | weak wrong),
    P(strong wrong | weak right)."""
    k = SUBJECT_SMOOTHING
    gain = strong.astype(np.float64) - weak
    cols = np.column_stack((gain, ~weak, strong & ~weak, ~strong & weak)).astype(np.float64)
    # the denominators: every row, every row, rows the weak model got wrong, rows it got right
    dens = np.column_stack((np.ones_like(gain), np.ones_like(gain), ~weak, weak)).astype(np.float64)
    overall = cols.sum(axis=0) / np.maximum(dens.sum(axis=0), 1.0)
    out = [(cols[subjects == s].sum(axis=0) + k * overall) / (dens[subjects == s].sum(axis=0) + k) for s in classes]
    return np.asarray(out, dtype=np.float64).reshape(len(classes), 4)


def _binary_columns(x: Any, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two softmax columns (False, True) of a logistic head; a fixed intercept where y has one class."""
    if len(set(y.tolist())) < 2:
        one = bool(y[0]) if y.size else False
        return np.zeros((x.shape[1], 2)), np.array([0.0, -ABSENT]) if one else np.array([0.0, ABSENT])
    head = LinearHead.from_model(LogisticRegression(C=0.5, max_iter=1000, random_state=seed).fit(x, y), "softmax")
    return head.weights.astype(np.float64), head.intercept


def _stack_heads(x: Any, data: TrainingSet, idx: np.ndarray, seed: int) -> StackHeads:
    """The linear TF-IDF heads of `boost`, fitted on rows idx, as one StackHeads."""
    subjects = np.asarray(data.subjects)[idx]
    xi, weak, strong = x[idx], data.weak[idx], data.strong[idx]
    if len(set(subjects.tolist())) >= 2:
        sgd = SGDClassifier(loss="log_loss", alpha=2e-5, max_iter=30, tol=1e-3, random_state=seed).fit(xi, subjects)
        head = LinearHead.from_model(sgd, "ovr")
        names = [str(c) for c in head.classes_]
        subject_w, subject_b = head.weights.astype(np.float64), head.intercept
    else:
        names = [str(subjects[0]) if subjects.size else ""]
        subject_w, subject_b = np.zeros((x.shape[1], 1)), np.zeros(1)
    weak_w, weak_b = _binary_columns(xi, ~weak, seed)
    strong_w, strong_b = _binary_columns(xi, ~strong, seed)
    gain = strong.astype(np.int64) - weak.astype(np.int64)
    gain_w, gain_b = np.zeros((x.shape[1], 3)), np.full(3, ABSENT)
    present = sorted(set(gain.tolist()))
    if len(present) >= 2:
        clf = LogisticRegression(C=2.0, max_iter=1000, class_weight="balanced", random_state=seed).fit(xi, gain)
        head = LinearHead.from_model(clf, "softmax")
        for j, c in enumerate(head.classes_):
            gain_w[:, GAIN_CLASSES.index(int(c))] = head.weights[:, j]
            gain_b[GAIN_CLASSES.index(int(c))] = head.intercept[j]
    elif present:
        gain_b[GAIN_CLASSES.index(present[0])] = 0.0
    return StackHeads(
        np.ascontiguousarray(np.hstack((subject_w, weak_w, strong_w, gain_w)), dtype=np.float32),
        np.concatenate((subject_b, weak_b, strong_b, gain_b)),
        _subject_stats(subjects, weak, strong, names),
        tuple(names),
    )


def _tree_model(x: np.ndarray, y: np.ndarray, rounds: int, seed: int) -> tuple[float, list[np.ndarray]]:
    """(baseline log-odds, each tree's node records) of a binary HistGradientBoostingClassifier; no trees and the
    smoothed rate where y has one class."""
    if len(set(y.tolist())) < 2:
        rate = (y.sum() + 1.0) / (y.size + 2.0)
        return float(np.log(rate / (1.0 - rate))), []
    clf = HistGradientBoostingClassifier(max_iter=rounds, random_state=seed, **TREE_PARAMS).fit(x, y)  # type: ignore[arg-type]
    return float(np.ravel(clf._baseline_prediction)[0]), [p.nodes for (p,) in clf._predictors]


def _flatten_trees(models: list[tuple[float, list[np.ndarray]]]) -> BoostedTrees:
    features: list[np.ndarray] = []
    thresholds: list[np.ndarray] = []
    children: list[np.ndarray] = []
    values: list[np.ndarray] = []
    roots: list[int] = []
    starts: list[int] = []
    offset, depth = 0, 0
    for _, trees in models:
        starts.append(len(roots))
        for nodes in trees:
            leaf = nodes["is_leaf"].astype(bool)
            own = np.arange(len(nodes)) + offset
            roots.append(offset)
            features.append(np.where(leaf, 0, nodes["feature_idx"]))
            thresholds.append(np.where(leaf, np.inf, nodes["num_threshold"]))
            children.append(
                np.column_stack(
                    (np.where(leaf, own, nodes["right"] + offset), np.where(leaf, own, nodes["left"] + offset))
                )
            )
            values.append(np.where(leaf, nodes["value"], 0.0))
            depth = max(depth, int(nodes["depth"].max()))
            offset += len(nodes)
    return BoostedTrees(
        np.concatenate(features).astype(np.int64) if features else np.zeros(0, np.int64),
        np.concatenate(thresholds).astype(np.float64) if thresholds else np.zeros(0),
        np.vstack(children).astype(np.int64) if children else np.zeros((0, 2), np.int64),
        np.concatenate(values).astype(np.float64) if values else np.zeros(0),
        np.asarray(roots, dtype=np.int64),
        np.asarray(starts, dtype=np.int64),
        np.asarray([b for b, _ in models], dtype=np.float64),
        depth,
    )


def fit_boost(data: TrainingSet, seed: int) -> Scorer:
    """Kind `boost`: linear TF-IDF heads (subject, weak wrong, strong wrong, gain), their out-of-fold outputs
    with prompt_features as a dense row, and three small boosted-tree models over it that decompose the gain
    (see BoostedGainScorer). The heads are then refit on every row for serving. Every part reads the prompts'
    last BOOST_WINDOW characters, as the scorer will."""
    data = TrainingSet(windowed(data.texts, BOOST_WINDOW), data.subjects, data.weak, data.strong)
    feats = sparse_features(data.texts)
    x = feats.transform(data.texts)
    n = len(data.texts)
    subjects = np.asarray(data.subjects)
    heads = _stack_heads(x, data, np.arange(n), seed)
    stacked = heads.row(x)  # in-sample only where there are too few rows to fold
    folds = min(STACK_FOLDS, n)
    if folds >= 2:
        counts = np.unique(subjects, return_counts=True)[1]
        splitter = (
            StratifiedKFold(folds, shuffle=True, random_state=seed)
            if counts.min() >= folds
            else KFold(folds, shuffle=True, random_state=seed)
        )
        for fit_idx, out_idx in splitter.split(np.zeros(n), subjects):
            stacked[out_idx] = _stack_heads(x, data, fit_idx, seed).row(x[out_idx])
    hand = np.vstack([prompt_features(t) for t in data.texts]).reshape(n, len(PROMPT_FEATURES))
    dense = np.hstack((stacked, hand))
    ww = ~data.weak
    trees = _flatten_trees(
        [
            _tree_model(dense, ww, TREE_ROUNDS, seed),
            _tree_model(dense[ww], data.strong[ww], TREE_ROUNDS // 2, seed),
            _tree_model(dense[~ww], ~data.strong[~ww], TREE_ROUNDS // 2, seed),
        ]
    )
    return BoostedGainScorer(feats, heads, trees, window=BOOST_WINDOW)


FITTERS: dict[str, Callable[[TrainingSet, int], Scorer]] = {
    "random": fit_random,
    "logistic": fit_logistic,
    "knn": fit_knn,
    "mlp": fit_mlp,
    "svm": fit_svm,
    "mf": fit_mf,
    "gain": fit_subject_gain,
    "boost": fit_boost,
}
KINDS = tuple(FITTERS)
