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
