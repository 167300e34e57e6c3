"""Config of the pre-filter held-out sample (``ingest.holdout``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lmpipe.sections import Section


class HoldoutConfig(Section):
    """A seeded id-hash sample per domain, diverted by ``ingest`` to its own dataset (``data/heldout_raw``): it
    never reaches score / filter / dedup / tokenize / augment as training input. ``score`` and ``filter`` then
    measure and judge it with the corpus's rules, so ``evaluate`` reports loss on the raw sample and on its
    clean part (the documents the filter would keep), the same documents in every arm of a filtering study."""

    fraction: float = Field(
        0.02, ge=0.0, lt=1.0, description="share of each domain held out (by a hash of the id)"
    )
    domains: dict[str, float] = Field(
        default_factory=lambda: {"fiction": 0.0},
        description="per-domain fraction overriding `fraction`; fiction: 0 by default, its articles are the only "
        "source of the closed-book QA facts (a held-out article makes its questions unanswerable)",
    )
    seed: int = Field(
        0, ge=0, description="salts the hash (not run.seed: seeds of a study keep the held-out set)"
    )

    @model_validator(mode="after")
    def _fractions(self) -> HoldoutConfig:
        bad = {d: f for d, f in self.domains.items() if not 0.0 <= f < 1.0}
        if bad:
            raise ValueError(f"domains: each fraction must be in [0, 1); got {bad}")
        return self

    def fraction_for(self, domain: str) -> float:
        return self.domains.get(domain, self.fraction)


class PrefilterEvalConfig(Section):
    """What ``evaluate`` scores on the pre-filter held-out sample (section ``evaluate.prefilter``)."""

    subsets: list[Literal["raw", "clean"]] = Field(
        default_factory=lambda: ["raw", "clean"],
        description="raw: the whole sample; clean: the part the filter rules keep (empty list: off)",
    )
    models: list[str] | None = Field(
        None,
        description="evaluate.models scored on it; None = those without a parent (trained from scratch on the "
        "pipeline's data, the ones a filtering study compares); each costs ~2-4 s at the demo size",
    )
