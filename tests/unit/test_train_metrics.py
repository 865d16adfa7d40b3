"""routeiq_train.metrics on constructed cases: a perfect router, a random one, an inverted one, ties."""

from __future__ import annotations

import numpy as np
import pytest
from routeiq_train.metrics import apgr, quality_at_threshold, quality_curve, router_metrics, strong_share_at


def _population(n_gain: int, n_loss: int, n_both: int, n_none: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """weak/strong correctness for rows where only strong is right (+1), only weak (-1), both, neither."""
    weak = np.array([0] * n_gain + [1] * n_loss + [1] * n_both + [0] * n_none, dtype=bool)
    strong = np.array([1] * n_gain + [0] * n_loss + [1] * n_both + [0] * n_none, dtype=bool)
    return weak, strong, strong.astype(int) - weak.astype(int)


def test_perfect_router_sends_only_the_gain_rows_strong() -> None:
    weak, strong, gain = _population(20, 10, 50, 20)  # weak 0.6, strong 0.7
    m = router_metrics(gain.astype(float), weak, strong)
    assert m["weak_accuracy"] == pytest.approx(0.6) and m["strong_accuracy"] == pytest.approx(0.7)
    # 95% of 0.7 = 0.665: 6.5 of the 20 gain rows (each +1%), so a share of 0.065 (interpolated in the tie)
    assert m["strong_share_at_95"] == pytest.approx(0.065)
    assert m["savings_at_95"] == pytest.approx(1 - 0.065)
    assert m["apgr"] > 1.0  # it beats the strong model alone by leaving the loss rows on the weak one


def test_random_router_is_the_diagonal() -> None:
    weak, strong, _ = _population(2000, 1000, 5000, 2000)
    rng = np.random.default_rng(0)
    m = router_metrics(rng.random(weak.size), weak, strong)
    # the random line reaches 0.665 at share (0.665 - 0.6) / 0.1 = 0.65; APGR 0.5
    assert m["strong_share_at_95"] == pytest.approx(0.65, abs=0.03)
    assert m["apgr"] == pytest.approx(0.5, abs=0.02)


def test_constant_scores_are_one_tie_interpolated_linearly() -> None:
    weak, strong, _ = _population(20, 10, 50, 20)
    curve = quality_curve(np.full(weak.size, 0.5), weak, strong)
    assert curve.shares.tolist() == [0.0, 1.0]
    assert apgr(curve) == pytest.approx(0.5)
    share, threshold = strong_share_at(curve)
    assert share == pytest.approx(0.65) and threshold == 0.5


def test_inverted_router_is_worse_than_random() -> None:
    weak, strong, gain = _population(20, 10, 50, 20)
    m = router_metrics(-gain.astype(float), weak, strong)
    assert m["apgr"] < 0.5
    assert m["strong_share_at_95"] > 0.65


def test_threshold_cuts_as_the_gateway_does() -> None:
    weak = np.array([0, 0, 1, 1], dtype=bool)
    strong = np.array([1, 1, 1, 0], dtype=bool)
    scores = np.array([0.9, 0.6, 0.6, 0.1])
    quality, share = quality_at_threshold(scores, weak, strong, 0.6)  # score >= threshold goes strong
    assert share == 0.75 and quality == 1.0
    curve = quality_curve(scores, weak, strong)
    assert curve.shares.tolist() == [0.0, 0.25, 0.75, 1.0]  # no cut inside the tie at 0.6
    assert curve.thresholds[1:].tolist() == [0.9, 0.6, 0.1]


def test_unreachable_target_sends_everything_strong() -> None:
    weak = np.array([1, 1, 0], dtype=bool)
    strong = np.array([0, 0, 0], dtype=bool)  # the strong model is worse: 95% of 0 is reached at share 0
    assert strong_share_at(quality_curve(np.array([0.1, 0.2, 0.3]), weak, strong))[0] == 0.0
    assert np.isnan(apgr(quality_curve(np.array([0.1, 0.2, 0.3]), weak, strong)))


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        quality_curve(np.array([0.1]), np.array([True, False]), np.array([True, True]))
