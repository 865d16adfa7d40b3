"""The `boost` router's parts: flattened boosted trees predict what scikit-learn predicts, the joint linear heads
give what the separate heads give, prompt_features reads the cues it names, and fitting survives degenerate data."""

from __future__ import annotations

import numpy as np
from harness.train_data import make_rows, training_set
from routeiq_shared.routing_models import PROMPT_FEATURES, BoostedGainScorer, LinearHead, prompt_features
from routeiq_train.routers import (
    BOOST_WINDOW,
    TREE_PARAMS,
    TrainingSet,
    _flatten_trees,
    _stack_heads,
    _tree_model,
    fit_boost,
    sparse_features,
)
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression


def test_flattened_trees_predict_what_scikit_learn_predicts() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 6))
    x[:, 2] = rng.integers(0, 3, size=1500)  # a few distinct values: thresholds between bins
    first = (x[:, 0] + 0.7 * x[:, 2] + rng.normal(size=1500)) > 0.5
    second = (x[:, 1] * x[:, 3] + rng.normal(size=1500)) > 0
    constant = np.ones(1500, dtype=bool)  # one class: no trees, the smoothed rate
    trees = _flatten_trees([_tree_model(x, y, 40, 0) for y in (first, second, constant)])
    probe = rng.normal(size=(400, 6))
    probe[:, 2] = rng.integers(-1, 4, size=400)
    got = trees.predict_proba(probe)
    assert got.shape == (400, 3)
    for j, y in enumerate((first, second)):
        want = HistGradientBoostingClassifier(max_iter=40, random_state=0, **TREE_PARAMS).fit(x, y)  # type: ignore[arg-type]
        assert np.allclose(got[:, j], want.predict_proba(probe)[:, 1], atol=1e-12)
    assert np.allclose(got[:, 2], 1501 / 1502)
    assert np.allclose(trees.predict_proba(probe[:1]), got[:1])  # one row alone: the same walk


def test_joint_heads_give_the_separate_heads_probabilities() -> None:
    data = training_set(make_rows(300, seed=3))
    feats = sparse_features(data.texts)
    x = feats.transform(data.texts)
    heads = _stack_heads(x, data, np.arange(len(data.texts)), 0)
    row = heads.row(x)
    assert row.shape == (len(data.texts), 11)
    weak_wrong = LinearHead.from_model(
        LogisticRegression(C=0.5, max_iter=1000, random_state=0).fit(x, ~data.weak), "softmax"
    )
    assert np.allclose(row[:, 6], weak_wrong.predict_proba(x)[:, 1], atol=1e-6)
    gain = LogisticRegression(C=2.0, max_iter=1000, class_weight="balanced", random_state=0).fit(x, data.gain)
    assert np.allclose(row[:, 8:11], LinearHead.from_model(gain, "softmax").predict_proba(x), atol=1e-6)
    # the subject posterior sums to 1, so its expected statistics lie within the per-subject ones
    stats = heads.subject_stats
    assert np.all(row[:, 0] >= stats[:, 0].min() - 1e-9) and np.all(row[:, 0] <= stats[:, 0].max() + 1e-9)
    assert np.all((row[:, 4] > 0) & (row[:, 4] <= 1))


def test_prompt_features_read_the_cues_they_name() -> None:
    col = {name: i for i, name in enumerate(PROMPT_FEATURES)}
    pair = prompt_features(
        "Statement 1 | Every group is abelian. Statement 2 | Z_4 is cyclic.\n"
        "A. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer:"
    )
    assert pair.shape == (len(PROMPT_FEATURES),)
    assert pair[col["statement_pair"]] == 1 and pair[col["options"]] == 4 and pair[col["true_false_options"]] == 1
    except_ = prompt_features("All of these are mammals EXCEPT which one?\nA. cat\nB. dog\nC. trout\nD. whale\nAnswer:")
    assert except_[col["except"]] == 1 and except_[col["question_mark"]] == 1 and except_[col["statement_pair"]] == 0
    numeric = prompt_features("Compute 12 * 7 + 3 = ?\nA. 87\nB. 84\nC. 90\nD. 12\nAnswer:")
    assert numeric[col["numeric_option_share"]] == 1 and numeric[col["stem_operator_per_100"]] > 0
    assert numeric[col["log_stem_numbers"]] == np.log1p(3)
    for text in ("", "no options at all", "Ünïcode only?"):  # any prompt gives a finite row
        assert np.all(np.isfinite(prompt_features(text)))


def test_boost_fits_one_subject_and_missing_gain_classes() -> None:
    data = training_set(make_rows(200, seed=4))
    gain = data.gain
    keep = np.flatnonzero(gain >= 0)  # no row where only the weak model is right
    one = TrainingSet([data.texts[i] for i in keep], [""] * keep.size, data.weak[keep], data.strong[keep])
    scorer = fit_boost(one, 0)
    assert isinstance(scorer, BoostedGainScorer)
    scores = scorer.score(data.texts[:30])
    assert scores.shape == (30,) and np.all((scores >= 0) & (scores <= 1))
    assert scorer.score([]).shape == (0,)


def test_boost_reads_only_the_last_window_of_a_prompt() -> None:
    data = training_set(make_rows(200, seed=5))
    scorer = fit_boost(data, 0)
    assert scorer.window == BOOST_WINDOW
    tail = data.texts[0] * (BOOST_WINDOW // max(1, len(data.texts[0])) + 2)
    long = "An unrelated passage about another subject entirely. " * 100 + tail
    assert len(long) > BOOST_WINDOW and len(tail) > BOOST_WINDOW
    # what lies before the window changes nothing; what lies inside it does
    assert scorer.score([long])[0] == scorer.score([tail])[0] == scorer.score([tail[-BOOST_WINDOW:]])[0]
    assert np.array_equal(scorer.dense([long]), scorer.dense([tail[-BOOST_WINDOW:]]))
    assert not np.array_equal(scorer.dense([long[:-1]]), scorer.dense([tail[-BOOST_WINDOW:]]))
    # an artifact written before the field reads the whole prompt
    whole = BoostedGainScorer(scorer.features, scorer.heads, scorer.trees)
    assert whole.window is None and not np.array_equal(whole.dense([long]), whole.dense([tail[-BOOST_WINDOW:]]))
