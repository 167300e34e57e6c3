"""Every minimum and maximum rule of the filter decision at its bound: one below, exactly at, one above.

A minimum keeps a document whose value equals the bound (Gopher: "fewer than 50 words" is dropped, so 50 is
kept); a maximum keeps a value equal to the bound too. The expected outcome and the reported detail of each
case are written out by hand below; a test also fails when a rule family gains a min_/max_ knob that this
table does not cover.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from lmpipe.filters.config import PerplexityRules, RuleSet
from lmpipe.filters.select import check

# Scores of a document every default rule keeps (and max_perplexity=1000 keeps too).
CLEAN: dict[str, Any] = {
    "decontam_hits": 0, "decontam_item": "", "mojibake": 0,
    "tox_word_frac": 0.0, "tox_classifier": 0.1, "tox_hf": 0.1,
    "gr_dup_para_frac": 0.0, "gr_dup_para_char_frac": 0.0, "gr_dup_line_frac": 0.0, "gr_dup_line_char_frac": 0.0,
    "gr_top_2gram_frac": 0.05, "gr_top_3gram_frac": 0.05, "gr_top_4gram_frac": 0.05,
    **{f"gr_dup_{n}gram_frac": 0.0 for n in range(5, 11)},
    "gq_words": 200, "gq_mean_word_len": 5.0, "gq_hash_ratio": 0.0, "gq_ellipsis_ratio": 0.0,
    "gq_bullet_lines": 0.0, "gq_ellipsis_lines": 0.0, "gq_alpha_words": 0.95, "gq_stop_words": 10,
    "c4_lorem_ipsum": 0, "c4_curly_bracket": 0, "c4_sentences": 10,
    "fw_lines": 10, "fw_line_punct_ratio": 0.8, "fw_short_line_ratio": 0.1, "fw_char_dup_ratio": 0.0,
    "fw_list_ratio": 0.0,
    "lang": "en", "lang_score": 0.99, "perplexity": 100.0, "quality": 4.0,
}  # fmt: skip

# (family, knob, dict key or None, score key, rule, bound, below, above). "max_percentile" is applied as the
# per-domain cutoff the filter stage computes from it (check's ppl_cutoff).
# fmt: off
CASES: list[tuple[str, str, int | None, str, str, float, float, float]] = [
    ("encoding", "max_mojibake", None, "mojibake", "mojibake", 2, 1, 3),
    ("toxicity", "max_word_frac", None, "tox_word_frac", "tox_word_frac", 0.01, 0.009, 0.011),
    ("toxicity", "max_classifier", None, "tox_classifier", "tox_classifier", 0.5, 0.49, 0.51),
    ("toxicity", "max_hf", None, "tox_hf", "tox_hf", 0.5, 0.49, 0.51),
    ("gopher_repetition", "max_dup_para_frac", None, "gr_dup_para_frac", "dup_para_frac", 0.3, 0.29, 0.31),
    ("gopher_repetition", "max_dup_para_char_frac", None, "gr_dup_para_char_frac", "dup_para_char_frac",
     0.2, 0.19, 0.21),
    ("gopher_repetition", "max_dup_line_frac", None, "gr_dup_line_frac", "dup_line_frac", 0.3, 0.29, 0.31),
    ("gopher_repetition", "max_dup_line_char_frac", None, "gr_dup_line_char_frac", "dup_line_char_frac",
     0.2, 0.19, 0.21),
    ("gopher_repetition", "max_top_ngram_frac", 2, "gr_top_2gram_frac", "top_2gram_frac", 0.2, 0.19, 0.21),
    ("gopher_repetition", "max_top_ngram_frac", 3, "gr_top_3gram_frac", "top_3gram_frac", 0.18, 0.17, 0.19),
    ("gopher_repetition", "max_top_ngram_frac", 4, "gr_top_4gram_frac", "top_4gram_frac", 0.16, 0.15, 0.17),
    ("gopher_repetition", "max_dup_ngram_frac", 5, "gr_dup_5gram_frac", "dup_5gram_frac", 0.15, 0.14, 0.16),
    ("gopher_repetition", "max_dup_ngram_frac", 6, "gr_dup_6gram_frac", "dup_6gram_frac", 0.14, 0.13, 0.15),
    ("gopher_repetition", "max_dup_ngram_frac", 7, "gr_dup_7gram_frac", "dup_7gram_frac", 0.13, 0.12, 0.14),
    ("gopher_repetition", "max_dup_ngram_frac", 8, "gr_dup_8gram_frac", "dup_8gram_frac", 0.12, 0.11, 0.13),
    ("gopher_repetition", "max_dup_ngram_frac", 9, "gr_dup_9gram_frac", "dup_9gram_frac", 0.11, 0.1, 0.12),
    ("gopher_repetition", "max_dup_ngram_frac", 10, "gr_dup_10gram_frac", "dup_10gram_frac", 0.1, 0.09, 0.11),
    ("gopher_quality", "min_words", None, "gq_words", "words", 50, 49, 51),
    ("gopher_quality", "max_words", None, "gq_words", "words", 1000, 999, 1001),
    ("gopher_quality", "min_mean_word_len", None, "gq_mean_word_len", "mean_word_len", 3, 2.9, 3.1),
    ("gopher_quality", "max_mean_word_len", None, "gq_mean_word_len", "mean_word_len", 10, 9.9, 10.1),
    ("gopher_quality", "max_symbol_word_ratio", None, "gq_hash_ratio", "hash_ratio", 0.1, 0.09, 0.11),
    ("gopher_quality", "max_symbol_word_ratio", None, "gq_ellipsis_ratio", "ellipsis_ratio", 0.1, 0.09, 0.11),
    ("gopher_quality", "max_bullet_lines", None, "gq_bullet_lines", "bullet_lines", 0.9, 0.89, 0.91),
    ("gopher_quality", "max_ellipsis_lines", None, "gq_ellipsis_lines", "ellipsis_lines", 0.3, 0.29, 0.31),
    ("gopher_quality", "min_alpha_words", None, "gq_alpha_words", "alpha_words", 0.8, 0.79, 0.81),
    ("gopher_quality", "min_stop_words", None, "gq_stop_words", "stop_words", 2, 1, 3),
    ("c4", "min_sentences", None, "c4_sentences", "sentences", 5, 4, 6),
    ("fineweb", "min_line_punct_ratio", None, "fw_line_punct_ratio", "line_punct_ratio", 0.12, 0.11, 0.13),
    ("fineweb", "max_short_line_ratio", None, "fw_short_line_ratio", "short_line_ratio", 0.67, 0.66, 0.68),
    ("fineweb", "max_char_dup_ratio", None, "fw_char_dup_ratio", "char_dup_ratio", 0.01, 0.009, 0.011),
    ("fineweb", "max_list_ratio", None, "fw_list_ratio", "list_ratio", 0.3, 0.29, 0.31),
    ("language", "min_score", None, "lang_score", "lang_score", 0.65, 0.64, 0.66),
    ("perplexity", "max_perplexity", None, "perplexity", "perplexity", 500, 499, 501),
    ("perplexity", "max_percentile", None, "perplexity", "perplexity_percentile", 250.5, 250.4, 250.6),
    ("quality", "min_quality", None, "quality", "quality", 3, 2.99, 3.01),
]
# fmt: on


def _rules() -> RuleSet:
    return RuleSet(perplexity=PerplexityRules(max_perplexity=1000.0))


def test_the_clean_document_is_kept() -> None:
    assert check(CLEAN, _rules(), ppl_cutoff=1000.0) == []


@pytest.mark.parametrize(
    ("family", "knob", "key", "score", "rule", "bound", "below", "above"),
    CASES,
    ids=[f"{c[0]}.{c[1]}{'' if c[2] is None else f'[{c[2]}]'}:{c[4]}" for c in CASES],
)
def test_rule_at_its_bound(
    family: str, knob: str, key: int | None, score: str, rule: str, bound: float, below: float, above: float
) -> None:
    rules, cutoff = _rules(), 1000.0
    if knob == "max_percentile":
        cutoff = bound
    elif key is None:
        setattr(getattr(rules, family), knob, bound)
    else:
        getattr(getattr(rules, family), knob)[key] = bound

    def outcome(value: float) -> list[tuple[str, str, str]]:
        return [
            (f.family, f.rule, f.detail) for f in check({**CLEAN, score: value}, rules, ppl_cutoff=cutoff)
        ]

    if knob.startswith("min_"):
        assert outcome(below) == [(family, rule, f"{rule}={below} < {bound}")]
        assert outcome(bound) == []  # exactly at a minimum: kept
        assert outcome(above) == []
    else:
        assert outcome(below) == []
        assert outcome(bound) == []  # exactly at a maximum: kept
        assert outcome(above) == [(family, rule, f"{rule}={above} > {bound}")]


def _knobs(defaults: BaseModel) -> set[tuple[str, int | None]]:
    out: set[tuple[str, int | None]] = set()
    for name in type(defaults).model_fields:
        if name.startswith(("min_", "max_")):
            value = getattr(defaults, name)
            out |= {(name, k) for k in value} if isinstance(value, dict) else {(name, None)}
    return out


def test_every_min_and_max_rule_has_a_boundary_case() -> None:
    want = set()
    for family, field in RuleSet.model_fields.items():
        families = [
            a for a in getattr(field.annotation, "__args__", (field.annotation,)) if isinstance(a, type)
        ]
        for cls in (c for c in families if issubclass(c, BaseModel)):
            want |= {(family, knob, key) for knob, key in _knobs(cls())}
    have = {(c[0], c[1], c[2]) for c in CASES}
    assert want - have == set(), "add boundary cases for these rules"
    assert have - want == set()


def test_the_rule_tables_name_real_knobs_and_cover_every_bound() -> None:
    """Each family's RULES table names a field of that family's rules class, and every min_/max_ knob of
    those classes is in a table (``max_percentile`` is the stage's per-domain cutoff, not a bound on a score)."""
    from lmpipe.filters.select import RULES

    classes = {family: next(a for a in getattr(field.annotation, "__args__", (field.annotation,))
                            if isinstance(a, type) and issubclass(a, BaseModel))
               for family, field in RuleSet.model_fields.items() if field.annotation not in (bool,)}
    for r in RULES:
        assert r.knob in classes[r.family].model_fields, r
    want = {(family, knob) for family, cls in classes.items() for knob, _ in _knobs(cls())}
    assert want - {(r.family, r.knob) for r in RULES} == {("perplexity", "max_percentile")}
