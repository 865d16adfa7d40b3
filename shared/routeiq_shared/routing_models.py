"""The learned-router artifact and its scorers (the contract between `routeiq-train` and the gateway).

A learned router is one joblib file holding a `RouterArtifact`. Its `scorer.score(texts)` gives, per prompt, a
float in [0, 1]: how much the prompt needs the STRONG (expensive) model; the gateway sends a prompt to the strong
model iff score >= threshold. The classes live here, not in the training package, so the gateway can unpickle an
artifact without `routeiq-train` installed.

Every learned scorer predicts the same thing: the expected gain of the strong model over the weak one,
P(strong right, weak wrong) - P(weak right, strong wrong), mapped from [-1, 1] to [0, 1]. The decision matters
only where the two models disagree, so that is what the score ranks.

numpy and scikit-learn are imported here only (the `ml` extra): the sidecars import routeiq_shared without them.
Scorers keep no per-call state, so concurrent `score` calls are safe.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import itertools
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

FORMAT_VERSION = 1
GAIN_CLASSES = (-1, 0, 1)  # weak right & strong wrong, both alike, strong right & weak wrong


@runtime_checkable
class Scorer(Protocol):
    def score(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class RouterArtifact:
    kind: str
    scorer: Any  # a Scorer; Any so that pickled third-party scorers need not subclass anything
    default_threshold: float
    roles: tuple[str, str] = ("weak", "strong")
    format_version: int = FORMAT_VERSION


def gain_to_unit(gain: np.ndarray) -> np.ndarray:
    """Expected gain in [-1, 1] -> score in [0, 1]."""
    return np.clip((np.asarray(gain, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)


def expected_gain(proba: np.ndarray, classes: Any) -> np.ndarray:
    """P(+1) - P(-1) from a classifier's predict_proba over some of GAIN_CLASSES."""
    cls = [int(c) for c in classes]
    up = proba[:, cls.index(1)] if 1 in cls else 0.0
    down = proba[:, cls.index(-1)] if -1 in cls else 0.0
    return np.asarray(up - down, dtype=np.float64)


_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
_P = np.uint64(0x100000001B3)  # FNV prime: hashes wrap mod 2**64, the same in every process (unlike hash())
with np.errstate(over="ignore"):
    _POW = np.concatenate(([np.uint64(1)], np.cumprod(np.full(63, _P, dtype=np.uint64))))  # P**0..P**63, wrapping
_WORD = np.zeros(256, dtype=bool)
_WORD[np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)] = True
_WORD[128:] = True  # bytes of non-ASCII letters stay inside a word
_UNSET = object()


def hashed_ngrams(text: str, char_sizes: tuple[int, ...] = (3, 4, 5)) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of a prompt's character n-grams and of its word 1- and 2-grams, computed with numpy over the UTF-8
    bytes (no Python loop over the characters), so its cost grows slowly with the prompt's length."""
    raw = np.frombuffer(text.lower().encode("utf-8", "surrogatepass"), dtype=np.uint8)
    b = raw.astype(np.uint64)
    chars = []
    with np.errstate(over="ignore"):
        h: np.ndarray | None = None
        built = 0
        for n in char_sizes:
            if b.size >= n:
                if h is not None and n == built + 1:  # the (n-1)-gram hash extended by one byte: same value
                    h = h[:-1] * _P + b[n - 1 :]
                else:
                    h = np.zeros(b.size - n + 1, dtype=np.uint64)
                    for j in range(n):
                        h = h * _P + b[j : b.size - n + 1 + j]
                built = n
                chars.append(h + np.uint64(n))
        char_hashes = np.concatenate(chars) if chars else np.zeros(0, dtype=np.uint64)
        inword = _WORD[raw]
        begins = inword.copy()
        begins[1:] &= ~inword[:-1]
        starts = begins.nonzero()[0]
        if starts.size:
            idx = inword.nonzero()[0]
            first = np.searchsorted(idx, starts)  # where each word's bytes start in idx
            word_of = np.cumsum(begins[idx]) - 1  # word number of each in-word byte
            pos = np.minimum(idx - starts[word_of], 63)
            words = np.add.reduceat(b[idx] * _POW[pos], first)
            bigrams = words[:-1] * _P + words[1:] * np.uint64(31)
            word_hashes = np.concatenate((words, bigrams))
        else:
            word_hashes = np.zeros(0, dtype=np.uint64)
    return char_hashes, word_hashes


def hashed_buckets(text: str, buckets: int) -> np.ndarray:
    """Bucket of each n-gram: character n-grams in [0, buckets), word n-grams in [buckets, 2 * buckets)."""
    chars, words = hashed_ngrams(text)
    out = np.empty(chars.size + words.size, dtype=np.int64)
    if buckets & (buckets - 1) == 0:  # a power of two: a mask, the same value as the (slow) 64-bit modulo
        mask = np.uint64(buckets - 1)
        np.bitwise_and(chars, mask, out=out[: chars.size], casting="unsafe")
        np.bitwise_and(words, mask, out=out[chars.size :], casting="unsafe")
    else:
        size = np.uint64(buckets)
        np.remainder(chars, size, out=out[: chars.size], casting="unsafe")
        np.remainder(words, size, out=out[chars.size :], casting="unsafe")
    out[chars.size :] += buckets
    return out


