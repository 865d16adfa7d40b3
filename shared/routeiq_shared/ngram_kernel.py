"""The hashed TF-IDF rows of routing_models.HashedTfidf, compiled (numba): one pass per prompt over its bytes.

Why compiled: the numpy formulation (routing_models._batch_rows) pays ~40 array operations per batch, each a
pass over every n-gram of every prompt; measured on one core it costs ~0.15 ms for one MMLU prompt and ~0.08 ms a
prompt in batches of 32, which alone keeps `model: auto` well below the throughput of a fixed model
(bench/router_decisions.py, bench/proxy_throughput.py). Here one loop hashes, sorts and counts a prompt's n-grams
in cache: ~3x less. The numbers are those of the numpy path, bit for bit: same hashes, same columns in the same
order, the block norms summed in numpy's own pairwise order (_pairwise_sum), so a router scores the same on every
path (tests/unit/test_scoring_fast_path.py).

This module imports numba; routing_models imports it lazily (kernel()), and falls back to numpy without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

_P = np.uint64(0x100000001B3)


@njit(cache=True, nogil=True)
def _word_byte(byte: int) -> bool:
    # [a-z0-9] and every non-ASCII byte (letters of other scripts stay inside a word), as routing_models._WORD
    return (97 <= byte <= 122) or (48 <= byte <= 57) or byte >= 128


@njit(cache=True, nogil=True)
def _block_sum(a: np.ndarray, lo: int, n: int) -> Any:
    """numpy's pairwise sum of at most 128 float32 values: 8 accumulators, then the rest one by one."""
    if n < 8:
        res = np.float32(0.0)
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - (n % 8):
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True, nogil=True)
def _pairwise_sum(a: np.ndarray, lo: int, n: int) -> Any:
    """np.add.reduce(a[lo:lo + n]) of float32 values, in numpy's pairwise order (blocks of up to 128 values,
    halves above, the half a multiple of 8), so the sum is numpy's to the last bit. numpy recurses; this walks the
    same tree with a stack, because numba's on-disk cache crashes on loading a recursive function."""
    if n <= 128:
        return _block_sum(a, lo, n)
    todo = np.empty((192, 3), dtype=np.int64)  # (lo, n, combine?): 3 entries a level, n < 2**63
    sums = np.empty(96, dtype=np.float32)
    top = 0
    held = 0
    todo[0, 0], todo[0, 1], todo[0, 2] = lo, n, 0
    top = 1
    while top:
        top -= 1
        s_lo, s_n, combine = todo[top, 0], todo[top, 1], todo[top, 2]
        if combine:
            held -= 1
            sums[held - 1] = sums[held - 1] + sums[held]
        elif s_n <= 128:
            sums[held] = _block_sum(a, s_lo, s_n)
            held += 1
        else:
            half = s_n // 2
            half -= half % 8
            todo[top, 0], todo[top, 1], todo[top, 2] = s_lo, s_n, 1
            todo[top + 1, 0], todo[top + 1, 1], todo[top + 1, 2] = s_lo + half, s_n - half, 0
            todo[top + 2, 0], todo[top + 2, 1], todo[top + 2, 2] = s_lo, half, 0
            top += 3
    return sums[0]


