"""Gopher quality and repetition measurements (Rae et al. 2021, "Scaling Language Models", appendix A).

Each function returns plain numbers; thresholds are applied later by :mod:`lmpipe.filters.select`, so a
document is measured once and any threshold can be tried without re-scoring.
"""

from __future__ import annotations

from itertools import accumulate

import numpy as np

from lmpipe.filters.rules import Rule, Scores
from lmpipe.filters.text import LINE_SPLIT, PARAGRAPH_SPLIT, non_symbol_words

BULLETS = ("•", "-")
ELLIPSES = ("...", "…")


def _has_words(s: Scores, _rules: object) -> bool:
    return bool(s["gq_words"])  # the mean word length of a page without words is a placeholder 0


# Bounds on these measurements (knobs: config.GopherQualityRules / GopherRepetitionRules). Within a family the
# order is the order of ``meta["filter_failed"]``. The per-n n-gram scores exist only for the configured n.
RULES = (
    Rule("gopher_quality", "words", "gq_words", "min", "min_words"),
    Rule("gopher_quality", "words", "gq_words", "max", "max_words"),
    Rule("gopher_quality", "mean_word_len", "gq_mean_word_len", "min", "min_mean_word_len", when=_has_words),
    Rule("gopher_quality", "mean_word_len", "gq_mean_word_len", "max", "max_mean_word_len", when=_has_words),
    Rule("gopher_quality", "hash_ratio", "gq_hash_ratio", "max", "max_symbol_word_ratio"),
    Rule("gopher_quality", "ellipsis_ratio", "gq_ellipsis_ratio", "max", "max_symbol_word_ratio"),
    Rule("gopher_quality", "bullet_lines", "gq_bullet_lines", "max", "max_bullet_lines"),
    Rule("gopher_quality", "ellipsis_lines", "gq_ellipsis_lines", "max", "max_ellipsis_lines"),
    Rule("gopher_quality", "alpha_words", "gq_alpha_words", "min", "min_alpha_words"),
    Rule("gopher_quality", "stop_words", "gq_stop_words", "min", "min_stop_words"),
    Rule("gopher_repetition", "dup_para_frac", "gr_dup_para_frac", "max", "max_dup_para_frac"),
    Rule("gopher_repetition", "dup_para_char_frac", "gr_dup_para_char_frac", "max", "max_dup_para_char_frac"),
    Rule("gopher_repetition", "dup_line_frac", "gr_dup_line_frac", "max", "max_dup_line_frac"),
    Rule("gopher_repetition", "dup_line_char_frac", "gr_dup_line_char_frac", "max", "max_dup_line_char_frac"),
    Rule("gopher_repetition", "top_{n}gram_frac", "gr_top_{n}gram_frac", "max", "max_top_ngram_frac", optional=True),
    Rule("gopher_repetition", "dup_{n}gram_frac", "gr_dup_{n}gram_frac", "max", "max_dup_ngram_frac", optional=True),
)


def quality_scores(text: str, words: list[str], stop_words: frozenset[str]) -> dict[str, float]:
    """Word count, mean word length, symbol ratios, bullet/ellipsis line fractions, alphabetic and stop words.

    Counts and mean length use words with at least one non-punctuation character; the ratios divide by all
    tokens, as the published rules do.
    """
    n_all = len(words)
    kept = non_symbol_words(words)
    n = len(kept)
    lines = text.splitlines() or [""]
    return {
        "gq_words": n,
        "gq_mean_word_len": sum(map(len, kept)) / n if n else 0.0,
        "gq_hash_ratio": text.count("#") / n_all if n_all else 0.0,
        "gq_ellipsis_ratio": (text.count("...") + text.count("…")) / n_all if n_all else 0.0,
        "gq_bullet_lines": sum(s.lstrip().startswith(BULLETS) for s in lines) / len(lines),
        "gq_ellipsis_lines": sum(s.rstrip().endswith(ELLIPSES) for s in lines) / len(lines),
        "gq_alpha_words": sum(1 for w in words if w.isalpha() or any(c.isalpha() for c in w)) / n_all if n_all else 0.0,
        "gq_stop_words": len(stop_words.intersection(words)),
    }


def duplicate_stats(parts: list[str]) -> tuple[int, int]:
    """(number of repeated elements, their characters): every occurrence after the first counts."""
    seen: set[str] = set()
    n = chars = 0
    for p in parts:
        if p in seen:
            n += 1
            chars += len(p)
        else:
            seen.add(p)
    return n, chars


