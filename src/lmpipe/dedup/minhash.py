"""Vectorised MinHash signatures over word n-gram shingles, and LSH band keys.

A batch of normalised texts becomes one byte array; each word n-gram (a byte range of it) is hashed in
O(1) numpy work from polynomial prefix sums, then spread by a splitmix64 finaliser (``shingle_hashes``), so
no Python code runs per word or per shingle. Each permutation is the linear permutation
``h(x) = (a*x + b) mod 2**32`` of the shingle's top 32 bits ``x`` with random ``a`` (odd) and ``b``: the
textbook ``(a*x + b) mod p`` with ``2**32`` for the prime, a bijection of 32-bit keys computed in native
uint32 arithmetic with wrap-around (half the memory traffic of 64-bit lanes, twice the SIMD width; ~1.8x
faster than the multiply-shift ``((a*x + b) mod 2**64) >> 32`` on 64-bit lanes). The keys are already uniform
hashes, so the minima behave like those of random permutations: tests check the estimates against exact
Jaccard over many pairs, both their bias and that their spread is that of ``num_perm`` independent draws.
Signature values are 32-bit.

Jaccard estimate of two documents: the fraction of equal signature entries. LSH: ``bands × rows`` entries;
each band's ``rows`` values hash to one 64-bit bucket key, and two documents sharing any bucket key are a
candidate pair, which happens with probability ``1 - (1 - J**rows)**bands``.
"""

from __future__ import annotations

import numpy as np

_ROLL = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the rolling n-gram hash (golden ratio)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SHIFT = np.uint64(32)
EMPTY = np.iinfo(np.uint32).max  # signature value of a document without words (a real minimum: p = 2**-32)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads every input bit over the output (the rolling hash alone does not)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _odd_from_seed(seed: int) -> int:
    """A 64-bit odd multiplier drawn from ``seed`` (the polynomial base of the substring hash)."""
    z = int(_mix(np.array([seed + 0x632BE59BD9B4E019], dtype=np.uint64))[0])
    return z | 1


