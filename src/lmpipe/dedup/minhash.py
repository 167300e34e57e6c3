"""Vectorised MinHash signatures over word n-gram shingles, and LSH band keys.

A batch of normalised texts becomes one byte array; each word n-gram (a byte range of it) is hashed in
O(1) numpy work from polynomial prefix sums, then spread by a splitmix64 finaliser (``shingle_hashes``), so
no Python code runs per word or per shingle. Each permutation is the multiply-add-shift hash
``h(x) = ((a*x + b) mod 2**64) >> 32`` of the shingle's top 32 bits ``x`` with random 64-bit ``a`` (odd) and
``b`` (Dietzfelbinger's strongly universal family for 32-bit keys). Every step is one native uint64
instruction with wrap-around, about 7x faster in numpy than the textbook ``(a*x + b) mod (2**61 - 1)``; as
the keys are already uniform hashes, the minima behave like those of random permutations (tests check the
estimates against exact Jaccard over many pairs). Signature values are 32-bit.

Jaccard estimate of two documents: the fraction of equal signature entries. LSH: ``bands × rows`` entries;
each band's ``rows`` values hash to one 64-bit bucket key, and two documents sharing any bucket key are a
candidate pair, which happens with probability ``1 - (1 - J**rows)**bands``.
"""

from __future__ import annotations

import numpy as np

_ROLL = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the rolling n-gram hash (golden ratio)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SHIFT = np.uint64(32)
EMPTY = np.iinfo(np.uint32).max  # signature value of a document without words (never matches a real one)


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
    space = (buf == 32) | ((buf >= 9) & (buf <= 13))
    edge = np.flatnonzero(np.diff(space.view(np.int8), prepend=np.int8(1)))  # word starts, ends alternate
    w_start, w_end = edge[0::2], edge[1::2]
    w_doc = np.searchsorted(doc_start, w_start, side="right") - 1
    lens = np.bincount(w_doc, minlength=len(encoded)).astype(np.int64)
    counts = np.where(lens >= n, lens - n + 1, np.minimum(lens, 1))
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    # the shingle starting at word i ends at word i+n-1, or at the text's last word if it has fewer than n
    first_word = np.zeros(len(lens), dtype=np.int64)
    np.cumsum(lens[:-1], out=first_word[1:])
    starts = np.repeat(first_word, counts) + (np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], counts))
    last = np.minimum(starts + n - 1, np.repeat(first_word + lens - 1, counts))
    s, e = w_start[starts], w_end[last]
    base = _odd_from_seed(seed)
    power = np.full(len(buf), base, dtype=np.uint64)
    power[0] = 1
    np.cumprod(power, out=power)  # B**k, wrapping mod 2**64
    prefix = np.zeros(len(buf) + 1, dtype=np.uint64)
    np.cumsum((buf.astype(np.uint64) + np.uint64(1)) * power, out=prefix[1:])
    inverse = np.full(len(buf), pow(base, -1, 1 << 64), dtype=np.uint64)
    inverse[0] = 1
    np.cumprod(inverse, out=inverse)  # B**-k
    return _mix((prefix[e] - prefix[s]) * inverse[s] + np.uint64(seed)), offsets


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
    of a short one. The ``>> 32`` is applied to the minima only (it is monotonic).
    """

    def __init__(self, num_perm: int, seed: int = 0, chunk: int = 4096) -> None:
        rng = np.random.default_rng(seed)
        self.num_perm, self.chunk = num_perm, chunk
        self.a = (rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
        self.b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) << np.uint64(1)
        self._widths = _widths(chunk)

    def _min_permuted(self, x: np.ndarray) -> np.ndarray:
        """``min`` over axis -1 of ``a*x + b`` (mod 2**64) for keys ``x`` of shape ``(..., k)``: ``(..., num_perm)``."""
        v = x[..., None] * self.a  # wraps mod 2**64 by design
        v += self.b
        return v.min(axis=-2)

    def signatures(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """``(docs, num_perm)`` minima over ``shingle_hashes`` output; documents without shingles get ``EMPTY``."""
        n_docs = len(offsets) - 1
        sig = np.full((n_docs, self.num_perm), EMPTY, dtype=np.uint32)
        keys = hashes >> _SHIFT
        counts = np.diff(offsets)
        for d in np.flatnonzero(counts > self.chunk):  # larger than a block: fold its blocks
            acc = None
            for s in range(int(offsets[d]), int(offsets[d + 1]), self.chunk):
                m = self._min_permuted(keys[s : min(s + self.chunk, int(offsets[d + 1]))])
                acc = m if acc is None else np.minimum(acc, m)
            sig[d] = acc >> _SHIFT
        small = np.flatnonzero((counts > 0) & (counts <= self.chunk))
        width = self._widths[np.searchsorted(self._widths, counts[small])]
        for w in np.unique(width):
            docs = small[width == w]
            col = np.minimum(np.arange(w)[None, :], counts[docs, None] - 1)  # pad with the last shingle
            per_block = max(1, self.chunk // int(w))
            for i in range(0, len(docs), per_block):
                part = docs[i : i + per_block]
                sig[part] = self._min_permuted(keys[offsets[part, None] + col[i : i + per_block]]) >> _SHIFT
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