class NGrams:
    """Word n-grams as integers: the id of the n-gram at position i is the position of its first occurrence.

    Equal ids mean equal n-grams, a position is a repeat exactly when its id differs from it, and the first
    of several most frequent n-grams is the one with the smallest id. Ids for n come from those for n-1: an
    n-gram can only repeat where both of its (n-1)-grams repeat, so only those positions are keyed (the
    (n-1)-gram id times the text length plus the last word's id, exact in int64) and ranked with
    ``np.unique``; every other position is its own first occurrence. Flat integer arrays replace millions
    of word tuples, whose hashing and memory traffic made the cost per byte grow with document size
    (3.5x slower per MB at 4 MB than at 10 KB), and the sorted part shrinks as n grows.
    """

    def __init__(self, words: list[str]) -> None:
        first: dict[str, int] = {}
        self.size = len(words)
        ids = np.fromiter(map(first.setdefault, words, range(self.size)), dtype=np.int64, count=self.size)
        self._ids: dict[int, np.ndarray] = {1: ids}

    def ids(self, n: int) -> np.ndarray:
        """``ids(n)[i]`` identifies ``words[i:i+n]``; empty when there are fewer than n words."""
        if n < 1:
            raise ValueError("n-gram length must be >= 1")
        k = max(j for j in self._ids if j <= n)
        prev = self._ids[k]
        while k < n:
            k += 1
            m = len(prev) - 1
            if m <= 0:
                prev = prev[:0]
            else:
                pos = np.arange(m)
                repeated = np.bincount(prev, minlength=self.size)[prev] > 1
                cand = np.flatnonzero(repeated[:-1] & repeated[1:])
                key = prev[cand] * self.size + self._ids[1][cand + k - 1]
                _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
                pos[cand] = cand[first[inverse]]
                prev = pos
            self._ids[k] = prev
        return prev


def top_ngram_chars(grams: NGrams, cum: list[int], n: int) -> int:
    """Characters covered by the most frequent n-gram (words joined by single spaces) times its count."""
    ids = grams.ids(n)
    if not len(ids):
        return 0
    counts = np.bincount(ids)
    pos = int(np.argmax(counts))  # the first of equally frequent n-grams to appear (ids are first positions)
    return (cum[pos + n] - cum[pos] + n - 1) * int(counts[pos])


def dup_ngram_chars(grams: NGrams, cum: list[int], n: int) -> int:
    """Characters in repeated n-grams, scanning left to right and skipping past each repeat (no overlaps).

    Only positions whose n-gram occurred earlier can count, and the n-gram at such a position was seen
    exactly when one of its earlier occurrences was visited (not skipped); so the scan visits those
    positions alone, in Python, and marks each visited occurrence's id.
    """
    ids = grams.ids(n)
    repeats = np.flatnonzero(ids != np.arange(len(ids)))
    if not len(repeats):
        return 0
    skipped = np.zeros(len(ids) + n, dtype=bool)  # first occurrences that lie inside a counted repeat
    seen_late: set[int] = set()  # ids first visited at a later occurrence (their first one was skipped)
    chars, i = 0, 0
    for r, g in zip(repeats.tolist(), ids[repeats].tolist(), strict=True):
        if r < i:  # inside the previous counted repeat: skipped
            continue
        if not skipped[g] or g in seen_late:
            chars += cum[r + n] - cum[r]
            i = r + n
            skipped[r + 1 : i] = True
        else:
            seen_late.add(g)
            i = r + 1
    return chars


def repetition_scores(
    text: str, words: list[str], top_ns: tuple[int, ...] = (2, 3, 4), dup_ns: tuple[int, ...] = tuple(range(5, 11))
) -> dict[str, float]:
    """Duplicate paragraph/line fractions (by count and by characters) and n-gram character fractions."""
    size = len(text) or 1
    paragraphs = PARAGRAPH_SPLIT.split(text.strip())
    p_dup, p_chars = duplicate_stats(paragraphs)
    lines = LINE_SPLIT.split(text)
    l_dup, l_chars = duplicate_stats(lines)
    out: dict[str, float] = {
        "gr_dup_para_frac": p_dup / len(paragraphs),
        "gr_dup_para_char_frac": p_chars / size,
        "gr_dup_line_frac": l_dup / len(lines),
        "gr_dup_line_char_frac": l_chars / size,
    }
    cum = [0, *accumulate(map(len, words))]
    grams = NGrams(words)
    for n in top_ns:
        out[f"gr_top_{n}gram_frac"] = top_ngram_chars(grams, cum, n) / size
    for n in dup_ns:
        out[f"gr_dup_{n}gram_frac"] = dup_ngram_chars(grams, cum, n) / size
    return out