def _csr_dot(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """CSR rows (float32) times a dense (n_features, d) matrix: what `csr_matrix(...) @ dense` computes, through
    the same scipy kernel (so the same float32 sums, in the same order, bit for bit), without building a
    csr_matrix and its checks, which cost more than the product for one short prompt."""
    dense = np.ascontiguousarray(dense)
    rows = indptr.size - 1
    if indptr[-1] <= np.iinfo(np.int32).max:  # the kernel wants one index type; int32 as scipy would pick
        indptr, indices = indptr.astype(np.int32), indices.astype(np.int32, copy=False)
    else:
        indptr, indices = indptr.astype(np.int64, copy=False), indices.astype(np.int64)
    matvecs = _csr_matvecs()
    if matvecs is None or dense.ndim != 2 or dense.dtype != data.dtype:
        from scipy.sparse import csr_matrix

        return np.asarray(csr_matrix((data, indices, indptr), shape=(rows, dense.shape[0])) @ dense)
    out = np.zeros((rows, dense.shape[1]), dtype=data.dtype)
    matvecs(rows, dense.shape[0], dense.shape[1], indptr, indices, data, dense.ravel(), out.ravel())
    return out


@functools.cache
def _csr_matvecs() -> Any:
    try:
        from scipy.sparse._sparsetools import csr_matvecs  # scipy's own CSR @ dense kernel
    except ImportError:  # a scipy without it: csr_matrix, same numbers, slower
        return None
    return csr_matvecs


@functools.cache
def _kernel(module: str, name: str) -> Any:
    """A compiled kernel (routeiq_shared.<module>.<name>), or None where numba is not installed: then the numpy
    formulation computes the same numbers, ~3x slower. Imported on first use, not with this module (numba takes
    ~0.3 s to import). Its machine code is cached on disk (NUMBA_CACHE_DIR, by default a folder of the temp dir:
    the package's own folder is read-only in the images), so a machine compiles a kernel once, not every start."""
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "routeiq-numba-cache"))
    try:
        return getattr(importlib.import_module(f"routeiq_shared.{module}"), name)
    except ImportError:
        return None


# One name per kernel, looked up at each use, so the tests can take a kernel away and check the numpy path.
def _compiled_rows() -> Any:
    return _kernel("ngram_kernel", "tfidf_rows")


def _compiled_dot() -> Any:
    return _kernel("ngram_kernel", "tfidf_dot")


def _compiled_walk() -> Any:
    return _kernel("tree_kernel", "leaf_values")


def _compiled_boost() -> Any:
    return _kernel("tree_kernel", "boost_proba")


