"""Sections of the training mixture and its search: ``mixture`` (domain weights, sampler, online reweighting),
``tune`` (the Optuna study of :mod:`lmpipe.tuning`, its RegMix surrogate, pruning and Pareto search) and
``cmr`` (the CPT replay-ratio grid)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lmpipe.evaluation.config import HeldoutConfig
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


class MixtureConfig(Section):
    """Domain weights of the training mixture (normalised at use; zero drops a domain)."""

    weights: dict[str, float] = Field(
        default_factory=lambda: {"prose": 0.3, "code": 0.2, "math": 0.2, "fiction": 0.3}
    )
    missing: Literal["error", "ignore"] = Field(
        "error", description="a weighted domain absent from the token index: fail, or drop it"
    )
    from_tune: bool = Field(
        False,
        description="train `pretrain` on the tune stage's winner (data/tune/best_mixture.yaml): its weights "
        "replace `weights` (pretrain always depends on that file; with the flag off it is not read)",
    )
    sampler: Literal["weighted", "rs2"] = Field(
        "weighted",
        description="weighted: draw domains by `weights`; rs2: the RS2 baseline (every window of the "
        "weighted domains pooled, a fresh random order each epoch, no repeats within one)",
    )
    reweight: ReweightConfig = ReweightConfig()

    @model_validator(mode="after")
    def _rs2(self) -> MixtureConfig:
        if self.sampler == "rs2" and self.reweight.enabled:
            raise ValueError("reweight needs sampler: weighted (RS2 has no domain weights to update)")
        return self

    @model_validator(mode="after")
    def _weights(self) -> MixtureConfig:
        bad = {k: v for k, v in self.weights.items() if not v >= 0}
        if bad:
            raise ValueError(f"weights must be non-negative; got {bad}")
        if not self.weights or sum(self.weights.values()) <= 0:
            raise ValueError("at least one domain needs a positive weight")
        return self


Range = tuple[float, float]


class SurrogateConfig(Section):
    """RegMix-style search (``tune.method: surrogate``, :mod:`lmpipe.surrogate`): proxy runs on Dirichlet draws,
    a gradient-boosted regressor from weights to the objective, its minimum over the simplex checked by a real run."""

    n_runs: int = Field(
        24, ge=4, description="proxy runs on mixtures drawn from Dirichlet(alpha) over the domains"
    )
    alpha: float = Field(
        1.0, gt=0, description="Dirichlet concentration of the draws (1 = uniform on the simplex)"
    )
    holdout: float = Field(
        0.25, gt=0, lt=1, description="share of proxy runs held out to measure rank correlation"
    )
    candidates: int = Field(20_000, ge=100, description="simplex points (uniform) scored on the surrogate")
    top_k: int = Field(1000, ge=1, description="best predicted points averaged into the proposal (as RegMix)")
    n_estimators: int = Field(300, ge=1)
    max_depth: int = Field(3, ge=1)
    learning_rate: float = Field(0.05, gt=0, le=1)


class PruningConfig(Section):
    """Stop hopeless proxy runs early: every ``every`` steps a trial reports its mean loss on the target domains'
    validation windows; Optuna's median pruner stops it when it is worse than the median of earlier trials there."""

    enabled: bool = False
    every: int = Field(5, ge=1, description="optimizer steps between intermediate target-loss reports")
    n_startup_trials: int = Field(2, ge=0, description="trials that run to the end before anything is pruned")
    n_warmup_steps: int = Field(0, ge=0, description="no pruning before this step of a trial")
    val_batches: int = Field(2, ge=1, description="target-domain validation batches per report")


class TuneConfig(Section):
    """Optuna search over mixture weights (and optionally the LR) by short training runs (``lmpipe.tuning``).

    Search space: one float per domain, drawn in its ``weights`` range, then divided by their sum (a point on
    the simplex; a domain with range ``[x, x]`` is fixed, ``[0, 0]`` is left out). ``lr``: a number is fixed,
    a ``[low, high]`` pair is searched log-uniformly. Objective: mean held-out bits/byte over ``targets``.
    """

    storage: str = Field(
        "sqlite:///data/tune/optuna.db", description="any Optuna RDB URL (SQLite, Postgres, MySQL)"
    )
    method: Literal["tpe", "surrogate", "pareto"] = Field(
        "tpe",
        description="tpe: Optuna TPE study of n_trials; surrogate: RegMix-style regression (see `surrogate`); "
        "pareto: targets' loss vs old domains' loss, multi-objective (see `pareto`)",
    )
    surrogate: SurrogateConfig = SurrogateConfig()
    pareto: ParetoConfig = ParetoConfig()
    pruning: PruningConfig = PruningConfig()
    study_name: str = Field("mixture", min_length=1)
    n_trials: int = Field(6, ge=1, description="run until the study has this many COMPLETE trials (resumes)")
    max_failed: int = Field(3, ge=0, description="stop this run after this many failed trials")
    seed: int | None = Field(None, ge=0, description="TPE sampler and training seed; None = run.seed")
    n_startup_trials: int = Field(4, ge=0, description="random trials before TPE models the history")
    enqueue_current: bool = Field(True, description="first trial: the current mixture.weights (the baseline)")
    weights: dict[str, Range] = Field(
        default_factory=lambda: {
            "prose": (0.0, 1.0),
            "code": (0.0, 1.0),
            "math": (0.0, 1.0),
            "fiction": (0.0, 1.0),
        },
        description="domain -> [low, high] of its raw weight before normalisation",
    )
    lr: float | Range = Field(3e-3, description="fixed LR, or [low, high] searched log-uniformly")
    targets: list[str] = Field(
        default_factory=lambda: ["prose", "code", "math", "fiction"],
        min_length=1,
        description="held-out domains whose mean bits/byte is minimised",
    )
    steps: int = Field(25, ge=1, description="optimizer steps per trial")
    batch_size: int = Field(4, ge=1)
    seq_len: int = Field(128, ge=2)
    warmup_steps: int = Field(5, ge=0)
    heldout: HeldoutConfig = HeldoutConfig(max_docs_per_domain=20, max_tokens_per_domain=4000)
    batch_tokens: int = Field(2048, ge=16, description="padded tokens per scoring forward pass")
    threads: int = Field(1, ge=1, description="torch threads per trial")
    heartbeat_s: int | None = Field(
        60, ge=1, description="RDB heartbeat: trials of a killed worker become FAIL after 2x this; None = off"
    )

    @model_validator(mode="after")
    def _ranges(self) -> TuneConfig:
        for d, (lo, hi) in self.weights.items():
            if not 0.0 <= lo <= hi:
                raise ValueError(f"weights.{d}: need 0 <= low <= high, got [{lo}, {hi}]")
        if not any(hi > 0 for _, hi in self.weights.values()):
            raise ValueError("weights: at least one domain needs a positive upper bound")
        if isinstance(self.lr, tuple) and not 0 < self.lr[0] <= self.lr[1]:
            raise ValueError(f"lr: need 0 < low <= high, got {list(self.lr)}")
        if isinstance(self.lr, float) and self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.warmup_steps >= self.steps:  # fail at validation, not once per trial
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below steps ({self.steps})")
        return self