def shingle_hashes(texts: list[str], n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every word ``n``-gram of each text, and per-text offsets.

    Words are runs of non-whitespace bytes; texts are expected with single spaces between words (what
    ``normalize`` returns), as an n-gram is hashed as the bytes from its first word's start to its last
    word's end. A text with fewer than ``n`` (but at least one) words has one shingle: all its words; a
    text without words has none. Returns ``(hashes, offsets)`` with text ``d``'s shingles in
    ``hashes[offsets[d]:offsets[d + 1]]`` (duplicates within a text are harmless for MinHash).

    The whole batch is one byte array: with prefix sums ``P[i] = sum_{k<i} (byte_k + 1) * B**k`` (mod 2**64,
    ``B`` odd and drawn from ``seed``) the bytes ``[s, e)`` hash to ``(P[e] - P[s]) * B**-s``, so every shingle
    costs O(1) numpy work whatever ``n``, and no Python code runs per word. (A polynomial mod 2**64 can be
    made to collide only by strings thousands of bytes long; the splitmix64 finaliser then spreads the bits.)
    """
    encoded = [t.encode("utf-8") for t in texts]
    doc_len = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    doc_start = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(doc_len + 1, out=doc_start[1:])  # texts joined by one space: words never cross texts
    buf = np.frombuffer(b" ".join(encoded) + b" ", dtype=np.uint8)
    edge = np.flatnonzero(np.diff(_IS_SPACE[buf], prepend=np.int8(1)))  # word starts and ends alternate
    w_start, w_end = edge[0::2], edge[1::2]
    first_word = np.searchsorted(w_start, doc_start)  # index of each text's first word (and the end)
    lens = np.diff(first_word)
    first_word = first_word[:-1]
    counts = np.where(lens >= n, lens - n + 1, np.minimum(lens, 1))
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    # the shingle starting at word i ends at word i+n-1, or at the text's last word if it has fewer than n
    starts = np.repeat(first_word, counts) + (np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], counts))
    last = np.minimum(starts + n - 1, np.repeat(first_word + lens - 1, counts))
    s, e = w_start[starts], w_end[last]
    power, inverse = _powers(seed, len(buf))
    prefix = np.zeros(len(buf) + 1, dtype=np.uint64)
    np.cumsum((buf + np.uint64(1)) * power, out=prefix[1:])
    return _mix((prefix[e] - prefix[s]) * inverse[s] + np.uint64(seed)), offsets


_IS_SPACE = np.zeros(256, dtype=np.int8)
_IS_SPACE[[9, 10, 11, 12, 13, 32]] = 1  # ASCII whitespace bytes (UTF-8 never uses them inside a character)
_POWERS: dict[int, tuple[np.ndarray, np.ndarray]] = {}
_POWERS_KEPT = 1 << 22  # longest tables kept between calls (2 x 32 MiB); longer batches build their own


def _powers(seed: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``B**k`` and ``B**-k`` (mod 2**64) for ``k < length``; kept per seed and grown on demand."""
    have = _POWERS.get(seed)
    if have is None or len(have[0]) < length:
        size = max(length, min(_POWERS_KEPT, max(1 << 20, 2 * len(have[0]) if have else 0)))
        base = _odd_from_seed(seed)
        tables = []
        for b in (base, pow(base, -1, 1 << 64)):
            t = np.full(size, b, dtype=np.uint64)
            t[0] = 1
            tables.append(np.cumprod(t, out=t))  # wraps mod 2**64
        have = (tables[0], tables[1])
        if size <= _POWERS_KEPT:
            _POWERS[seed] = have
    return have[0][:length], have[1][:length]


# widths the padded blocks round a document's shingle count up to: ratio <= 1.25, so <= 25 % padding
def _widths(limit: int) -> np.ndarray:
    w = [1]
    while w[-1] < limit:
        w.append(min(limit, max(w[-1] + 1, int(w[-1] * 1.25))))
    return np.array(w, dtype=np.int64)


class MinHasher:
    """``num_perm`` hash permutations drawn from ``seed`` (same seed → same signatures).

    Documents are grouped by shingle count and padded (with repeats of their own shingles) to a common
    width, so each group is one ``(docs, width, num_perm)`` block reduced by a plain ``min`` over its
    middle axis: a segmented ``np.minimum.reduceat`` costs ~2 µs per document, more than the arithmetic
    of a short one.
    """

    def __init__(self, num_perm: int, seed: int = 0, chunk: int = 4096) -> None:
        rng = np.random.default_rng(seed)
        self.num_perm, self.chunk = num_perm, chunk
        self.a = rng.integers(0, 1 << 32, size=num_perm, dtype=np.uint64).astype(np.uint32) | np.uint32(1)
        self.b = rng.integers(0, 1 << 32, size=num_perm, dtype=np.uint64).astype(np.uint32)
        self._widths = _widths(chunk)

    def _min_permuted(self, x: np.ndarray) -> np.ndarray:
        """``min`` over axis -1 of ``a*x + b`` (mod 2**32) for keys ``x`` of shape ``(..., k)``: ``(..., num_perm)``."""
        v = x[..., None] * self.a  # wraps mod 2**32 by design
        v += self.b
        return v.min(axis=-2)

    def signatures(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """``(docs, num_perm)`` minima over ``shingle_hashes`` output; documents without shingles get ``EMPTY``."""
        n_docs = len(offsets) - 1
        sig = np.full((n_docs, self.num_perm), EMPTY, dtype=np.uint32)
        keys = (hashes >> _SHIFT).astype(np.uint32)
        counts = np.diff(offsets)
        for d in np.flatnonzero(counts > self.chunk):  # larger than a block: fold its blocks
            acc = None
            for s in range(int(offsets[d]), int(offsets[d + 1]), self.chunk):
                m = self._min_permuted(keys[s : min(s + self.chunk, int(offsets[d + 1]))])
                acc = m if acc is None else np.minimum(acc, m)
            sig[d] = acc
        small = np.flatnonzero((counts > 0) & (counts <= self.chunk))
        width = self._widths[np.searchsorted(self._widths, counts[small])]
        for w in np.unique(width):
            docs = small[width == w]
            col = np.minimum(np.arange(w)[None, :], counts[docs, None] - 1)  # pad with the last shingle
            per_block = max(1, self.chunk // int(w))
            for i in range(0, len(docs), per_block):
                part = docs[i : i + per_block]
                sig[part] = self._min_permuted(keys[offsets[part, None] + col[i : i + per_block]])
        return sig


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(docs, bands)`` uint64 bucket keys: each band's ``rows`` signature values hashed together."""
    if sig.shape[1] < bands * rows:
        raise ValueError(f"signature has {sig.shape[1]} values, fewer than bands*rows = {bands * rows}")
    keys = np.empty((sig.shape[0], bands), dtype=np.uint64)
    for b in range(bands):
        h = np.full(sig.shape[0], np.uint64(b + 1), dtype=np.uint64)
        for r in range(rows):
            h = _mix(h * _ROLL + sig[:, b * rows + r])
        keys[:, b] = h
    return keys


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal entries along the last axis (row-wise for 2-D inputs)."""
    return np.mean(sig_a == sig_b, axis=-1)


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """Probability that two documents with this Jaccard similarity share at least one LSH bucket."""
    return 1.0 - (1.0 - jaccard**rows) ** bands
