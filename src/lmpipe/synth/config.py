"""Config of stage ``augment`` (section ``augment``): document selection, EntiGraph, thought augmentation and
the checks on every generation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lmpipe.sections import Section


class SelectConfig(Section):
    """Which input documents a synthesis method augments: by domain and/or a numeric score in ``meta``."""

    domains: list[str] = Field(default_factory=lambda: ["fiction"], description="empty = every domain")
    score_field: str | None = Field(
        None, description="meta key holding a score, e.g. a difficulty or quality score"
    )
    min_score: float | None = None
    max_score: float | None = None
    max_docs: int | None = Field(
        None, ge=0, description="first N selected documents in dataset order; null = all"
    )


class EntiGraphConfig(Section):
    """EntiGraph: entities per document, then texts relating sampled entity pairs and triples."""

    enabled: bool = True
    mode: Literal["entigraph", "rephrase", "raw"] = Field(
        "entigraph",
        description="what the selected docs become: EntiGraph relation texts; 'rephrase': `rephrases` LLM "
        "paraphrases of each doc (the EntiGraph paper's Rephrase baseline); 'raw': the doc itself, copied to the "
        "synthetic domain (raw-document CPT)",
    )
    rephrases: int = Field(2, ge=1, description="rephrase mode: paraphrases per document")
    rephrase_tokens: int = Field(256, ge=8, description="rephrase mode: max tokens per paraphrase")
    select: SelectConfig = SelectConfig()
    doc_chars: int = Field(1500, ge=100, description="document prefix shown to the model")
    max_entities: int = Field(8, ge=2)
    entity_tokens: int = Field(96, ge=8, description="max tokens for the entity/summary JSON")
    json_attempts: int = Field(
        2, ge=1, le=10, description="tries for parseable JSON before the heuristic extractor"
    )
    json_mode: Literal["schema", "object", "off"] = Field(
        "schema",
        description="how the entity step asks for JSON: 'schema' (entities + summary: constrained decoding on "
        "the embedded model and serve-llm, structured outputs on OpenAI/vLLM), 'object' (any JSON object), "
        "'off' (the prompt alone, for servers without JSON mode)",
    )
    pairs: int = Field(2, ge=0, description="entity pairs per document")
    triples: int = Field(1, ge=0, description="entity triples per document")
    max_tokens: int = Field(96, ge=8, description="max tokens per relation text")
    doc_token_budget: int = Field(
        300, ge=8, description="max generated tokens per document over all its relation texts"
    )


class ThoughtsConfig(Section):
    """Thought augmentation: a thinking trajectory per document (TPT), or inferred latent thoughts (BoLT)."""

    enabled: bool = True
    mode: Literal["tpt", "bolt"] = Field(
        "tpt", description="tpt: thought appended after the doc; bolt: latent thought before it"
    )
    select: SelectConfig = SelectConfig()
    doc_chars: int = Field(1500, ge=100)
    max_tokens: int = Field(128, ge=8)
    format: str | None = Field(
        None, description="output layout with {document} and {thought}; null = the mode's default"
    )

    @model_validator(mode="after")
    def _format(self) -> ThoughtsConfig:
        if self.format is not None and not all(k in self.format for k in ("{document}", "{thought}")):
            raise ValueError("format must contain both {document} and {thought}")
        return self


class SynthQualityConfig(Section):
    """Checks on every generation; failures go to the quarantine with the reason."""

    min_words: int = Field(8, ge=0, description="fewer words = 'empty'")
    truncated: Literal["trim", "drop", "keep"] = Field(
        "trim", description="a text cut by max_tokens: trim to its last full sentence, drop it, or keep it"
    )
    max_dup_ngram_frac: float = Field(
        0.3,
        gt=0,
        le=1,
        description="share of words inside repeated 3-grams above which a text is 'degenerate'",
    )
    min_unique_word_frac: float = Field(
        0.3, ge=0, le=1, description="distinct/total words below which a text is 'degenerate'"
    )
    refusal_patterns: list[str] = Field(
        default_factory=lambda: [
            r"\bI(?:'m| am) (?:sorry|unable)\b",
            r"\bI can(?:not|'t) (?:help|assist|provide|do)\b",
            r"\bAs an AI\b",
        ],
        description="regexes (case-insensitive) marking a refusal",
    )


class AugmentConfig(Section):
    """Synthetic data from an LLM: EntiGraph and thought augmentation (stage ``augment``)."""

    temperature: float = Field(0.7, ge=0, le=2, description="0 = greedy")
    top_p: float = Field(0.9, gt=0, le=1)
    repetition_penalty: float = Field(1.1, ge=1, le=2)
    entigraph: EntiGraphConfig = EntiGraphConfig()
    thoughts: ThoughtsConfig = ThoughtsConfig()
    quality: SynthQualityConfig = SynthQualityConfig()
    docs_per_shard: int = Field(5000, ge=1)
    workers: int = Field(1, ge=1, description="parallel shards; each loads its own embedded model (prefer 1)")
    prompts_dir: str | None = Field(
        None, description="directory of prompt templates overriding the packaged ones"
    )
    exclude_heldout: bool = Field(
        True, description="never augment the documents tokenize holds out for evaluation"
    )
