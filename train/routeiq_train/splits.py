"""The held-out split: seeded, stratified by subject where every subject can be split."""

from __future__ import annotations

import numpy as np

from .routers import TrainingSet


def subset(data: TrainingSet, idx: np.ndarray) -> TrainingSet:
    return TrainingSet([data.texts[i] for i in idx], [data.subjects[i] for i in idx], data.weak[idx], data.strong[idx])


def holdout_indices(subjects: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) row indices, each sorted. Each subject contributes round(fraction * its rows) held-out rows
    (at least one where it has two or more), so a small subject is neither lost nor all held out."""
    rng = np.random.default_rng(seed)
    by_subject: dict[str, list[int]] = {}
    for i, s in enumerate(subjects):
        by_subject.setdefault(s, []).append(i)
    held: list[int] = []
    for s in sorted(by_subject):
        rows = np.asarray(by_subject[s])
        k = round(fraction * len(rows))
        k = min(max(k, 1), len(rows) - 1) if len(rows) >= 2 else int(rng.random() < fraction)
        held.extend(rng.permutation(rows)[:k].tolist())
    held_idx = np.sort(np.asarray(held, dtype=np.int64))
    fit_idx = np.setdiff1d(np.arange(len(subjects)), held_idx)
    return fit_idx, held_idx


def holdout_split(data: TrainingSet, fraction: float, seed: int) -> tuple[TrainingSet, TrainingSet]:
    from .data import DataError

    fit_idx, held_idx = holdout_indices(data.subjects, fraction, seed)
    if len(held_idx) == 0 or len(fit_idx) == 0:
        raise DataError(f"{len(data.texts)} rows cannot be split into a fit and a held-out part at {fraction}")
    return subset(data, fit_idx), subset(data, held_idx)
