"""Each router kind: fits on a small learnable dataset, scores in [0, 1], ranks the strong model's gain better than
chance, survives pickling, and scores the same under concurrent calls."""

from __future__ import annotations

import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import joblib
import numpy as np
import pytest
from harness.train_data import make_rows, training_set
from routeiq_shared.routing_models import RouterArtifact, hashed_ngrams
from routeiq_train.metrics import router_metrics
from routeiq_train.routers import FITTERS, TrainingSet

LEARNED = [k for k in FITTERS if k != "random"]


@pytest.fixture(scope="module")
def fit_and_test() -> tuple[TrainingSet, TrainingSet]:
    return training_set(make_rows(400, seed=1)), training_set(make_rows(300, seed=2))


@pytest.fixture(scope="module")
def random_apgr(fit_and_test: tuple[TrainingSet, TrainingSet]) -> float:
    fit, test = fit_and_test
    return router_metrics(FITTERS["random"](fit, 0).score(test.texts), test.weak, test.strong)["apgr"]


@pytest.mark.parametrize("kind", LEARNED)
def test_learned_router_ranks_gain_above_chance(
    kind: str, fit_and_test: tuple[TrainingSet, TrainingSet], random_apgr: float
) -> None:
    fit, test = fit_and_test
    scorer = FITTERS[kind](fit, 0)
    scores = scorer.score(test.texts)
    assert scores.shape == (len(test.texts),)
    assert np.all((scores >= 0) & (scores <= 1))
    metrics = router_metrics(scores, test.weak, test.strong)
    # the data's gain follows its words: a router that learned anything clears the random line clearly
    assert metrics["apgr"] > random_apgr + 0.1, (kind, metrics, random_apgr)
    assert metrics["savings_at_95"] > 0.5, (kind, metrics)

    artifact = RouterArtifact(kind=kind, scorer=scorer, default_threshold=0.5)
    buf = io.BytesIO()
    joblib.dump(artifact, buf)
    buf.seek(0)
    again = joblib.load(buf)
    assert np.allclose(again.scorer.score(test.texts[:20]), scores[:20])
    # one prompt at a time gives what a batch gives, from many threads at once
    with ThreadPoolExecutor(8) as pool:
        singles = list(pool.map(lambda t: float(again.scorer.score([t])[0]), test.texts[:40]))
    assert np.allclose(singles, scores[:40])


def test_random_router_is_uniform_and_reproducible(fit_and_test: tuple[TrainingSet, TrainingSet]) -> None:
    fit, test = fit_and_test
    scorer = FITTERS["random"](fit, 0)
    scores = scorer.score(test.texts)
    assert np.array_equal(scores, scorer.score(test.texts))
    assert 0.4 < scores.mean() < 0.6 and scores.min() >= 0 and scores.max() < 1
    assert not np.array_equal(scores, FITTERS["random"](fit, 1).score(test.texts))  # the seed salts it


def test_hashed_features_are_the_same_in_every_process() -> None:
    """Python's hash() changes per process; a scorer trained in one process is served in another."""
    text = "Find the degree of Q(sqrt(2)) over Q. Ünïcode too"
    chars, words = hashed_ngrams(text)
    code = (
        "from routeiq_shared.routing_models import hashed_ngrams;"
        f"c, w = hashed_ngrams({text!r}); print(int(c.sum() % 1000003), int(w.sum() % 1000003))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONHASHSEED": "123", "PYTHONPATH": ":".join(sys.path)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [int(x) for x in out] == [int(chars.sum() % 1000003), int(words.sum() % 1000003)]
    assert chars.size == sum(len(text.lower().encode()) - n + 1 for n in (3, 4, 5))
    assert words.size == 2 * 11 - 1  # 11 words (non-ASCII bytes stay in a word), 10 bigrams