def _packed(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The kernels' input: every text lower-cased and UTF-8 encoded, concatenated, and where each starts."""
    encoded = [t.lower().encode("utf-8", "surrogatepass") for t in texts]
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


BATCH_CHUNK = 256  # texts hashed in one pass: bounds the temporary arrays (~50 bytes per prompt byte)


def _batch_buckets(texts: list[str], buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """hashed_buckets of several texts in one pass over their concatenated bytes: (bucket ids, the text of each).
    n-grams and words never span two texts. Only for a power-of-two `buckets` and the default n-gram sizes."""
    encoded = [t.lower().encode("utf-8", "surrogatepass") for t in texts]
    raw = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    size = raw.size
    # 32-bit indices where they fit: half the memory traffic of every pass, and a faster sort in _batch_rows
    index: type[np.signedinteger[Any]] = np.int32 if size < 2**31 and 2 * buckets * len(texts) < 2**31 else np.int64
    lengths = np.fromiter(map(len, encoded), dtype=index, count=len(encoded))
    text_of = np.repeat(np.arange(len(texts), dtype=index), lengths)  # per byte
    starts_of = np.cumsum(lengths, dtype=index) - lengths
    pos = np.arange(size, dtype=index) - starts_of[text_of]  # the byte's offset in its text
    left = lengths[text_of] - pos  # bytes from it to its text's end, itself included
    b = raw.astype(np.uint64)
    mask = np.uint64(buckets - 1)
    ids: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    with np.errstate(over="ignore"):
        h = np.zeros(0, dtype=np.uint64)
        for n in (3, 4, 5):
            if size < n:
                break
            # 3-grams from scratch, then each (n-1)-gram hash extended by one byte (as in hashed_ngrams)
            h = (b[:-2] * _P + b[1:-1]) * _P + b[2:] if n == 3 else h[:-1] * _P + b[n - 1 :]
            whole = left[: size - n + 1] >= n  # the n-gram ends inside its text
            ids.append((h[whole] + np.uint64(n)) & mask)
            owners.append(text_of[: size - n + 1][whole])
        inword = _WORD[raw]
        begins = inword.copy()
        begins[1:] &= ~inword[:-1] | (pos[1:] == 0)  # a word also begins where a text does
        word_starts = begins.nonzero()[0]
        if word_starts.size:
            idx = inword.nonzero()[0]
            word_of = np.cumsum(begins[idx]) - 1
            wpos = np.minimum(idx - word_starts[word_of], 63)
            words = np.add.reduceat(b[idx] * _POW[wpos], np.searchsorted(idx, word_starts))
            wtext = text_of[word_starts]
            same = wtext[:-1] == wtext[1:]  # a bigram's two words in one text
            bigrams = (words[:-1] * _P + words[1:] * np.uint64(31))[same]
            ids += [(words & mask) + np.uint64(buckets), (bigrams & mask) + np.uint64(buckets)]
            owners += [wtext, wtext[:-1][same]]
    if not ids:
        return np.zeros(0, dtype=index), np.zeros(0, dtype=index)
    return np.concatenate(ids).astype(index), np.concatenate(owners)


def _unique_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_counts=True) by hand (sorts `values` in place): one sort and a diff, without its
    general-case overhead, which is most of its cost on a prompt's few thousand values."""
    values.sort()
    first = np.empty(values.size, dtype=bool)
    first[:1] = True
    np.not_equal(values[1:], values[:-1], out=first[1:])
    starts = first.nonzero()[0]
    counts = np.empty_like(starts)
    counts[:-1] = starts[1:]
    counts[-1:] = values.size
    counts -= starts
    return values[starts], counts


def _batch_rows(f: HashedTfidf, texts: list[str], split: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HashedTfidf.row for several texts at once, the same numbers: one sort of (text, column) keys for every
    text's unique columns and counts, one segmented sum for the norms of every (text, block)."""
    ids, owner = _batch_buckets(texts, f.buckets)
    # Sorted (text, bucket) keys: columns grow with buckets (fit numbers them in bucket order), so the unique
    # keys give each text's columns already sorted, and the column table is read once per distinct n-gram, in
    # address order (it is 8 MB: random reads of it were the larger part of the cost).
    shift = ids.dtype.type((2 * f.buckets).bit_length() - 1)  # keys = text << shift | bucket: no divisions
    uniq, counts = _unique_counts((owner << shift) | ids)
    row_of = uniq >> shift
    col = f.columns[uniq & ((ids.dtype.type(1) << shift) - 1)]
    known = col >= 0
    row_of, col, counts = row_of[known], col[known], counts[known]
    vals = (1.0 + np.log(counts)).astype(np.float32) * f.idf[col]
    # Blocks (a text's character columns, then its word columns) are runs of the sorted keys.
    block = row_of * 2 + (col >= split)
    new_block = np.empty(block.size, dtype=bool)
    new_block[:1] = True
    np.not_equal(block[1:], block[:-1], out=new_block[1:])
    block_starts = new_block.nonzero()[0]
    if block_starts.size:
        # float32 sums block by block: np.add.reduce's pairwise order, which reduceat does not follow
        squares = np.square(vals)
        bounds = [*block_starts.tolist(), vals.size]
        sums = [np.add.reduce(squares[lo:hi]) for lo, hi in itertools.pairwise(bounds)]
        norms = np.sqrt(np.array(sums, dtype=np.float32))
        of = np.cumsum(new_block) - 1
        divisor = norms.astype(np.float64) * np.sqrt(2.0)
        scaled = (vals / divisor[of]).astype(np.float32)
        vals = np.where(norms[of] > 0, scaled, vals)
    indptr = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of, minlength=len(texts)), out=indptr[1:])
    return indptr, col, vals


