"""The walk of routing_models.BoostedTrees, compiled (numba): each row down each tree, node by node.

Why compiled: numpy walks every tree of every row at once with `depth` rounds of fancy indexing over a
(rows, trees) array; for one prompt and `boost`'s ~400 trees that is ~0.08 ms of indexing overhead, ~20x what
the walk itself costs here. Same nodes reached, so the same leaf values (tests/unit/test_scoring_fast_path.py,
tests/unit/test_train_boost.py). Imported lazily by routing_models, which walks with numpy without numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def leaf_values(
    feature: np.ndarray,  # (n_nodes,) int64
    threshold: np.ndarray,  # (n_nodes,) float64
    children: np.ndarray,  # (n_nodes, 2) int64: [right, left]; a leaf points to itself
    value: np.ndarray,  # (n_nodes,) float64
    roots: np.ndarray,  # (n_trees,) int64
    depth: int,
    x: np.ndarray,  # (n_rows, n_inputs) float64
) -> np.ndarray:
    """(n_rows, n_trees): the value of the leaf each row reaches in each tree, as BoostedTrees' numpy walk."""
    out = np.empty((x.shape[0], roots.size), dtype=np.float64)
    for r in range(x.shape[0]):
        for t in range(roots.size):
            node = roots[t]
            for _ in range(depth):
                side = 1 if x[r, feature[node]] <= threshold[node] else 0
                node = children[node, side]
            out[r, t] = value[node]
    return out


@njit(cache=True, nogil=True)
def boost_proba(
    product: np.ndarray,  # (n_rows, n_heads_out): TF-IDF rows @ StackHeads.weights
    intercept: np.ndarray,  # (n_heads_out,) float64
    subject_stats: np.ndarray,  # (n_subjects, 4) float64
    hand: np.ndarray,  # (n_rows, n_hand) float64: prompt_features
    feature: np.ndarray,
    threshold: np.ndarray,
    children: np.ndarray,
    value: np.ndarray,
    roots: np.ndarray,
    depth: int,
    model_starts: np.ndarray,  # (n_models,) int64
    baselines: np.ndarray,  # (n_models,) float64
) -> np.ndarray:
    """(n_rows, n_models): BoostedTrees.predict_proba(hstack((StackHeads.row_of_product(product), hand))) in one
    pass a row, without the ~30 small numpy calls (and their temporaries) that cost more than the arithmetic for
    one prompt. The same formulas in the same order; sums run left to right (numpy's are pairwise), so results
    agree to ~1e-15, not bit for bit."""
    n, width = product.shape
    k = subject_stats.shape[0]
    n_gain = width - k - 4
    n_dense = 8 + n_gain
    x = np.empty(n_dense + hand.shape[1])
    p = np.empty(k)
    z = np.empty(width)
    out = np.empty((n, baselines.size))
    for r in range(n):
        for j in range(width):
            z[j] = product[r, j] + intercept[j]
        total = 0.0
        for j in range(k):
            p[j] = 1.0 / (1.0 + np.exp(-z[j]))
            total += p[j]
        total = max(total, 1e-300)
        top = 0.0
        entropy = 0.0
        for j in range(k):
            p[j] /= total
            top = max(top, p[j])
            entropy -= p[j] * np.log(p[j] + 1e-12)
        for c in range(4):
            s = 0.0
            for j in range(k):
                s += p[j] * subject_stats[j, c]
            x[c] = s
        x[4] = top
        x[5] = entropy
        x[6] = 1.0 / (1.0 + np.exp(z[k] - z[k + 1]))
        x[7] = 1.0 / (1.0 + np.exp(z[k + 2] - z[k + 3]))
        g_max = z[k + 4]
        for j in range(k + 4, width):
            g_max = max(g_max, z[j])
        g_total = 0.0
        for j in range(n_gain):
            x[8 + j] = np.exp(z[k + 4 + j] - g_max)
            g_total += x[8 + j]
        for j in range(n_gain):
            x[8 + j] /= g_total
        for j in range(hand.shape[1]):
            x[n_dense + j] = hand[r, j]
        for m in range(baselines.size):
            end = model_starts[m + 1] if m + 1 < baselines.size else roots.size
            s = 0.0
            for t in range(model_starts[m], end):
                node = roots[t]
                for _ in range(depth):
                    side = 1 if x[feature[node]] <= threshold[node] else 0
                    node = children[node, side]
                s += value[node]
            out[r, m] = 1.0 / (1.0 + np.exp(-(baselines[m] + s)))
    return out
