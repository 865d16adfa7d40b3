"""A dataset without a subject column (a CSV without it, or live routing records, which carry none) trains every
router kind: the subject-based parts must not crash on a single (empty) subject."""

from __future__ import annotations

import numpy as np
import pytest
from harness.train_data import make_rows
from routeiq_train.routers import FITTERS, TrainingSet


@pytest.mark.parametrize("kind", sorted(FITTERS))
def test_every_kind_trains_without_subjects(kind: str) -> None:
    rows = make_rows(240, seed=5)
    data = TrainingSet(
        [r["prompt"] for r in rows],
        [""] * len(rows),
        np.asarray([r["mixtral_8x7b_correct"] == "True" for r in rows]),
        np.asarray([r["gpt_4_1106_correct"] == "True" for r in rows]),
    )
    scores = FITTERS[kind](data, 0).score(data.texts[:20])
    assert scores.shape == (20,) and np.all((scores >= 0) & (scores <= 1))
