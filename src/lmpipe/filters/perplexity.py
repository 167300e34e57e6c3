"""A small word n-gram language model with interpolated Kneser-Ney smoothing, for CCNet-style filtering.

Trained on a clean reference domain; a document's perplexity under it says how much the document looks
like that reference (CCNet, Wenzek et al. 2020, keeps head/middle/tail bands by perplexity percentile).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lmpipe.filters.rules import Rule
from lmpipe.safeio import UnsafeFileError, from_json_array, json_array, load_npz, save_npz

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
FORMAT = "lmpipe.KneserNeyLM/1"
_MEMO_MAX = 1 << 20  # memoised lower-order probabilities kept per model (cleared when full)

# Stored as ``perplexity`` when a reference domain is configured (knob: config.PerplexityRules). The
# ``max_percentile`` knob is not a bound on the score: the filter stage turns it into a per-domain cutoff.
RULES = (Rule("perplexity", "perplexity", "perplexity", "max", "max_perplexity", optional=True),)


class KneserNeyLM:
    def __init__(self, order: int = 3, discount: float = 0.75, min_count: int = 1) -> None:
        if order < 1:
            raise ValueError("order must be >= 1")
        self.order, self.d, self.min_count = order, discount, min_count
        self.vocab: set[str] = set()
        # per order k (1..order): n-gram -> count (highest order: raw counts; lower: continuation counts)
        self.counts: list[dict[tuple[str, ...], int]] = []
        self.ctx_total: list[dict[tuple[str, ...], int]] = []  # context -> sum of counts
        self.ctx_types: list[dict[tuple[str, ...], int]] = []  # context -> number of distinct followers
        self._memo: dict[tuple[tuple[str, ...], str], float] = {}  # lower-order probabilities (see prob)

    def _prep(self, words: list[str]) -> list[str]:
        return [BOS] * (self.order - 1) + [w if w in self.vocab else UNK for w in words] + [EOS]

    def fit(self, docs: Iterable[list[str]]) -> KneserNeyLM:
        docs = list(docs)
        freq = Counter(w for d in docs for w in d)
        self.vocab = {w for w, c in freq.items() if c >= self.min_count} | {UNK, EOS}
        top: Counter[tuple[str, ...]] = Counter()
        n = self.order
        for d in docs:
            s = self._prep(d)
            top.update(tuple(s[i : i + n]) for i in range(len(s) - n + 1))
        levels: list[dict[tuple[str, ...], int]] = [dict(top)]
        for _ in range(n - 1):  # continuation counts: distinct left extensions of each shorter n-gram
            cont: Counter[tuple[str, ...]] = Counter(g[1:] for g in levels[-1])
            levels.append(dict(cont))
        self.counts = levels[::-1]  # index 0 = unigrams
        self._index_contexts()
        return self

    def _index_contexts(self) -> None:
        """Per-context totals and follower counts, derived from ``counts``; and their array form (``_tables``)."""
        self._memo = {}
        self._tables = None
        self.ctx_total, self.ctx_types = [], []
        for table in self.counts:
            tot: defaultdict[tuple[str, ...], int] = defaultdict(int)
            typ: defaultdict[tuple[str, ...], int] = defaultdict(int)
            for g, c in table.items():
                tot[g[:-1]] += c
                typ[g[:-1]] += 1
            self.ctx_total.append(dict(tot))
            self.ctx_types.append(dict(typ))
        words = sorted({w for table in self.counts for g in table for w in g} | self.vocab | {BOS})
        radix = len(words)
        if radix**self.order < 1 << 62:  # n-grams as one int64 key each (else log_prob keeps the dict path)
            self._wid = {w: i for i, w in enumerate(words)}
            self._radix = radix
            self._tables = [
                (*self._sorted(self.ctx_total[k], self.ctx_types[k]), *self._sorted(self.counts[k]))
                for k in range(self.order)
            ]

    def _key(self, gram: tuple[str, ...]) -> int:
        key = 0
        for w in gram:
            key = key * self._radix + self._wid[w]
        return key

    def _sorted(self, *tables: dict[tuple[str, ...], int]) -> tuple[np.ndarray, ...]:
        """``(keys, values...)`` of dicts with the same n-gram keys, sorted by the int64 key."""
        keys = np.fromiter((self._key(g) for g in tables[0]), dtype=np.int64, count=len(tables[0]))
        order = np.argsort(keys)
        return (
            keys[order],
            *(np.fromiter(t.values(), dtype=np.float64, count=len(t))[order] for t in tables),
        )

    def prob(self, ctx: tuple[str, ...], w: str) -> float:
        """Interpolated from the unigram level up to the full context. The lower-order part (everything below
        ``ctx``'s own level) is memoised: it depends on one word of context fewer and repeats across a corpus
        (the same operations in the same order, so the same floats as computing it afresh)."""
        if ctx:
            key = (ctx[1:], w)
            p = self._memo.get(key)
            if p is None:
                if len(self._memo) >= _MEMO_MAX:
                    self._memo.clear()
                p = self._memo[key] = self.prob(ctx[1:], w)
        else:
            p = 1.0 / len(self.vocab)  # uniform base for the unigram level
        k = len(ctx)
        total = self.ctx_total[k].get(ctx)
        if not total:
            return p
        c = self.counts[k].get((*ctx, w), 0)
        return max(c - self.d, 0.0) / total + self.d * self.ctx_types[k][ctx] / total * p

    def log_prob(self, words: list[str]) -> tuple[float, int]:
        s = self._prep(words)
        n = self.order
        lp = 0.0
        if self._tables is None:
            for i in range(n - 1, len(s)):
                lp += math.log(self.prob(tuple(s[i - n + 1 : i]), s[i]))
            return lp, len(s) - n + 1
        for p in self._probs(np.fromiter((self._wid[w] for w in s), dtype=np.int64, count=len(s))).tolist():
            lp += math.log(p)  # summed in order, as prob() would be: the same float
        return lp, len(s) - n + 1

    def _probs(self, ids: np.ndarray) -> np.ndarray:
        """``prob`` of every word after the first ``order - 1`` (ids), all at once: each level's counts looked
        up by binary search in sorted int64 keys; the same operations in the same order as ``prob``."""
        n, r = self.order, self._radix
        word = ids[n - 1 :]
        p = np.full(len(word), 1.0 / len(self.vocab))
        ctx = np.zeros(len(word), dtype=np.int64)
        for k, (ckeys, ctotal, ctypes, gkeys, gcounts) in enumerate(self._tables):
            if k:  # extend the context by one word on the left
                ctx = ctx + ids[n - 1 - k : len(ids) - k] * r ** (k - 1)
            total, types = _lookup(ckeys, ctx, ctotal, ctypes)
            (c,) = _lookup(gkeys, ctx * r + word, gcounts)
            seen = total > 0
            t = np.where(seen, total, 1.0)
            p = np.where(seen, np.maximum(c - self.d, 0.0) / t + self.d * types / t * p, p)
        return p

    def perplexity(self, words: list[str]) -> float:
        lp, n = self.log_prob(words)
        return math.exp(-lp / max(n, 1))

    def save(self, path: str | Path) -> None:
        """Plain arrays (no pickle: the file may travel through a shared DVC remote): the words as JSON, and
        per order k an (m, k) array of word ids with the (m,) counts; the context tables are derived on load."""
        words = sorted({w for table in self.counts for g in table for w in g} | self.vocab)
        wid = {w: i for i, w in enumerate(words)}
        header = {
            "format": FORMAT,
            "order": self.order,
            "discount": self.d,
            "min_count": self.min_count,
            "words": words,
            "vocab": sorted(self.vocab),
        }
        arrays = {"header": json_array(header)}
        for k, table in enumerate(self.counts, start=1):
            arrays[f"grams{k}"] = np.array([[wid[w] for w in g] for g in table], dtype=np.int64).reshape(
                -1, k
            )
            arrays[f"counts{k}"] = np.fromiter(table.values(), dtype=np.int64, count=len(table))
        save_npz(path, arrays)

    @staticmethod
    def load(path: str | Path) -> KneserNeyLM:
        arrays = load_npz(path, required=("header",))
        h = from_json_array(arrays["header"])
        if not isinstance(h, dict) or h.get("format") != FORMAT:
            raise UnsafeFileError(f"{path}: not a Kneser-Ney n-gram LM ({FORMAT})")
        lm = KneserNeyLM(h["order"], h["discount"], h["min_count"])
        lm.vocab = set(h["vocab"])
        words = h["words"]
        for k in range(1, lm.order + 1):
            grams, counts = arrays[f"grams{k}"].tolist(), arrays[f"counts{k}"].tolist()
            lm.counts.append({tuple(words[w] for w in g): c for g, c in zip(grams, counts, strict=True)})
        lm._index_contexts()
        return lm


def _lookup(keys: np.ndarray, query: np.ndarray, *values: np.ndarray) -> list[np.ndarray]:
    """``values[i][j]`` where ``keys[j] == query``, else 0, for every query (``keys`` sorted)."""
    idx = np.minimum(np.searchsorted(keys, query), max(len(keys) - 1, 0))
    hit = keys[idx] == query if len(keys) else np.zeros(len(query), dtype=bool)
    return [np.where(hit, v[idx], 0.0) if len(keys) else np.zeros(len(query)) for v in values]
