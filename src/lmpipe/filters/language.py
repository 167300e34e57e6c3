"""Language identification with py3langid's naive Bayes model, which ships inside the wheel (works offline)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from lmpipe.filters.rules import Rule, Scores

if TYPE_CHECKING:
    from lmpipe.filters.config import LanguageRules


def _accepted(s: Scores, rules: LanguageRules) -> bool:
    return s.get("lang") in rules.languages  # a wrong language is rejected by select's membership test


# Stored as ``lang`` and ``lang_score`` by the score stage (knob: config.LanguageRules).
RULES = (Rule("language", "lang_score", "lang_score", "min", "min_score", optional=True, when=_accepted),)


@lru_cache(maxsize=1)
def _identifier():  # noqa: ANN202 - third-party type
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify(text: str, max_chars: int = 2000) -> tuple[str, float]:
    """(ISO 639-1 code, probability) from the first ``max_chars`` characters."""
    lang, prob = _identifier().classify(text[:max_chars])
    return str(lang), float(prob)