@dataclass(frozen=True)
class HashedTfidf:
    """TF-IDF over hashed character 3-5-grams and word 1-2-grams, each block L2-normalised then scaled by
    1/sqrt(2). `columns` maps a hash bucket to its feature column (-1: not in the vocabulary learned at fit)."""

    columns: np.ndarray  # (2 * buckets,) int32
    idf: np.ndarray  # (n_features,) float32
    is_word: np.ndarray  # (n_features,) bool
    buckets: int

    def transform(self, texts: list[str]) -> Any:
        from scipy.sparse import csr_matrix

        indptr, indices, data = self.rows(texts)
        return csr_matrix((data, indices, indptr), shape=(len(texts), self.idf.size))

    def rows(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The CSR arrays (indptr, indices, data) of transform(texts), without the matrix. Several texts are
        hashed together (_batch_rows), in chunks, so numpy's per-call overhead is paid once per chunk."""
        split = self._fast_split()
        if split is None:
            return self._rows_one_by_one(texts)
        compiled = _compiled_rows()
        if compiled is not None and texts:
            raw, offsets = _packed(texts)
            bits, base = self._column_index()
            return compiled(raw, offsets, bits, base, self.idf, self.buckets, split)  # type: ignore[no-any-return]
        if len(texts) > 1:
            parts = [_batch_rows(self, texts[i : i + BATCH_CHUNK], split) for i in range(0, len(texts), BATCH_CHUNK)]
            if len(parts) == 1:
                return parts[0]
            ends = np.cumsum([p[0][-1] for p in parts])
            return (
                np.concatenate([[0]] + [p[0][1:] + (ends[i - 1] if i else 0) for i, p in enumerate(parts)]),
                np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]),
            )
        return self._rows_one_by_one(texts)

    def _rows_one_by_one(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        indices: list[np.ndarray] = []
        data: list[np.ndarray] = []
        for i, text in enumerate(texts):
            cols, vals = self.row(text)
            indices.append(cols)
            data.append(vals)
            indptr[i + 1] = indptr[i] + cols.size
        return (
            indptr,
            np.concatenate(indices) if indices else np.zeros(0, np.int32),
            np.concatenate(data) if data else np.zeros(0, np.float32),
        )

    def dot(self, texts: list[str], dense: np.ndarray) -> np.ndarray:
        """transform(texts) @ dense, the same float32 numbers, computed without building the sparse matrix (and,
        compiled, without the CSR arrays either: the weights' rows are read as each n-gram's value is known)."""
        compiled = _compiled_dot() if texts and dense.dtype == np.float32 and dense.ndim == 2 else None
        split = self._fast_split()
        if compiled is None or split is None:
            return _csr_dot(*self.rows(texts), dense)
        raw, offsets = _packed(texts)
        bits, base = self._column_index()
        out = compiled(raw, offsets, bits, base, self.idf, self.buckets, split, np.ascontiguousarray(dense))
        return out  # type: ignore[no-any-return]

    def row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        cols = self.columns[hashed_buckets(text, self.buckets)]
        uniq, counts = _unique_counts(cols[cols >= 0])
        vals = (1.0 + np.log(counts)).astype(np.float32) * self.idf[uniq]
        split = self._word_start()
        if split is not None:  # word columns after character ones: the blocks are slices, no masks to build
            cut = int(np.searchsorted(uniq, split))
            blocks: tuple[Any, ...] = (slice(cut, None), slice(0, cut))
        else:
            word = self.is_word[uniq]
            blocks = (word, ~word)
        for block in blocks:
            norm = float(np.sqrt(np.add.reduce(np.square(vals[block]))))
            if norm > 0:
                vals[block] /= norm * np.sqrt(2.0)
        return uniq.astype(np.int32), vals

    def _fast_split(self) -> int | None:
        """The first word column when the batch and compiled paths apply (columns numbered in bucket order, word
        columns after character ones, a power-of-two bucket count), else None: one text at a time."""
        split = self._word_start()
        if split is None or not self._ordered() or self.buckets & (self.buckets - 1) != 0:
            return None
        return split

    def _word_start(self) -> int | None:
        """The first word column when every word column follows every character one (as fit writes them), else
        None. Derived once and kept off the pickle (__getstate__), so artifacts stay as they were."""
        cached = self.__dict__.get("_word_start_cache", _UNSET)
        if cached is _UNSET:
            first = int(np.argmax(self.is_word)) if self.is_word.any() else int(self.is_word.size)
            cached = first if not self.is_word[:first].any() and self.is_word[first:].all() else None
            object.__setattr__(self, "_word_start_cache", cached)
        return cached  # type: ignore[no-any-return]

    def _column_index(self) -> tuple[np.ndarray, np.ndarray]:
        """ngram_kernel.column_index(columns), built on first use and kept like _word_start."""
        cached = self.__dict__.get("_column_index_cache")
        if cached is None:
            from routeiq_shared.ngram_kernel import column_index

            cached = column_index(self.columns)
            object.__setattr__(self, "_column_index_cache", cached)
        return cached  # type: ignore[no-any-return]

    def _ordered(self) -> bool:
        """Whether columns grow with buckets (as fit numbers them), which the batch path relies on. Kept like
        _word_start."""
        cached = self.__dict__.get("_ordered_cache")
        if cached is None:
            kept = self.columns[self.columns >= 0]
            cached = bool(np.all(kept[1:] > kept[:-1]))
            object.__setattr__(self, "_ordered_cache", cached)
        return cached

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.endswith("_cache")}


@dataclass(frozen=True)
class LinearHead:
    """A fitted linear classifier reduced to its weights, scored without scikit-learn's per-call checks.
    link "softmax": multinomial logistic regression; "ovr": one-vs-rest logistic, normalised; "margin": raw."""

    weights: np.ndarray  # (n_features, n_classes) C-contiguous float32
    intercept: np.ndarray  # (n_classes,)
    classes_: np.ndarray
    link: str = "softmax"

    @classmethod
    def from_model(cls, model: Any, link: str) -> LinearHead:
        coef = np.asarray(model.coef_, dtype=np.float64)
        intercept = np.asarray(model.intercept_, dtype=np.float64)
        classes = np.asarray(model.classes_)
        if coef.shape[0] == 1 and classes.size == 2:  # binary: one row for the second class
            coef = np.vstack((-coef, coef)) / (2.0 if link == "softmax" else 1.0)
            intercept = np.concatenate((-intercept, intercept)) / (2.0 if link == "softmax" else 1.0)
        # float32 like the features: half the artifact, and the product for one prompt stays in cache
        return cls(np.ascontiguousarray(coef.T, dtype=np.float32), intercept, classes, link)

    def decision_function(self, x: Any) -> np.ndarray:
        return self.decision_of_product(x @ self.weights)

    def decision_of_product(self, product: Any) -> np.ndarray:
        """decision_function given x @ weights (computed by the caller, e.g. HashedTfidf.dot)."""
        return np.asarray(product, dtype=np.float64) + self.intercept

    def predict_proba(self, x: Any) -> np.ndarray:
        return self.proba_of_decision(self.decision_function(x))

    def proba_of_decision(self, z: np.ndarray) -> np.ndarray:
        if self.link == "softmax":
            e = np.exp(z - z.max(axis=1, keepdims=True))
        elif self.link == "ovr":
            e = 1.0 / (1.0 + np.exp(-z))
        else:
            raise ValueError(f"a {self.link} head has no probabilities")
        return e / np.maximum(e.sum(axis=1, keepdims=True), 1e-300)


