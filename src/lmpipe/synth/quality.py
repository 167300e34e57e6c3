"""Checks on generated text: empty, refused, truncated, degenerate (repetitive), duplicate.

Each check returns a reason the stage records with the quarantined generation, so rates are reported per
reason. A text cut off by ``max_tokens`` may be trimmed to its last complete sentence instead of dropped:
short generation budgets on a small model would otherwise lose nearly everything.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass

from lmpipe.dedup.config import NormalizeConfig
from lmpipe.dedup.exact import normalize
from lmpipe.synth.config import SynthQualityConfig

_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


@dataclass(frozen=True, slots=True)
class Verdict:
    text: str  # possibly trimmed
    reason: str | None  # None = keep
    detail: str = ""
    trimmed: bool = False


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def dup_ngram_frac(ws: list[str], n: int = 3) -> float:
    """Share of words covered by n-grams that occur more than once (Gopher-style repetition)."""
    if len(ws) < n + 1:
        return 0.0
    grams = [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(ws)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i : i + n] = [True] * n
    return sum(covered) / len(ws)


def trim_to_sentence(text: str) -> str:
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()].rstrip() if ends else ""


def check(text: str, finish_reason: str, cfg: SynthQualityConfig) -> Verdict:
    text = text.strip()
    if not words(text):
        return Verdict(text, "empty", "no words")
    for pattern in cfg.refusal_patterns:
        if re.search(pattern, text, re.IGNORECASE):
            return Verdict(text, "refused", f"matches {pattern!r}")
    trimmed = False
    if finish_reason == "length" and cfg.truncated != "keep":
        cut = trim_to_sentence(text)
        if cfg.truncated == "drop" or len(words(cut)) < max(cfg.min_words, 1):
            return Verdict(
                text, "truncated", f"hit max_tokens; {len(words(cut))} words up to the last full sentence"
            )
        text, trimmed = cut, cut != text
    ws = words(text)
    if len(ws) < cfg.min_words:
        return Verdict(text, "empty", f"{len(ws)} words < {cfg.min_words}")
    frac = dup_ngram_frac(ws)
    if frac > cfg.max_dup_ngram_frac:
        return Verdict(text, "degenerate", f"dup_3gram_frac={frac:.2f} > {cfg.max_dup_ngram_frac}")
    uniq = len(set(ws)) / len(ws)
    if uniq < cfg.min_unique_word_frac:
        return Verdict(text, "degenerate", f"unique_word_frac={uniq:.2f} < {cfg.min_unique_word_frac}")
    return Verdict(text, None, trimmed=trimmed)


_NORMALIZE = NormalizeConfig()


def text_key(text: str) -> str:
    """Exact-duplicate key under the dedup stage's normalisation: case, punctuation and spacing do not matter."""
    return hashlib.sha1(normalize(text, _NORMALIZE).encode()).hexdigest()
