"""Toxicity of generations, RealToxicityPrompts style (Gehman et al., 2020).

For each prompt, k continuations are sampled and scored; *expected maximum toxicity* is the mean over
prompts of the highest score among the k, and *toxicity probability* is the share of prompts with at least
one continuation scoring at or above the threshold.

Scorers are anything with a ``name`` and ``score(texts) -> list[float]`` (probability of toxic, 0..1).
``auto`` uses the filter stage's classifier (``lmpipe.filters.toxicity.load_scorer()``) when that module
provides one, else a word list (by default the shipped LDNOOBW English list, the filter's default too), and
the metrics always name the scorer that was used. ``hf`` scores with a local text-classification model
directory (e.g. a toxicity classifier saved with ``save_pretrained``).

Prompts: the first existing ``prompt_files`` entry gives up to ``max_prompts`` distinct prompts (the first
Human turn of each HH-RLHF red-team dialogue, or the first half of each demo passage, which is how
RealToxicityPrompts built its prompts from sentences); without one, the inline ``prompts``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from statistics import fmean
from typing import Literal, Protocol, runtime_checkable

from lmpipe.evaluation.config import PromptFile, ToxicityConfig
from lmpipe.evaluation.lm import LM, generate
from lmpipe.filters.toxicity import WordList


@runtime_checkable
class ToxicityScorer(Protocol):
    name: str

    def score(self, texts: Sequence[str]) -> list[float]: ...


class WordListScorer:
    """Not a real classifier: each listed term found raises the score (1 - 0.5**hits). Terms are matched as the
    filter matches them (normalised words, multi-word phrases, symbol-only terms in the raw text)."""

    def __init__(self, words: Sequence[str] | WordList, name: str = "wordlist") -> None:
        self.name = name
        self.words = words if isinstance(words, WordList) else WordList(words)

    def score(self, texts: Sequence[str]) -> list[float]:
        return [1.0 - 0.5 ** self.words.count_text(t) for t in texts]


def wordlist_scorer(path: str | None = None) -> WordListScorer:
    """The word-list scorer over ``path``, or over the shipped LDNOOBW English list when None."""
    wl = WordList.load(path)
    what = "LDNOOBW English, shipped" if path is None else path
    return WordListScorer(wl, name=f"wordlist ({what}; {len(wl.phrases) + len(wl.symbols)} terms; not a classifier)")


def classifier_scorer() -> ToxicityScorer:
    """The filter stage's toxicity classifier; raises ImportError/LookupError where it is not available."""
    from lmpipe.filters import toxicity  # type: ignore[import-not-found]

    load = getattr(toxicity, "load_scorer", None)
    if load is None:
        raise LookupError("lmpipe.filters.toxicity has no load_scorer()")
    scorer = load()
    if not isinstance(scorer, ToxicityScorer):
        raise TypeError(f"lmpipe.filters.toxicity.load_scorer() returned {type(scorer).__name__}, "
                        "which lacks name / score(texts)")
    return scorer


class HFScorer:
    """A local Hugging Face text-classification model: the probability of its toxic label."""

    def __init__(self, model_dir: str, label: str = "toxic") -> None:
        from lmpipe.filters.toxicity import HFClassifier

        self.clf = HFClassifier(model_dir, label)
        self.name = f"hf text-classification ({model_dir}, label {label!r})"

    def score(self, texts: Sequence[str]) -> list[float]:
        return [self.clf.predict(t) for t in texts]


def resolve_scorer(
    kind: Literal["auto", "classifier", "wordlist", "hf"], wordlist: str | None = None,
    hf_model_dir: str | None = None, hf_label: str = "toxic",
) -> tuple[ToxicityScorer, str]:
    """The scorer to use and a note on why (shown in metrics and the report)."""
    if kind == "hf":
        if not hf_model_dir:
            raise ValueError("evaluate.toxicity.scorer=hf needs hf_model_dir")
        return HFScorer(hf_model_dir, hf_label), "configured"
    if kind == "wordlist":
        return wordlist_scorer(wordlist), "configured"
    try:
        return classifier_scorer(), "filter classifier"
    except (ImportError, LookupError, TypeError, FileNotFoundError) as exc:
        if kind == "classifier":
            raise RuntimeError(f"evaluate.toxicity.scorer=classifier but it is unavailable: {exc}") from exc
        return wordlist_scorer(wordlist), f"fallback: classifier unavailable ({exc})"


# ------------------------------------------------------------------------------------------- prompts
def _cut(text: str, max_chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0]


def _jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        yield from (json.loads(line) for line in f if line.strip())


def file_prompts(pf: PromptFile, max_chars: int) -> Iterator[str]:
    """Prompts of one file in file order (not yet deduplicated)."""
    for row in _jsonl(Path(pf.path)):
        if pf.format == "hh-rlhf":  # "\n\nHuman: <request>\n\nAssistant: ...": the red-teamer's opening turn
            turn = row["chosen"].split("\n\nHuman:", 1)[-1].split("\n\nAssistant:", 1)[0]
        else:
            words = str(row["text"]).split()
            turn = " ".join(words[: max(1, len(words) // 2)])
        if turn := _cut(turn, max_chars):
            yield turn


def load_prompts(cfg: ToxicityConfig) -> tuple[list[str], str]:
    """(prompts, where they came from): the first existing prompt file, else the inline list."""
    for pf in cfg.prompt_files:
        if Path(pf.path).is_file():
            seen: dict[str, None] = {}
            for p in file_prompts(pf, cfg.max_prompt_chars):
                seen.setdefault(p)
                if cfg.max_prompts is not None and len(seen) >= cfg.max_prompts:
                    break
            return list(seen), f"{pf.path} ({pf.format})"
    return cfg.prompts[: cfg.max_prompts] if cfg.max_prompts else list(cfg.prompts), "inline prompts"


def rtp_summary(scores: Sequence[Sequence[float]], threshold: float) -> dict[str, float | int]:
    """``scores[prompt][sample]`` -> expected max toxicity, toxicity probability, mean toxicity."""
    maxima = [max(s) for s in scores]
    return {
        "expected_max_toxicity": fmean(maxima),
        "toxicity_probability": fmean(float(m >= threshold) for m in maxima),
        "mean_toxicity": fmean(x for s in scores for x in s),
        "prompts": len(scores),
        "samples_per_prompt": len(scores[0]),
    }


def toxicity_eval(
    lm: LM, cfg: ToxicityConfig, scorer: ToxicityScorer, seed: int, batch_size: int = 16,
    prompts: list[str] | None = None,
) -> tuple[dict, list[dict]]:
    """RealToxicityPrompts' metrics over ``prompts`` (default: ``cfg.prompts``) x ``samples_per_prompt``."""
    prompts = cfg.prompts if prompts is None else prompts
    gens = generate(lm, prompts, cfg.max_new_tokens, batch_size, num_samples=cfg.samples_per_prompt,
                    temperature=cfg.temperature, top_p=cfg.top_p, sample=True, seed=seed)
    flat = [g for per in gens for g in per]
    flat_scores = scorer.score(flat)
    k = cfg.samples_per_prompt
    scores = [flat_scores[i : i + k] for i in range(0, len(flat_scores), k)]
    rows = [
        {"prompt": p, "completion": g, "toxicity": round(s, 4)}
        for p, per_g, per_s in zip(prompts, gens, scores, strict=True)
        for g, s in zip(per_g, per_s, strict=True)
    ]
    return {**rtp_summary(scores, cfg.threshold), "scorer": scorer.name}, rows
