"""The serving path's fast scoring gives the numbers of the straightforward computation the artifacts were
published with: per-prompt Python-free hashing, np.unique, a scipy CSR matrix times the weights, scikit-learn's
own predict. Small artifacts of every kind are trained on real MMLU prompts (synthetic ones when the file is not
here) and scored both ways, one prompt at a time and in batches, through the compiled TF-IDF rows (numba,
ngram_kernel.py, tree_kernel.py) and through the numpy formulation used where numba is not installed."""

from __future__ import annotations

import csv
import functools
import re
from typing import Any

import numpy as np
import pytest
from harness.train_data import make_rows, mmlu_csv
from routeiq_shared import routing_models as rm
from routeiq_train.routers import FITTERS, TrainingSet
from scipy.sparse import csr_matrix

TOLERANCE = 1e-6
ODD_TEXTS = ["", "   ", "?!", "a", "ab", "héllo wörld ☃ 漢字 naïve", "x\ud800y", "word " * 1200, "Zq9" * 2000]


def _rows() -> list[dict[str, str]]:
    path = mmlu_csv()
    if path is None:
        return make_rows(1200, seed=3)
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(params=["compiled", "numpy"])
def rows_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs once through the compiled kernels and once through the numpy formulation."""
    if request.param == "numpy":
        for kernel in ("_compiled_rows", "_compiled_dot", "_compiled_walk", "_compiled_boost"):
            monkeypatch.setattr(rm, kernel, lambda: None)
    return str(request.param)


def test_the_compiled_kernel_is_what_serves_when_numba_is_installed() -> None:
    # numba is a dependency of the `ml` extra: a kernel that failed to import would fall back to numpy silently
    assert None not in (rm._compiled_rows(), rm._compiled_dot(), rm._compiled_walk(), rm._compiled_boost())


@pytest.fixture(scope="module")
def data() -> tuple[TrainingSet, list[str]]:
    rows = _rows()
    fit = rows[::32]  # the file is sorted by subject: a stride covers them all
    fit_set = TrainingSet(
        [r["prompt"] for r in fit],
        [r["subject"] for r in fit],
        np.array([r["mixtral_8x7b_correct"] == "True" for r in fit]),
        np.array([r["gpt_4_1106_correct"] == "True" for r in fit]),
    )
    return fit_set, [r["prompt"] for r in rows[5::23]] + ODD_TEXTS


# --- the reference: the computation as first written, kept deliberately plain -------------------------------


@functools.cache
def ref_ngrams(text: str) -> tuple[np.ndarray, np.ndarray]:
    b = np.frombuffer(text.lower().encode("utf-8", "surrogatepass"), dtype=np.uint8).astype(np.uint64)
    p = np.uint64(0x100000001B3)
    chars = []
    with np.errstate(over="ignore"):
        for n in (3, 4, 5):
            if b.size >= n:
                h = np.zeros(b.size - n + 1, dtype=np.uint64)
                for j in range(n):
                    h = h * p + b[j : b.size - n + 1 + j]
                chars.append(h + np.uint64(n))
        words = []
        for word in _words(text.lower().encode("utf-8", "surrogatepass")):
            # sum of byte * P**position (the position capped at 63), wrapping mod 2**64
            words.append(sum(byte * pow(int(p), min(i, 63), 1 << 64) for i, byte in enumerate(word)) % (1 << 64))
        w = np.array(words, dtype=np.uint64)
        bigrams = w[:-1] * p + w[1:] * np.uint64(31) if w.size else w
    return (np.concatenate(chars) if chars else np.zeros(0, np.uint64)), np.concatenate((w, bigrams))


def _words(raw: bytes) -> list[bytes]:
    word_bytes = set(b"abcdefghijklmnopqrstuvwxyz0123456789") | set(range(128, 256))
    out, current = [], bytearray()
    for byte in raw:
        if byte in word_bytes:
            current.append(byte)
        elif current:
            out.append(bytes(current))
            current = bytearray()
    if current:
        out.append(bytes(current))
    return out


def ref_tfidf(f: rm.HashedTfidf, texts: list[str]) -> csr_matrix:
    indptr, indices, data = [0], [], []
    for text in texts:
        chars, words = ref_ngrams(text)
        size = np.uint64(f.buckets)
        buckets = np.concatenate(((chars % size).astype(np.int64), (words % size).astype(np.int64) + f.buckets))
        cols = f.columns[buckets]
        uniq, counts = np.unique(cols[cols >= 0], return_counts=True)
        vals = (1.0 + np.log(counts)).astype(np.float32) * f.idf[uniq]
        word = f.is_word[uniq]
        for block in (word, ~word):
            norm = float(np.sqrt(np.sum(vals[block] ** 2)))
            if norm > 0:
                vals[block] /= norm * np.sqrt(2.0)
        indices.append(uniq)
        data.append(vals)
        indptr.append(indptr[-1] + uniq.size)
    return csr_matrix((np.concatenate(data), np.concatenate(indices), indptr), shape=(len(texts), f.idf.size))


def ref_dense(d: rm.DenseProjection, texts: list[str]) -> np.ndarray:
    emb = np.asarray(ref_tfidf(d.sparse, texts) @ d.components, dtype=np.float32)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def ref_proba(head: rm.LinearHead, x: Any) -> np.ndarray:
    z = np.asarray(x @ head.weights, dtype=np.float64) + head.intercept
    e = np.exp(z - z.max(axis=1, keepdims=True)) if head.link == "softmax" else 1.0 / (1.0 + np.exp(-z))
    return e / np.maximum(e.sum(axis=1, keepdims=True), 1e-300)


def ref_prompt_features(text: str) -> np.ndarray:
    """The cues as first written: every regex scans the whole text."""
    body = text.rsplit("Answer:", 1)[0]
    options = rm._OPTION.findall(body)
    first = rm._OPTION.search(body)
    stem = body[: first.start()] if first else body
    lengths = np.array([len(o[1]) for o in options], dtype=np.float64) if options else np.zeros(1)
    numeric = sum(1 for o in options if rm._NUMBER.fullmatch(o[1].strip().rstrip("%").replace("$", "")) is not None)
    option_words = [{w.lower() for w in rm._LETTERS.findall(o[1])} for o in options]
    overlap = 0.0
    if len(option_words) >= 2:
        overlap = len(set.intersection(*option_words)) / max(1, len(set.union(*option_words)))
    lower_body, lower_stem = body.lower(), stem.lower()
    words = rm._LETTERS.findall(stem)
    row = (
        np.log1p(len(stem)),
        np.log1p(len(body)),
        np.log1p(lengths.mean()),
        lengths.std() / (lengths.mean() + 1.0),
        np.log1p(lengths.max()),
        len(options),
        numeric / max(1, len(options)),
        overlap,
        np.log1p(len(rm._NUMBER.findall(stem))),
        sum(map(str.isdigit, stem)) / max(1, len(stem)),
        sum(stem.count(c) for c in "=+^*/") / max(1, len(stem)) * 100.0,
        "Statement 1 |" in body,
        "EXCEPT" in stem,
        re.search(r"\bNOT\b", stem) is not None,
        re.search(r"\bLEAST\b", stem) is not None,
        rm._NEGATION.search(lower_stem) is not None,
        "Scenario 1" in body,
        re.search(r"\bI\.|\bII\b", body) is not None,
        "all of the above" in lower_body,
        "none of the above" in lower_body,
        "which of the following" in lower_stem,
        "?" in stem,
        rm._CODE.search(body) is not None,
        rm._UNIT.search(body) is not None,
        stem.count("\n"),
        np.log1p(len(words)),
        sum(1 for w in words if len(w) >= 10) / max(1, len(words)),
        re.search(r"\b(True, True|True, False)\b", body) is not None,
    )
    return np.asarray(row, dtype=np.float64)


def ref_score(scorer: Any, texts: list[str]) -> np.ndarray:
    if isinstance(scorer, rm.RandomScorer):
        return scorer.score(texts)
    if isinstance(scorer, rm.GainClassifierScorer):
        return rm.gain_to_unit(
            rm.expected_gain(ref_proba(scorer.classifier, ref_tfidf(scorer.features, texts)), (-1, 0, 1))
        )
    if isinstance(scorer, rm.MarginScorer):
        head = scorer.classifier
        margin = np.asarray(ref_tfidf(scorer.features, texts) @ head.weights, dtype=np.float64) + head.intercept
        cls = [int(c) for c in head.classes_]
        return 1.0 / (1.0 + np.exp(-scorer.scale * (margin[:, cls.index(1)] - margin[:, cls.index(-1)])))
    if isinstance(scorer, rm.GainRegressorScorer):
        return rm.gain_to_unit(scorer.regressor.predict(ref_dense(scorer.features, texts)))  # scikit-learn's own
    if isinstance(scorer, rm.KnnScorer):
        sims = ref_dense(scorer.features, texts) @ scorer.bank.T
        k = min(scorer.k, scorer.bank.shape[0])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        mean = (scorer.gains[top].sum(axis=1) + scorer.prior * scorer.prior_weight) / (k + scorer.prior_weight)
        return rm.gain_to_unit(mean)
    if isinstance(scorer, rm.MatrixFactorizationScorer):
        q = np.asarray(ref_dense(scorer.features, texts), dtype=np.float64) @ scorer.projection
        logit = (q * (scorer.model_embeddings[1] - scorer.model_embeddings[0])) @ scorer.head + scorer.bias
        return 1.0 / (1.0 + np.exp(-logit))
    if isinstance(scorer, rm.SubjectGainScorer):
        x = ref_tfidf(scorer.features, texts)
        prior = ref_proba(scorer.subject_classifier, x) @ scorer.subject_gains
        item = rm.expected_gain(ref_proba(scorer.item_classifier, x), scorer.item_classifier.classes_)
        return rm.gain_to_unit((1.0 - scorer.item_weight) * prior + scorer.item_weight * item)
    if isinstance(scorer, rm.BoostedGainScorer):
        # the trees are checked against scikit-learn in test_train_boost.py; here, the features feeding them,
        # read from each prompt's last `window` characters (test_train_boost.py checks the window itself)
        texts = rm.windowed(texts, scorer.window)
        hand = np.vstack([rm.prompt_features(t) for t in texts])
        p = scorer.trees.predict_proba(np.hstack((scorer.heads.row(ref_tfidf(scorer.features, texts)), hand)))
        return rm.gain_to_unit(p[:, 0] * p[:, 1] - (1.0 - p[:, 0]) * p[:, 2])
    raise AssertionError(f"no reference for {type(scorer).__name__}")


_FITTED: dict[str, Any] = {}


def _fitted(kind: str, fit: TrainingSet) -> Any:
    """One fit per kind for both rows paths (the paths give the same numbers, so the same fit)."""
    if kind not in _FITTED:
        _FITTED[kind] = FITTERS[kind](fit, 0)
    return _FITTED[kind]


# --- the tests -----------------------------------------------------------------------------------------------


def test_hashes_match_a_byte_by_byte_reference(data: tuple[TrainingSet, list[str]]) -> None:
    _, texts = data
    for text in texts:
        fast, ref = rm.hashed_ngrams(text), ref_ngrams(text)
        assert np.array_equal(fast[0], ref[0]) and np.array_equal(fast[1], ref[1]), text[:60]


def test_tfidf_rows_match_the_reference_matrix(data: tuple[TrainingSet, list[str]], rows_path: str) -> None:
    fit, texts = data
    f = FITTERS["logistic"](fit, 0).features  # type: ignore[attr-defined]  # a real fitted vocabulary
    fast, ref = f.transform(texts), ref_tfidf(f, texts)
    assert fast.shape == ref.shape and fast.dtype == ref.dtype
    assert np.array_equal(fast.indptr, ref.indptr) and np.array_equal(fast.indices, ref.indices)
    assert np.max(np.abs(fast.data - ref.data)) <= TOLERANCE
    w = np.random.default_rng(0).normal(size=(f.idf.size, 5)).astype(np.float32)
    assert np.max(np.abs(f.dot(texts, w) - ref @ w)) <= TOLERANCE
    for i, text in enumerate(texts):  # one prompt at a time, as the gateway scores an idle request
        one = f.transform([text])
        assert np.array_equal(one.indices, ref[i].indices), text[:60]
        assert one.nnz == 0 or np.max(np.abs(one.data - ref[i].data)) <= TOLERANCE


@pytest.mark.parametrize("kind", list(FITTERS))
def test_every_kind_scores_as_the_reference(kind: str, data: tuple[TrainingSet, list[str]], rows_path: str) -> None:
    fit, texts = data
    scorer = _fitted(kind, fit)
    expected = ref_score(scorer, texts)
    one_by_one = np.array([scorer.score([t])[0] for t in texts])
    batched = np.concatenate([scorer.score(texts[i : i + 64]) for i in range(0, len(texts), 64)])
    assert expected.shape == (len(texts),) and np.all((expected >= 0) & (expected <= 1))
    assert np.max(np.abs(one_by_one - expected)) <= TOLERANCE
    assert np.max(np.abs(batched - expected)) <= TOLERANCE


def test_prompt_cues_match_the_plain_scans(data: tuple[TrainingSet, list[str]]) -> None:
    # Unicode digits (str.isdigit but not all of them \d), each guarded regex's literal with and without a match
    odd = ["x \u00b2 \u00b3 \u0663 5 NOT I. II True, True def { 3kg", "Which is NOT\nA. 1\nB. 2\nAnswer:"]
    odd += ["LEAST \u00b9", "NOTE: LEASTWAYS II. True, Truer", "incorrectly 3 kgs {x}"]
    for text in [r["prompt"] for r in _rows()] + ODD_TEXTS + odd:
        assert np.array_equal(rm.prompt_features(text), ref_prompt_features(text)), text[:60]
