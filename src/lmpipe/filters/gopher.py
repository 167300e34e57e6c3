"""Gopher quality and repetition measurements (Rae et al. 2021, "Scaling Language Models", appendix A).

Each function returns plain numbers; thresholds are applied later by :mod:`lmpipe.filters.select`, so a
document is measured once and any threshold can be tried without re-scoring.
"""

from __future__ import annotations

from collections import Counter
from itertools import accumulate
from operator import itemgetter

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


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(words[i:] for i in range(n)), strict=False))


def top_ngram_chars(words: list[str], cum: list[int], n: int) -> int:
    """Characters covered by the most frequent n-gram (words joined by single spaces) times its count."""
    grams = _ngrams(words, n)
    if not grams:
        return 0
    counts = Counter(grams)
    gram, count = max(counts.items(), key=itemgetter(1))  # first-seen among ties
    return (sum(map(len, gram)) + n - 1) * count


def dup_ngram_chars(words: list[str], cum: list[int], n: int) -> int:
    """Characters in repeated n-grams, scanning left to right and skipping past each repeat (no overlaps)."""
    grams = _ngrams(words, n)
    if len(set(grams)) == len(grams):
        return 0
    # Up to the first repeat every position is new, so the scan can start there with those n-grams seen.
    first: dict[tuple[str, ...], int] = {}
    start = 0
    for i, g in enumerate(grams):
        if first.setdefault(g, i) != i:
            start = i
            break
    seen = set(grams[:start])
    chars, i, end = 0, start, len(grams)
    while i < end:
        g = grams[i]
        if g in seen:
            chars += cum[i + n] - cum[i]
            i += n
        else:
            seen.add(g)
            i += 1
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
    for n in top_ns:
        out[f"gr_top_{n}gram_frac"] = top_ngram_chars(words, cum, n) / size
    for n in dup_ns:
        out[f"gr_dup_{n}gram_frac"] = dup_ngram_chars(words, cum, n) / size
    return out