def linear_decision(features: Any, head: Any, texts: list[str]) -> np.ndarray:
    """head.decision_function(features.transform(texts)); for hashed TF-IDF into a LinearHead, the product is
    taken straight from the n-gram columns (the same numbers, without the sparse matrix)."""
    if isinstance(features, HashedTfidf) and isinstance(head, LinearHead):
        return head.decision_of_product(features.dot(texts, head.weights))
    return np.asarray(head.decision_function(features.transform(texts)))


def linear_proba(features: Any, head: Any, texts: list[str]) -> np.ndarray:
    """head.predict_proba(features.transform(texts)), fast for hashed TF-IDF into a LinearHead."""
    if isinstance(features, HashedTfidf) and isinstance(head, LinearHead):
        return head.proba_of_decision(linear_decision(features, head, texts))
    return np.asarray(head.predict_proba(features.transform(texts)))


@dataclass(frozen=True)
class DenseProjection:
    """Sparse text features -> a fixed linear projection (e.g. from a truncated SVD) -> unit rows. The projection
    is stored C-contiguous as (n_features, d) so one prompt costs a sparse row times a dense matrix, no copy."""

    sparse: Any  # fitted transformer: list[str] -> scipy sparse matrix
    components: np.ndarray  # (n_features, d) float32

    def transform(self, texts: list[str]) -> np.ndarray:
        if isinstance(self.sparse, HashedTfidf):
            emb = np.asarray(self.sparse.dot(texts, self.components), dtype=np.float32)
        else:
            emb = np.asarray(self.sparse.transform(texts) @ self.components, dtype=np.float32)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return emb / np.maximum(norms, 1e-12)


def _mlp_layers(model: Any) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """(coef, intercept) per layer of a fitted scikit-learn MLP whose forward pass is relu then identity (what
    routeiq-train fits), else None: anything else goes through its own predict()."""
    coefs, intercepts = getattr(model, "coefs_", None), getattr(model, "intercepts_", None)
    if not isinstance(coefs, list) or not isinstance(intercepts, list) or len(coefs) != len(intercepts):
        return None
    if getattr(model, "activation", None) != "relu" or getattr(model, "out_activation_", None) != "identity":
        return None
    return list(zip(coefs, intercepts, strict=True))


@dataclass(frozen=True)
class RandomScorer:
    """A uniform score from a hash of the prompt: the baseline, and reproducible (one prompt, one score)."""

    salt: str = "routeiq"

    def score(self, texts: list[str]) -> np.ndarray:
        out = np.empty(len(texts), dtype=np.float64)
        for i, text in enumerate(texts):
            digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=self.salt.encode())
            out[i] = int.from_bytes(digest.digest(), "big") / 2.0**64
        return out


@dataclass(frozen=True)
class GainClassifierScorer:
    """features -> a classifier over GAIN_CLASSES with predict_proba (logistic)."""

    features: Any  # fitted transformer: list[str] -> matrix
    classifier: Any

    def score(self, texts: list[str]) -> np.ndarray:
        proba = linear_proba(self.features, self.classifier, texts)
        return gain_to_unit(expected_gain(proba, self.classifier.classes_))


@dataclass(frozen=True)
class GainRegressorScorer:
    """features -> a regressor of the gain in [-1, 1] (mlp)."""

    features: Any
    regressor: Any

    def score(self, texts: list[str]) -> np.ndarray:
        x = self.features.transform(texts)
        layers = _mlp_layers(self.regressor)
        if layers is None:
            return gain_to_unit(self.regressor.predict(x))
        # scikit-learn's MLP forward pass, op for op, without its per-call input validation
        for i, (coef, intercept) in enumerate(layers):
            x = x @ coef
            x += intercept
            if i < len(layers) - 1:
                np.maximum(x, 0, out=x)
        return gain_to_unit(x.ravel() if x.shape[1] == 1 else x)


@dataclass(frozen=True)
class MarginScorer:
    """features -> a linear multi-class SVM over GAIN_CLASSES; the margin of +1 over -1 through a logistic
    squashing fitted at training (`scale`), so the score is in [0, 1] and ordered like the margin."""

    features: Any
    classifier: Any
    scale: float = 1.0

    def score(self, texts: list[str]) -> np.ndarray:
        margin = linear_decision(self.features, self.classifier, texts)
        cls = [int(c) for c in self.classifier.classes_]
        diff = margin[:, cls.index(1)] - margin[:, cls.index(-1)]
        return 1.0 / (1.0 + np.exp(-self.scale * diff))


