"""Router quality as in RouteLLM: sweep the threshold over the scores and read quality against strong-call share.

A cut sends the top-scored rows to the strong model. Rows with equal scores cannot be split by a threshold, so the
curve has a point only at the end of each run of equal scores (a constant scorer has two points: all weak, all
strong); between points the curve is linear, which is what randomising within a tie would give on average.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QUALITY_TARGET = 0.95  # of the strong model's accuracy


@dataclass(frozen=True, slots=True)
class QualityCurve:
    shares: np.ndarray  # strong-call share at each cut, from 0 to 1
    quality: np.ndarray  # accuracy at each cut
    thresholds: np.ndarray  # the threshold giving each cut (score >= threshold goes strong); +inf for share 0
    weak_acc: float
    strong_acc: float


def quality_curve(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> QualityCurve:
    scores = np.asarray(scores, dtype=np.float64)
    weak = np.asarray(weak, dtype=np.float64)
    strong = np.asarray(strong, dtype=np.float64)
    n = scores.shape[0]
    if n == 0 or weak.shape != (n,) or strong.shape != (n,):
        raise ValueError("scores, weak and strong must be non-empty and of one length")
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    gain = np.cumsum(strong[order] - weak[order])  # accuracy gained by sending the top k+1 rows strong
    # a cut may fall only after the last of a run of equal scores
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    weak_total = weak.sum()
    shares = np.concatenate(([0.0], (ends + 1) / n))
    quality = np.concatenate(([weak_total / n], (weak_total + gain[ends]) / n))
    thresholds = np.concatenate(([np.inf], ranked[ends]))
    return QualityCurve(shares, quality, thresholds, float(weak.mean()), float(strong.mean()))


def strong_share_at(curve: QualityCurve, fraction: float = QUALITY_TARGET) -> tuple[float, float]:
    """The smallest strong-call share (and its threshold) whose quality reaches `fraction` of the strong model's
    accuracy. Between two cut points the share is interpolated (a random split of the tie reaches it there)."""
    target = fraction * curve.strong_acc
    hit = np.flatnonzero(curve.quality >= target - 1e-12)
    if hit.size == 0:  # never reached (the strong model is worse than the weak one here): all strong
        return 1.0, float(curve.thresholds[-1])
    i = int(hit[0])
    if i == 0:
        return 0.0, float(curve.thresholds[0])
    q0, q1 = curve.quality[i - 1], curve.quality[i]
    s0, s1 = curve.shares[i - 1], curve.shares[i]
    share = s1 if q1 == q0 else s0 + (target - q0) / (q1 - q0) * (s1 - s0)
    return float(share), float(curve.thresholds[i])


def apgr(curve: QualityCurve) -> float:
    """RouteLLM's average performance gap recovered: the mean over the share axis of
    (quality - weak_acc) / (strong_acc - weak_acc). A random router scores about 0.5, a perfect one more than 1
    when the weak model is right on questions the strong one misses."""
    gap = curve.strong_acc - curve.weak_acc
    if gap <= 0:
        return float("nan")
    pgr = (curve.quality - curve.weak_acc) / gap
    return float(np.sum((pgr[1:] + pgr[:-1]) / 2 * np.diff(curve.shares)))


def quality_at_threshold(
    scores: np.ndarray, weak: np.ndarray, strong: np.ndarray, threshold: float
) -> tuple[float, float]:
    """Accuracy and strong-call share when rows scoring >= threshold go to the strong model."""
    to_strong = np.asarray(scores) >= threshold
    chosen = np.where(to_strong, np.asarray(strong, dtype=np.float64), np.asarray(weak, dtype=np.float64))
    return float(chosen.mean()), float(to_strong.mean())


def router_metrics(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> dict[str, float]:
    curve = quality_curve(scores, weak, strong)
    share, threshold = strong_share_at(curve)
    return {
        "rows": float(scores.shape[0]),
        "weak_accuracy": curve.weak_acc,
        "strong_accuracy": curve.strong_acc,
        "strong_share_at_95": share,
        "savings_at_95": 1.0 - share,
        "threshold_at_95": threshold,
        "apgr": apgr(curve),
    }
