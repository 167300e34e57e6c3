"""Knobs of online reweighting (``mixture.reweight``) and the CPT replay-ratio grid (``cmr``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lmpipe.sections import Section


class ReweightConfig(Section):
    """DoReMi-style online reweighting during training (:mod:`lmpipe.mixing.reweight`): every ``every`` optimizer
    steps, the model's loss on fixed held-out batches of each domain is compared with a reference loss; the
    sampler's weights move by an exponentiated-gradient step on the clipped excess loss, mixed with uniform."""

    enabled: bool = False
    every: int = Field(10, ge=1, description="optimizer steps between weight updates")
    step_size: float = Field(1.0, gt=0, description="eta of the exponentiated-gradient step")
    smoothing: float = Field(1e-3, ge=0, lt=1, description="c: weights = (1 - c) * updated + c * uniform")
    reference: dict[str, float] = Field(
        default_factory=dict, description="per-domain reference loss (nats/token); absent domains: 0"
    )
    reference_model: str | None = Field(
        None,
        description="HF model dir whose losses on the same batches are the reference (DoReMi); "
        "overrides `reference`",
    )
    batches: int = Field(2, ge=1, description="fixed held-out batches per domain per update")
    split: Literal["val", "train"] = Field("val", description="token split the per-domain batches come from")


class CmrConfig(Section):
    """Stage ``cmr`` (:mod:`lmpipe.mixing.cmrgrid`): short CPT runs from the parent over a grid of replay ratio x
    steps, the law ``L(r, d) = E + A d^-alpha + B r^-beta`` fitted to the old-domain loss, and the critical replay
    ratio for the ``cpt`` stage's token budget, written to ``data/cmr/replay.yaml`` (used when
    ``cpt.replay_from_cmr`` is set)."""

    ratios: list[float] = Field(
        default_factory=lambda: [0.1, 0.3, 0.6],
        min_length=2,
        description="replay ratios r (share of old-domain windows) in (0, 1)",
    )
    steps: list[int] = Field(
        default_factory=lambda: [8, 24], min_length=2, description="CPT steps per grid run"
    )
    eval_batches: int = Field(4, ge=1, description="old-domain validation batches scoring each run")
    tolerance: float = Field(
        0.02, ge=0, description="accepted relative rise of the old-domain loss over the parent's"
    )
    budget_steps: int | None = Field(
        None, ge=1, description="CPT steps of the budget; None = cpt.train.max_steps"
    )

    @model_validator(mode="after")
    def _grid(self) -> CmrConfig:
        if any(not 0 < r < 1 for r in self.ratios) or len(set(self.ratios)) < 2:
            raise ValueError(f"ratios: need at least two distinct values in (0, 1); got {self.ratios}")
        if any(s < 1 for s in self.steps) or len(set(self.steps)) < 2:
            raise ValueError(f"steps: need at least two distinct positive step counts; got {self.steps}")
        if len(self.ratios) * len(self.steps) < 6:
            raise ValueError("the grid needs at least 6 points to fit the law's 5 parameters")
        return self


class ParetoConfig(Section):
    """``tune.method: pareto`` (:mod:`lmpipe.mixing.pareto`): two objectives, the new domains' loss (``tune.targets``)
    and the old domains' loss (``old``), searched with Optuna's multi-objective TPE or NSGA-II."""

    old: list[str] = Field(
        default_factory=lambda: ["prose", "code"],
        min_length=1,
        description="domains whose held-out bits/byte is the second objective (forgetting)",
    )
    sampler: Literal["tpe", "nsga2"] = "tpe"
    population: int = Field(8, ge=2, description="NSGA-II population size")