@dataclass(frozen=True)
class KnnScorer:
    """Mean gain of the k nearest training prompts by cosine similarity in a dense (SVD of TF-IDF) space,
    shrunk towards the overall mean gain. One matrix product per batch: no index to load per call."""

    features: Any  # list[str] -> dense, L2-normalised rows
    bank: np.ndarray  # (n_train, d) float32, L2-normalised
    gains: np.ndarray  # (n_train,) in {-1, 0, 1}
    k: int = 25
    prior: float = 0.0
    prior_weight: float = 2.0

    def score(self, texts: list[str]) -> np.ndarray:
        emb = np.asarray(self.features.transform(texts), dtype=np.float32)
        sims = emb @ self.bank.T
        k = min(self.k, self.bank.shape[0])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        mean = (self.gains[top].sum(axis=1) + self.prior * self.prior_weight) / (k + self.prior_weight)
        return gain_to_unit(mean)


@dataclass(frozen=True)
class MatrixFactorizationScorer:
    """RouteLLM's matrix factorisation: a prompt embedding q (a fixed dense text embedding, projected by a learned
    W), a learned embedding v_m per model, and P(strong beats weak) = sigmoid(w . ((v_strong - v_weak) * Wq) + b)."""

    features: Any  # list[str] -> dense rows
    projection: np.ndarray  # (d_in, d)
    model_embeddings: np.ndarray  # (2, d): weak, strong
    head: np.ndarray  # (d,)
    bias: float = 0.0

    def score(self, texts: list[str]) -> np.ndarray:
        q = np.asarray(self.features.transform(texts), dtype=np.float64) @ self.projection
        diff = self.model_embeddings[1] - self.model_embeddings[0]
        logit = (q * diff) @ self.head + self.bias
        return 1.0 / (1.0 + np.exp(-logit))


@dataclass(frozen=True)
class SubjectGainScorer:
    """The stronger router: a subject classifier learned from the prompt text (the subject is not in the prompt,
    so the router guesses it) gives P(subject | prompt); each subject's gain measured at training gives a prior;
    an item-level gain classifier adjusts it for this prompt. score = blend of the two expected gains."""

    features: Any
    subject_classifier: Any  # predict_proba over subjects
    subject_gains: np.ndarray  # expected gain per subject_classifier.classes_
    item_classifier: Any  # predict_proba over GAIN_CLASSES
    item_weight: float = 0.5
    subjects: tuple[str, ...] = field(default_factory=tuple)  # informational

    def score(self, texts: list[str]) -> np.ndarray:
        feats, subj, itm = self.features, self.subject_classifier, self.item_classifier
        if isinstance(feats, HashedTfidf) and isinstance(subj, LinearHead) and isinstance(itm, LinearHead):
            # hashed once for both heads: one product with their weights side by side (each output column is its
            # own sum, so the numbers are each head's own)
            joint = self.__dict__.get("_joint_cache")
            if joint is None:
                joint = np.ascontiguousarray(np.hstack((subj.weights, itm.weights)))
                object.__setattr__(self, "_joint_cache", joint)
            product = feats.dot(texts, joint)
            cut = subj.weights.shape[1]
            subject = subj.proba_of_decision(subj.decision_of_product(product[:, :cut]))
            item_proba = itm.proba_of_decision(itm.decision_of_product(product[:, cut:]))
        else:
            x = self.features.transform(texts)
            subject, item_proba = self.subject_classifier.predict_proba(x), self.item_classifier.predict_proba(x)
        prior = subject @ self.subject_gains
        item = expected_gain(item_proba, self.item_classifier.classes_)
        return gain_to_unit((1.0 - self.item_weight) * prior + self.item_weight * item)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.endswith("_cache")}


_OPTION = re.compile(r"^\s*([A-J])[.)]\s*(.*)$", re.M)
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")
_LETTERS = re.compile(r"[A-Za-z]+")
_NEGATION = re.compile(r"\b(not|never|least|false|incorrect)\b")
_CODE = re.compile(r"def |\{|\};|print\(|return |#include")
_UNIT = re.compile(r"\d\s*(?:m/s|kg|cm|mm|km|J|N|V|W|Hz|mol|K|°|%|\$)")
PROMPT_FEATURES = (
    "log_stem_chars", "log_body_chars", "log_mean_option_chars", "option_length_spread", "log_max_option_chars",
    "options", "numeric_option_share", "option_word_overlap", "log_stem_numbers", "stem_digit_share",
    "stem_operator_per_100", "statement_pair", "except", "upper_not", "upper_least", "negation_word", "scenario_pair",
    "roman_items", "all_of_the_above", "none_of_the_above", "which_of_the_following", "question_mark", "code",
    "units", "stem_lines", "log_stem_words", "long_word_share", "true_false_options",
)  # fmt: skip


_NOT = re.compile(r"\bNOT\b")
_LEAST = re.compile(r"\bLEAST\b")
_ROMAN = re.compile(r"\bI\.|\bII\b")
_TRUE_FALSE = re.compile(r"\b(True, True|True, False)\b")
_NEGATION_WORDS = ("not", "never", "least", "false", "incorrect")
_CODE_MARKS = ("def ", "{", "};", "print(", "return ", "#include")  # _CODE's alternatives, all literals


