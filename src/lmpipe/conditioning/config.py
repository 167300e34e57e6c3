"""Params of conditioning instead of filtering (``condition:`` in params.yaml): options of the ``tokenize``,
``pretrain`` and ``evaluate`` stages, both off by default."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lmpipe.sections import Section


class ControlConfig(Section):
    """PHF conditional training: a control token before each document (or segment) from a stored score."""

    enabled: bool = False
    score: str = Field(
        "tox_classifier", min_length=1, description="meta key stored by `score` (e.g. tox_word_frac)"
    )
    better: Literal["lower", "higher"] = Field("lower", description="which end of the score is good")
    tokens: list[str] = Field(
        default_factory=lambda: ["<|good|>", "<|bad|>"],
        min_length=2,
        description="control tokens, best level first (reserved as single ids)",
    )
    percentiles: list[float] = Field(
        default_factory=lambda: [75.0],
        description="cut points, ascending: the best 75% of training text gets tokens[0]",
    )
    granularity: Literal["document", "segment"] = Field(
        "document", description="segment: paragraphs, each scored by the score's per-text scorer"
    )
    missing: Literal["error", "worst"] = Field(
        "error", description="a document without the score: error | worst level"
    )

    @model_validator(mode="after")
    def _levels(self) -> ControlConfig:
        if len(self.percentiles) != len(self.tokens) - 1:
            raise ValueError(
                f"{len(self.tokens)} tokens need {len(self.tokens) - 1} percentiles; got {self.percentiles}"
            )
        if any(not 0 < p < 100 for p in self.percentiles) or self.percentiles != sorted(
            set(self.percentiles)
        ):
            raise ValueError(
                f"percentiles must be strictly ascending within (0, 100); got {self.percentiles}"
            )
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError(f"control tokens must be distinct; got {self.tokens}")
        return self


class MetaConfig(Section):
    """MeCo: metadata before each document for the first ``fraction`` of training tokens, then a cooldown."""

    enabled: bool = False
    template: str = Field(
        "URL: {host}\n\n", description="fields: {host} (URL host, else source), {url}, {source}, {domain}"
    )
    fraction: float = Field(0.9, gt=0.0, le=1.0, description="share of pretraining tokens with the prefix")


class ConditionConfig(Section):
    control: ControlConfig = ControlConfig()
    meco: MetaConfig = MetaConfig()

    def special_tokens(self) -> list[str]:
        """Tokens the tokenizer must reserve as single ids."""
        return list(self.control.tokens) if self.control.enabled else []
