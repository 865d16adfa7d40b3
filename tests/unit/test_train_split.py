"""The held-out split: seeded, stratified by subject, never losing a row."""

from __future__ import annotations

import numpy as np
from routeiq_train.splits import holdout_indices


def test_split_is_stratified_seeded_and_complete() -> None:
    subjects = ["law"] * 100 + ["logic"] * 10 + ["rare"] * 2 + ["single"]
    fit, held = holdout_indices(subjects, 0.2, seed=7)
    assert sorted(np.concatenate((fit, held)).tolist()) == list(range(len(subjects)))  # a partition
    held_subjects = [subjects[i] for i in held]
    assert held_subjects.count("law") == 20 and held_subjects.count("logic") == 2
    assert held_subjects.count("rare") == 1  # a subject of two keeps one on each side
    again_fit, again_held = holdout_indices(subjects, 0.2, seed=7)
    assert np.array_equal(held, again_held) and np.array_equal(fit, again_fit)
    assert not np.array_equal(held, holdout_indices(subjects, 0.2, seed=8)[1])