@functools.cache
def _digits_removed() -> dict[int, None]:
    """str.translate table deleting every character str.isdigit() accepts (Unicode digits included)."""
    return {c: None for c in range(0x110000) if chr(c).isdigit()}


def windowed(texts: list[str], window: int | None) -> list[str]:
    """Each text cut to its last `window` characters (None: as it is)."""
    if window is None:
        return texts
    return [t[-window:] if len(t) > window else t for t in texts]


def prompt_features(text: str) -> np.ndarray:
    """Hand-made difficulty cues of a multiple-choice prompt (what TF-IDF sees only weakly): the stem's and the
    options' lengths, numbers and formulae, negations (EXCEPT, NOT, LEAST), "Statement 1 |" pairs, option overlap,
    code, units. One row of len(PROMPT_FEATURES) floats; a prompt without options just has zeros there.
    Each regex scan over the whole text is skipped where a substring test shows it cannot match (a regex led by
    \b gets no literal-prefix search from `re`): the same values as scanning, at a third of the cost on long
    prompts (tests/unit/test_scoring_fast_path.py checks them against the plain scans on every MMLU prompt)."""
    body = text.rsplit("Answer:", 1)[0]
    options = _OPTION.findall(body)
    first = _OPTION.search(body)
    stem = body[: first.start()] if first else body
    mean, spread, longest = _length_stats([float(len(o[1])) for o in options])
    numeric = sum(1 for o in options if _NUMBER.fullmatch(o[1].strip().rstrip("%").replace("$", "")) is not None)
    option_words = [{w.lower() for w in _LETTERS.findall(o[1])} for o in options]
    overlap = 0.0
    if len(option_words) >= 2:
        overlap = len(set.intersection(*option_words)) / max(1, len(set.union(*option_words)))
    lower_body, lower_stem = body.lower(), stem.lower()
    words = _LETTERS.findall(stem)
    stem_digits = len(stem) - len(stem.translate(_digits_removed()))
    body_has_digit = stem_digits > 0 or len(body.translate(_digits_removed())) < len(body)
    row = (
        np.log1p(len(stem)),
        np.log1p(len(body)),
        np.log1p(mean),
        spread / (mean + 1.0),
        np.log1p(longest),
        len(options),
        numeric / max(1, len(options)),
        overlap,
        np.log1p(len(_NUMBER.findall(stem)) if stem_digits else 0),
        stem_digits / max(1, len(stem)),
        sum(stem.count(c) for c in "=+^*/") / max(1, len(stem)) * 100.0,
        "Statement 1 |" in body,
        "EXCEPT" in stem,
        "NOT" in stem and _NOT.search(stem) is not None,
        "LEAST" in stem and _LEAST.search(stem) is not None,
        any(w in lower_stem for w in _NEGATION_WORDS) and _NEGATION.search(lower_stem) is not None,
        "Scenario 1" in body,
        ("I." in body or "II" in body) and _ROMAN.search(body) is not None,
        "all of the above" in lower_body,
        "none of the above" in lower_body,
        "which of the following" in lower_stem,
        "?" in stem,
        any(mark in body for mark in _CODE_MARKS),
        body_has_digit and _UNIT.search(body) is not None,
        stem.count("\n"),
        np.log1p(len(words)),
        sum(1 for w in words if len(w) >= 10) / max(1, len(words)),
        "True, " in body and _TRUE_FALSE.search(body) is not None,
    )
    return np.asarray(row, dtype=np.float64)


def _length_stats(lengths: list[float]) -> tuple[float, float, float]:
    """mean, std and max of the options' lengths (zeros without options), as numpy computes them (the trees were
    trained on numpy's values; its log1p, kept above, differs from math.log1p in the last bit): below 8 values
    numpy sums left to right, as here (a prompt's few options cost ~13 us through numpy, ~1 us here); from 8 on
    its pairwise sum may round differently, so numpy does it."""
    n = len(lengths)
    if n == 0:
        return 0.0, 0.0, 0.0
    if n >= 8:
        a = np.array(lengths)
        return float(a.mean()), float(a.std()), float(a.max())
    mean = sum(lengths) / n
    return mean, math.sqrt(sum((x - mean) * (x - mean) for x in lengths) / n), max(lengths)


