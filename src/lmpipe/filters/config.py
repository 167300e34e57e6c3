"""Config of stages ``score`` (section ``filter.score``: what is measured) and ``filter`` (``filter.select``:
the per-domain rule sets over the stored scores); each family's bounds are in its module's ``RULES`` table."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmpipe.quality.config import QualityRules, QualityScoreConfig
from lmpipe.sections import Section


class C4ScoreConfig(Section):
    """C4 line cleaning, which decides which lines count toward the page's sentences."""

    min_words_per_line: int = Field(3, ge=0)
    max_word_length: int = Field(1000, ge=-1, description="lines with a longer word are dropped; -1 = off")
    remove_citations: bool = True
    javascript: bool = Field(True, description="drop lines mentioning javascript")
    policy: bool = Field(True, description="drop lines about cookies / terms of use")


class FineWebScoreConfig(Section):
    short_line_length: int = Field(30, ge=1, description="lines this long or shorter count as short")
    stop_chars: str | None = Field(None, description="line-final characters; None = terminal punctuation")


class LabelledFile(Section):
    """Training data for the toxicity classifier: JSONL with a text and a 0/1 label, or preference pairs."""

    path: str
    format: Literal["labelled", "pairs"] = "labelled"
    text_field: str = "text"
    label_field: str = "label"
    max_rows: int | None = Field(None, ge=1)


class ToxicityScoreConfig(Section):
    wordlist: str | None = Field(
        None, description="one term per line; None = the shipped LDNOOBW English list"
    )
    train_files: list[LabelledFile] = Field(default_factory=list, description="empty = no classifier")
    buckets: int = Field(1 << 18, ge=16, description="hashed n-gram features")
    ngrams: int = Field(2, ge=1, le=4)
    epochs: int = Field(200, ge=1)
    lr: float = Field(0.5, gt=0)
    l2: float = Field(1e-4, ge=0)
    hf_model_dir: str | None = Field(None, description="local text-classification model directory")
    hf_label: str = "toxic"


class PerplexityScoreConfig(Section):
    reference_domain: str | None = Field("prose", description="domain the n-gram LM learns; None = off")
    order: int = Field(3, ge=1, le=6)
    discount: float = Field(0.75, gt=0, lt=1)
    min_count: int = Field(1, ge=1, description="rarer words become <unk>")
    max_train_docs: int = Field(5000, ge=1)


class EvalFile(Section):
    path: str
    id_field: str = "id"
    text_fields: list[str] = Field(default_factory=lambda: ["question"], min_length=1)


class DecontamScoreConfig(Section):
    ngram: int = Field(13, ge=1, description="n-gram length shared with an eval item that flags a doc")
    min_ngram: int = Field(8, ge=1, description="shorter eval items are matched whole from this length")
    eval_files: list[EvalFile] = Field(default_factory=list)


class FilterScoreConfig(Section):
    """Stage ``score``: every per-document measurement, stored in ``meta["scores"]``."""

    stop_words: list[str] = Field(
        default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"]
    )
    top_ngrams: list[int] = Field(default_factory=lambda: [2, 3, 4])
    dup_ngrams: list[int] = Field(default_factory=lambda: [5, 6, 7, 8, 9, 10])
    c4: C4ScoreConfig = C4ScoreConfig()
    fineweb: FineWebScoreConfig = FineWebScoreConfig()
    language_chars: int = Field(2000, ge=1, description="characters given to language id")
    toxicity: ToxicityScoreConfig = ToxicityScoreConfig()
    perplexity: PerplexityScoreConfig = PerplexityScoreConfig()
    decontam: DecontamScoreConfig = DecontamScoreConfig()
    quality: QualityScoreConfig = QualityScoreConfig()
    docs_per_shard: int = Field(5000, ge=1)


class GopherQualityRules(Section):
    """Published Gopher thresholds; ``null`` switches one check off."""

    min_words: int | None = 50
    max_words: int | None = 100_000
    min_mean_word_len: float | None = 3
    max_mean_word_len: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines: float | None = 0.9
    max_ellipsis_lines: float | None = 0.3
    min_alpha_words: float | None = 0.8
    min_stop_words: int | None = 2


class GopherRepetitionRules(Section):
    max_dup_para_frac: float | None = 0.3
    max_dup_para_char_frac: float | None = 0.2
    max_dup_line_frac: float | None = 0.3
    max_dup_line_char_frac: float | None = 0.2
    max_top_ngram_frac: dict[int, float] = Field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    max_dup_ngram_frac: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )


class C4Rules(Section):
    min_sentences: int | None = 5
    lorem_ipsum: bool = True
    curly_bracket: bool = True
    remove_lines: bool = Field(False, description="keep only C4's clean lines in kept documents")


class FineWebRules(Section):
    min_line_punct_ratio: float | None = 0.12
    line_punct_exclude_zero: bool = False
    max_short_line_ratio: float | None = 0.67
    max_char_dup_ratio: float | None = 0.01
    max_list_ratio: float | None = 0.3


class LanguageRules(Section):
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    min_score: float = Field(0.65, ge=0, le=1)


class ToxicityRules(Section):
    max_word_frac: float | None = Field(0.01, ge=0, description="share of words on the list")
    max_classifier: float | None = Field(0.5, ge=0, le=1)
    max_hf: float | None = Field(0.5, ge=0, le=1)


class PerplexityRules(Section):
    max_perplexity: float | None = Field(None, gt=0)
    max_percentile: float | None = Field(
        None, gt=0, le=100, description="drop the tail above it (per domain)"
    )
    bands: tuple[float, float] = Field((33.3, 66.7), description="head/middle/tail percentile cut points")


class EncodingRules(Section):
    max_mojibake: int | None = Field(0, ge=0, description="mis-decoded UTF-8 sequences allowed")


class RuleSet(Section):
    """Which rule families apply to a domain, with their thresholds (``null`` = family off)."""

    encoding: EncodingRules | None = EncodingRules()
    language: LanguageRules | None = LanguageRules()
    gopher_quality: GopherQualityRules | None = GopherQualityRules()
    gopher_repetition: GopherRepetitionRules | None = GopherRepetitionRules()
    c4: C4Rules | None = C4Rules()
    fineweb: FineWebRules | None = FineWebRules()
    toxicity: ToxicityRules | None = ToxicityRules()
    perplexity: PerplexityRules | None = None
    quality: QualityRules | None = QualityRules()
    decontamination: bool = True
    pii_scrub: bool = True


class FilterSelectConfig(Section):
    """Stage ``filter``: thresholds per domain over the stored scores (cheap to re-run)."""

    default: RuleSet = Field(RuleSet(), description="rule set of domains not named in ``domains``")
    domains: dict[str, RuleSet] = Field(default_factory=dict)
    bypass: bool = Field(False, description="keep every training document unjudged (a no-filter arm); the rules "
                         "still judge the held-out sample, so its clean part does not change with this switch")
    pii_replacements: dict[str, str] = Field(
        default_factory=lambda: {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP_ADDRESS>"}
    )
    toxicity_sweep: list[float] = Field(
        default_factory=lambda: [0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1], description="plotted thresholds"
    )
    plot_sample: int = Field(50_000, ge=100, description="documents kept in memory for the histograms")
    docs_per_shard: int = Field(5000, ge=1)

    def rules_for(self, domain: str) -> RuleSet:
        return self.domains.get(domain, self.default)


class FilterConfig(Section):
    score: FilterScoreConfig = FilterScoreConfig()
    select: FilterSelectConfig = FilterSelectConfig()