@njit(cache=True, nogil=True)
def _radix_sort(keys: np.ndarray, m: int, bits: int, spare: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """keys[:m] (non-negative, below 2**bits) sorted, LSD radix by 11-bit digits: a prompt's ~2,000 keys in a few
    linear passes (numba's np.sort, a quicksort, took half the kernel's time)."""
    src, dst = keys, spare
    shift = 0
    while shift < bits:
        counts[:] = 0
        for i in range(m):
            counts[(src[i] >> shift) & 2047] += 1
        total = 0
        for d in range(2048):
            c = counts[d]
            counts[d] = total
            total += c
        for i in range(m):
            d = (src[i] >> shift) & 2047
            dst[counts[d]] = src[i]
            counts[d] += 1
        src, dst = dst, src
        shift += 11
    return src


@njit(cache=True, nogil=True)
def _popcount(x: np.uint64) -> int:
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return int((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


def column_index(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bucket -> column table as (a bitmap of the known buckets, the count of known buckets before each 64-bit
    word): 1/16 of the table's size, so it stays in cache between requests, where the 8 MB table did not (its
    random reads from memory were most of a prompt's cost inside the gateway). Exact where columns grow with
    buckets (as fit numbers them): a known bucket's column is its rank among the known buckets."""
    known = columns >= 0
    padded = np.zeros(-(-known.size // 64) * 64, dtype=bool)
    padded[: known.size] = known
    bits = np.packbits(padded, bitorder="little").view("<u8").astype(np.uint64)  # bit b of word w: bucket 64w+b
    per_word = padded.reshape(-1, 64).sum(axis=1)
    base = np.zeros(per_word.size, dtype=np.int32)
    np.cumsum(per_word[:-1], out=base[1:])
    return np.ascontiguousarray(bits), base


@njit(cache=True, nogil=True)
def _text_row(
    raw: np.ndarray,
    start: int,
    end: int,
    known_bits: np.ndarray,
    rank_base: np.ndarray,
    idf: np.ndarray,
    buckets: int,
    split: int,
    keys: np.ndarray,  # int64 (5 * longest + 2,): the text's n-gram keys
    spare: np.ndarray,  # int64, as keys: the radix sort's other buffer
    squares: np.ndarray,  # float32, as keys
    counts: np.ndarray,  # int64 (2048,)
    powers: np.ndarray,  # uint64 (64,): P**0..P**63
    out_cols: np.ndarray,
    out_vals: np.ndarray,
    k: int,
) -> int:
    """One text's row, written to out_cols/out_vals from k on; returns the new end."""
    mask = np.uint64(buckets - 1)
    p = _P
    m = 0
    for n in range(3, 6):
        for i in range(start, end - n + 1):
            h = np.uint64(0)
            for j in range(n):
                h = h * p + np.uint64(raw[i + j])
            keys[m] = np.int64((h + np.uint64(n)) & mask)
            m += 1
    word = np.uint64(0)
    prev = np.uint64(0)
    pos = 0
    have_prev = False
    for i in range(start, end + 1):
        if i < end and _word_byte(raw[i]):
            word += np.uint64(raw[i]) * powers[min(pos, 63)]
            pos += 1
        elif pos:  # a word ended
            keys[m] = np.int64(word & mask) + buckets
            m += 1
            if have_prev:
                keys[m] = np.int64((prev * p + word * np.uint64(31)) & mask) + buckets
                m += 1
            prev, have_prev = word, True
            word, pos = np.uint64(0), 0
    bits = 1
    while (1 << bits) < 2 * buckets:
        bits += 1
    ordered = _radix_sort(keys, m, bits, spare, counts)
    first = k
    words_from = -1  # where the text's word columns start in the output
    i = 0
    while i < m:
        key = ordered[i]
        j = i + 1
        while j < m and ordered[j] == key:
            j += 1
        word_bits = known_bits[key >> 6]
        bit = np.uint64(key & 63)
        if (word_bits >> bit) & np.uint64(1):
            col = rank_base[key >> 6] + _popcount(word_bits & ((np.uint64(1) << bit) - np.uint64(1)))
            value = np.float32(1.0 + np.log(np.float64(j - i))) * idf[col]
            out_cols[k] = col
            out_vals[k] = value
            squares[k - first] = value * value
            if col >= split and words_from < 0:
                words_from = k
            k += 1
        i = j
    if words_from < 0:
        words_from = k
    # float32 square roots, as numpy takes them of float32 sums
    char_norm = np.float64(np.float32(np.sqrt(_pairwise_sum(squares, 0, words_from - first))))
    word_norm = np.float64(np.float32(np.sqrt(_pairwise_sum(squares, words_from - first, k - words_from))))
    scale = np.sqrt(2.0)
    for q in range(first, k):
        norm = word_norm if out_cols[q] >= split else char_norm
        if norm > 0:
            out_vals[q] = np.float32(np.float64(out_vals[q]) / (norm * scale))
    return k


@njit(cache=True, nogil=True)
def _longest(offsets: np.ndarray) -> int:
    longest = 0
    for t in range(offsets.size - 1):
        longest = max(longest, offsets[t + 1] - offsets[t])
    return 5 * longest + 2  # 3 char sizes + words + bigrams: at most 5 keys a byte


@njit(cache=True, nogil=True)
def _powers() -> np.ndarray:
    powers = np.empty(64, dtype=np.uint64)
    powers[0] = np.uint64(1)
    for i in range(1, 64):
        powers[i] = powers[i - 1] * _P
    return powers


@njit(cache=True, nogil=True)
def tfidf_rows(
    raw: np.ndarray,  # uint8: the lower-cased UTF-8 bytes of every text, concatenated
    offsets: np.ndarray,  # int64 (n_texts + 1,): where each text starts in raw
    known_bits: np.ndarray,  # uint64: bit b of word w = bucket 64w+b is known (column_index)
    rank_base: np.ndarray,  # int32: known buckets before each word
    idf: np.ndarray,  # (n_features,) float32
    buckets: int,  # a power of two
    split: int,  # the first word column
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices int32, data float32) of the texts' rows, as HashedTfidf.rows."""
    size = _longest(offsets)
    keys, spare = np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int64)
    squares, counts, powers = np.empty(size, dtype=np.float32), np.empty(2048, dtype=np.int64), _powers()
    n_texts = offsets.size - 1
    indptr = np.zeros(n_texts + 1, dtype=np.int64)
    out_cols = np.empty(5 * raw.size + 2, dtype=np.int32)
    out_vals = np.empty(5 * raw.size + 2, dtype=np.float32)
    k = 0
    for t in range(n_texts):
        k = _text_row(
            raw, offsets[t], offsets[t + 1], known_bits, rank_base, idf, buckets, split,
            keys, spare, squares, counts, powers, out_cols, out_vals, k,
        )  # fmt: skip
        indptr[t + 1] = k
    return indptr, out_cols[:k].copy(), out_vals[:k].copy()


@njit(cache=True, nogil=True)
def tfidf_dot(
    raw: np.ndarray,
    offsets: np.ndarray,
    known_bits: np.ndarray,
    rank_base: np.ndarray,
    idf: np.ndarray,
    buckets: int,
    split: int,
    weights: np.ndarray,  # (n_features, d) float32, C-contiguous
) -> np.ndarray:
    """tfidf_rows(...) @ weights, (n_texts, d) float32, without the CSR arrays: each row's products summed in
    float32 in column order, as scipy's CSR kernel does (HashedTfidf.dot's numpy path), so the same numbers."""
    size = _longest(offsets)
    keys, spare = np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int64)
    squares, counts, powers = np.empty(size, dtype=np.float32), np.empty(2048, dtype=np.int64), _powers()
    n_texts = offsets.size - 1
    out_cols = np.empty(size, dtype=np.int32)
    out_vals = np.empty(size, dtype=np.float32)
    out = np.zeros((n_texts, weights.shape[1]), dtype=np.float32)
    for t in range(n_texts):
        k = _text_row(
            raw, offsets[t], offsets[t + 1], known_bits, rank_base, idf, buckets, split,
            keys, spare, squares, counts, powers, out_cols, out_vals, 0,
        )  # fmt: skip
        row = out[t]
        for q in range(k):
            a = out_vals[q]
            w = weights[out_cols[q]]
            for c in range(row.size):
                row[c] += a * w[c]
    return out