@dataclass(frozen=True)
class BoostedTrees:
    """Several fitted binary gradient-boosted tree models (scikit-learn's HistGradientBoostingClassifier) reduced
    to one flat node table, so a prompt walks every tree of every model in a few vectorised steps instead of the
    estimator's per-call checks. A node goes to children[node, 1] where x[feature] <= threshold, else to
    children[node, 0]; a leaf points to itself (threshold +inf), so every walk takes `depth` steps. Inputs have no
    NaN, so there is no missing-value branch."""

    feature: np.ndarray  # (n_nodes,) int64
    threshold: np.ndarray  # (n_nodes,) float64
    children: np.ndarray  # (n_nodes, 2) int64: [right, left]
    value: np.ndarray  # (n_nodes,) float64, leaf value (0 inside)
    roots: np.ndarray  # (n_trees,) int64, the trees of model 0, then model 1, ...
    model_starts: np.ndarray  # (n_models,) index in roots of each model's first tree
    baselines: np.ndarray  # (n_models,) raw score (log-odds) before the trees
    depth: int

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """P(label) of each model, (n_rows, n_models), for rows x (n_rows, n_inputs)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        raw = np.broadcast_to(self.baselines, (x.shape[0], self.baselines.size)).copy()
        if self.roots.size:
            walk = _compiled_walk()
            if walk is not None:
                values = walk(self.feature, self.threshold, self.children, self.value, self.roots, self.depth, x)
            else:
                nodes = np.broadcast_to(self.roots, (x.shape[0], self.roots.size))
                rows = np.arange(x.shape[0])[:, None]
                for _ in range(self.depth):
                    goes_left = x[rows, self.feature[nodes]] <= self.threshold[nodes]
                    nodes = self.children[nodes, goes_left.astype(np.int64)]
                values = self.value[nodes]
            for m, start in enumerate(self.model_starts):
                end = self.model_starts[m + 1] if m + 1 < self.model_starts.size else self.roots.size
                raw[:, m] += values[:, start:end].sum(axis=1)
        return 1.0 / (1.0 + np.exp(-raw))


@dataclass(frozen=True)
class StackHeads:
    """The linear TF-IDF heads of `boost` as one weight matrix (one sparse product per batch): a one-vs-rest
    subject classifier, then binary softmax heads for "weak wrong" and "strong wrong", then a softmax over
    GAIN_CLASSES. `row` gives the 11 dense columns the trees read: P(subject) @ subject_stats (4), the top
    subject's probability, the posterior's entropy, P(weak wrong), P(strong wrong), P(gain = -1, 0, 1)."""

    weights: np.ndarray  # (n_features, n_subjects + 7) float32
    intercept: np.ndarray  # (n_subjects + 7,)
    subject_stats: np.ndarray  # (n_subjects, 4): gain, P(weak wrong), P(strong right | ww), P(strong wrong | wr)
    subjects: tuple[str, ...]

    def row(self, x: Any) -> np.ndarray:
        return self.row_of_product(x @ self.weights)

    def row_of_product(self, product: Any) -> np.ndarray:
        """row(x) given x @ weights (computed by the caller, e.g. HashedTfidf.dot, without the sparse matrix)."""
        z = np.asarray(product, dtype=np.float64) + self.intercept
        k = len(self.subjects)
        p = 1.0 / (1.0 + np.exp(-z[:, :k]))
        p /= np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
        entropy = -(p * np.log(p + 1e-12)).sum(axis=1)
        weak_wrong = 1.0 / (1.0 + np.exp(z[:, k] - z[:, k + 1]))
        strong_wrong = 1.0 / (1.0 + np.exp(z[:, k + 2] - z[:, k + 3]))
        g = z[:, k + 4 :]
        g = np.exp(g - g.max(axis=1, keepdims=True))
        g /= g.sum(axis=1, keepdims=True)
        return np.column_stack((p @ self.subject_stats, p.max(axis=1), entropy, weak_wrong, strong_wrong, g))


@dataclass(frozen=True)
class BoostedGainScorer:
    """Kind `boost`: the gain decomposed as P(+1) - P(-1) = P(weak wrong) * P(strong right | weak wrong)
    - P(weak right) * P(strong wrong | weak right). P(weak wrong) is learned on every row (a balanced label, where
    the gain's +1 is rare), each part by small boosted trees (`trees`, models in that order) over one dense row:
    the linear heads' outputs (StackHeads) and prompt_features."""

    features: Any  # HashedTfidf
    heads: StackHeads
    trees: BoostedTrees  # models: weak wrong, strong right | weak wrong, strong wrong | weak right
    # Only the last `window` characters of a prompt are read (its question and options; a long prompt's start
    # is mostly a passage): the decision's cost is bounded whatever the prompt's length. None: the whole prompt
    # (artifacts written before the field have no window).
    window: int | None = None

    def dense(self, texts: list[str]) -> np.ndarray:
        texts = windowed(texts, self.window)
        hand = _hand_rows(texts)
        if isinstance(self.features, HashedTfidf):
            heads = self.heads.row_of_product(self.features.dot(texts, self.heads.weights))
        else:
            heads = self.heads.row(self.features.transform(texts))
        return np.hstack((heads, hand))

    def score(self, texts: list[str]) -> np.ndarray:
        fused = _compiled_boost()
        t = self.trees
        if fused is not None and isinstance(self.features, HashedTfidf) and t.roots.size:
            texts = windowed(texts, self.window)
            product = np.ascontiguousarray(self.features.dot(texts, self.heads.weights))
            h = self.heads
            p = fused(product, h.intercept, h.subject_stats, _hand_rows(texts), t.feature, t.threshold, t.children,
                      t.value, t.roots, t.depth, t.model_starts, t.baselines)  # fmt: skip
        else:
            p = t.predict_proba(self.dense(texts))
        return gain_to_unit(p[:, 0] * p[:, 1] - (1.0 - p[:, 0]) * p[:, 2])


def _hand_rows(texts: list[str]) -> np.ndarray:
    """prompt_features of each text, one row each."""
    out = np.empty((len(texts), len(PROMPT_FEATURES)))
    for i, text in enumerate(texts):
        out[i] = prompt_features(text)
    return out
