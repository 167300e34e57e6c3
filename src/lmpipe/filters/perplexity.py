"""A small word n-gram language model with interpolated Kneser-Ney smoothing, for CCNet-style filtering.

Trained on a clean reference domain; a document's perplexity under it says how much the document looks
like that reference (CCNet, Wenzek et al. 2020, keeps head/middle/tail bands by perplexity percentile).
"""

from __future__ import annotations

import math
import pickle
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


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
        self.ctx_total, self.ctx_types = [], []
        for table in self.counts:
            tot: defaultdict[tuple[str, ...], int] = defaultdict(int)
            typ: defaultdict[tuple[str, ...], int] = defaultdict(int)
            for g, c in table.items():
                tot[g[:-1]] += c
                typ[g[:-1]] += 1
            self.ctx_total.append(dict(tot))
            self.ctx_types.append(dict(typ))
        return self

    def prob(self, ctx: tuple[str, ...], w: str) -> float:
        p = 1.0 / len(self.vocab)  # uniform base for the unigram level
        for k in range(len(ctx) + 1):  # from unigram up to the full context
            h = ctx[len(ctx) - k :] if k else ()
            total = self.ctx_total[k].get(h)
            if not total:
                continue
            c = self.counts[k].get((*h, w), 0)
            p = max(c - self.d, 0.0) / total + self.d * self.ctx_types[k][h] / total * p
        return p

    def log_prob(self, words: list[str]) -> tuple[float, int]:
        s = self._prep(words)
        n = self.order
        lp = 0.0
        for i in range(n - 1, len(s)):
            lp += math.log(self.prob(tuple(s[i - n + 1 : i]), s[i]))
        return lp, len(s) - n + 1

    def perplexity(self, words: list[str]) -> float:
        lp, n = self.log_prob(words)
        return math.exp(-lp / max(n, 1))

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def load(path: str | Path) -> KneserNeyLM:
        with open(path, "rb") as f:
            return pickle.load(f)
