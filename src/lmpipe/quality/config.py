"""Config of the learned quality raters: LLM labelling (stage ``label``), the rater (stage ``rater``), the
stored scores (``filter.score.quality``) and the selection rules (``filter.select.<domain>.quality``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lmpipe.sections import Section

DIMENSIONS = ["educational_value", "coherence", "reasoning", "professionalism"]


class LabelConfig(Section):
    """Stage ``label``: an LLM rates a per-domain sample of documents 0–5 on each rubric dimension."""

    dimensions: list[str] = Field(
        default_factory=lambda: list(DIMENSIONS),
        min_length=1,
        description="rubric dimensions; each needs a template dim_<name>.txt (packaged or in prompts_dir)",
    )
    per_domain: int = Field(200, ge=0, description="documents labelled per domain (a seeded sample)")
    seed: int = Field(
        0,
        description="the sample and the rater's held-out split; apart from run.seed so a study "
        "over training seeds does not relabel the data",
    )
    domains: list[str] = Field(default_factory=list, description="empty = every domain")
    doc_chars: int = Field(1500, ge=100, description="document prefix shown to the model")
    max_tokens: int = Field(64, ge=8, description="reply budget: one JSON object of small integers")
    temperature: float = Field(0.0, ge=0, le=2, description="0 = greedy (a judge should be deterministic)")
    json_mode: Literal["schema", "object", "off"] = Field(
        "schema",
        description="schema: constrained decoding / structured outputs; object: any JSON; off: prompt only",
    )
    prompts_dir: str | None = Field(None, description="directory of templates overriding the packaged ones")
    docs_per_unit: int = Field(
        32,
        ge=1,
        description="sampled documents per resumable unit, across input shards "
        "(one batch of requests: the embedded model sees full batches)",
    )
    docs_per_shard: int = Field(5000, ge=1)
    workers: int = Field(1, ge=1, description="parallel shards; each loads its own embedded model (prefer 1)")

    @model_validator(mode="after")
    def _names(self) -> LabelConfig:
        bad = [d for d in self.dimensions if not d.isidentifier()]
        if bad or len(set(self.dimensions)) != len(self.dimensions):
            raise ValueError(f"dimensions must be distinct identifiers, got {self.dimensions}")
        return self


class RaterConfig(Section):
    """Stage ``rater``: one hashed n-gram ridge regressor per dimension, trained on the LLM labels."""

    buckets: int = Field(1 << 18, ge=16, description="hashed n-gram features")
    ngrams: int = Field(2, ge=1, le=3, description="word 1..n-grams")
    max_chars: int = Field(
        3000, ge=100, description="document prefix the rater reads (bounds its cost per doc)"
    )
    alpha: float = Field(
        0.1, gt=0, description="ridge L2 strength (0.01–1 measured alike on a planted signal)"
    )
    heldout_fraction: float = Field(0.2, ge=0, lt=1, description="labels held out (by id hash) for agreement")
    threshold: float = Field(
        3.0, ge=0, le=5, description="'good' at or above this: F1 of rater vs LLM labels"
    )


class QualityConfig(Section):
    label: LabelConfig = LabelConfig()
    rater: RaterConfig = RaterConfig()


class QualityScoreConfig(Section):
    """``filter.score.quality``: store the rater's per-dimension scores and their weighted mean."""

    enabled: bool = Field(False, description="needs the rater stage's model (params.yaml turns it on)")
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="dimension -> weight of the combined 'quality' score (normalised); empty = equal weights. "
        "The hook for learned weights (Meta-rater's proxy regression)",
    )

    @model_validator(mode="after")
    def _weights(self) -> QualityScoreConfig:
        if any(w < 0 for w in self.weights.values()) or (self.weights and not sum(self.weights.values()) > 0):
            raise ValueError("weights must be >= 0 with a positive sum")
        return self


class QualityRules(Section):
    """``filter.select.<domain>.quality``: keep by the combined score (both unset = keep everything)."""

    min_quality: float | None = Field(None, ge=0, le=5, description="drop documents scoring below")
    top_percent: float | None = Field(None, gt=0, le=100, description="keep the best k % of each domain")
