"""PHF conditional training (Korbak et al. 2023): each training document, or each of its segments, is
preceded by a control token naming its score level (``<|good|>`` / ``<|bad|>``, or more levels).

Levels come from a score the ``score`` stage stored in ``meta`` and cut points at percentiles of that score
over the *training* documents (held-out text never sets a threshold). Segment granularity splits a document
into paragraphs and scores each with the per-text scorer of that score (only scores that can be recomputed
on any text have one). The tokens are inserted as ids, never as text: a document that literally contains
``<|good|>`` keeps it as plain text (:class:`lmpipe.tokenizer.Encoder` does not parse special tokens).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lmpipe.conditioning.config import ControlConfig
from lmpipe.docsplit import SplitPlan
from lmpipe.documents import iter_batches

_PARAGRAPH_END = re.compile(r"\n[ \t]*\n\s*")


def segments(text: str) -> list[str]:
    """Paragraphs, each keeping the blank line(s) after it, so ``"".join(segments(t)) == t``."""
    out, start = [], 0
    for m in _PARAGRAPH_END.finditer(text):
        out.append(text[start : m.end()])
        start = m.end()
    if start < len(text) or not out:
        out.append(text[start:])
    return out


def _word_frac_scorer() -> Callable[[str], float]:
    from lmpipe.filters.text import normalize_words
    from lmpipe.filters.toxicity import WordList

    words = WordList.load()

    def score(text: str) -> float:
        norm = normalize_words(text)
        return words.count(norm, text) / max(len(norm), 1)

    return score


# scores that can be recomputed on any piece of text, as the score stage computes them for a document
SEGMENT_SCORERS: dict[str, Callable[[], Callable[[str], float]]] = {"tox_word_frac": _word_frac_scorer}


class ControlTagger:
    """Level of a score (0 = best) and the control token id of each level."""

    def __init__(self, cfg: ControlConfig, cuts: list[float], token_ids: list[int]) -> None:
        self.cfg, self.cuts, self.token_ids = cfg, cuts, token_ids
        self._segment_score: Callable[[str], float] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_segment_score": None}  # a closure over the word list: rebuilt per process

    def oriented(self, value: float) -> float:
        return float(value) if self.cfg.better == "lower" else -float(value)

    def level(self, value: float | None, doc_id: str = "") -> int:
        if value is None:
            if self.cfg.missing == "error":
                raise ValueError(
                    f"document {doc_id!r} has no score {self.cfg.score!r} (condition.control.missing: "
                    "worst tags it with the worst level instead)"
                )
            return len(self.cuts)
        v = self.oriented(value)
        return sum(v > c for c in self.cuts)

    def segment_score(self, text: str) -> float:
        if self._segment_score is None:
            self._segment_score = segment_scorer(self.cfg.score)
        return self._segment_score(text)

    def pieces(self, text: str, meta: dict[str, Any], doc_id: str) -> list[tuple[int, str]]:
        """``(level, text)`` pieces of a document: one (document granularity) or one per segment."""
        if self.cfg.granularity == "document":
            return [(self.level(_score(meta, self.cfg.score), doc_id), text)]
        return [(self.level(self.segment_score(s)), s) for s in segments(text)]


def segment_scorer(score: str) -> Callable[[str], float]:
    if score not in SEGMENT_SCORERS:
        raise ValueError(
            f"condition.control.granularity: segment needs a per-text scorer for {score!r}; "
            f"available: {', '.join(SEGMENT_SCORERS)} (or use granularity: document)"
        )
    return SEGMENT_SCORERS[score]()


def _score(meta: dict[str, Any], key: str) -> float | None:
    v = meta.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _train_values(cfg: ControlConfig, docs_dir: Path, plan: SplitPlan) -> Iterator[float]:
    scorer = segment_scorer(cfg.score) if cfg.granularity == "segment" else None
    cols = ["id", "meta"] + (["text"] if scorer else [])
    for batch in iter_batches(docs_dir, cols, batch_size=1000):
        d = batch.to_pydict()
        for i, doc_id in enumerate(d["id"]):
            if plan.split_of(doc_id) != "train":
                continue
            if scorer is not None:
                yield from (scorer(s) for s in segments(d["text"][i]))
            else:
                v = _score(json.loads(d["meta"][i] or "{}"), cfg.score)
                if v is not None:
                    yield v


def build_tagger(
    cfg: ControlConfig, docs_dir: str | Path, plan: SplitPlan, token_ids: list[int]
) -> ControlTagger:
    """Cut points: the configured percentiles of the oriented score over training documents (or segments)."""
    sign = 1.0 if cfg.better == "lower" else -1.0
    values = np.fromiter((sign * v for v in _train_values(cfg, Path(docs_dir), plan)), dtype=np.float64)
    if values.size == 0:
        raise ValueError(
            f"condition.control: no training document carries score {cfg.score!r} "
            "(is it stored by the score stage? see metrics/score.json)"
        )
    cuts = [float(c) for c in np.percentile(values, cfg.percentiles)]
    return ControlTagger(cfg, cuts, token_ids)
