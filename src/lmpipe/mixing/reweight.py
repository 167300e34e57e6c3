"""Online domain reweighting during training (DoReMi-style), deterministic and exactly resumable.

Every ``every`` optimizer steps the callback scores the model on fixed held-out batches of each domain, takes
the excess loss over a reference ``λ_d = max(L_d - ref_d, 0)`` (the reference: given per-domain losses, or a
reference model's losses on the same batches, as DoReMi's reference model), and moves the weights by one
exponentiated-gradient step, then mixes in uniform (Xie et al., 2023, Alg. 1):

    α'_d = α_d · exp(η λ_d) / Σ_e α_e · exp(η λ_e),        α = (1 - c) α' + c / k

Unlike DoReMi (which reweights the loss of a uniform stream) the new weights drive the sampler: they enter a
:class:`lmpipe.mixture.WeightSchedule` from a step the data loader has not drawn yet (two micro-batches ahead:
one is in training, Lightning prefetches the next), so which windows a step sees never depends on timing.
The callback runs before ``StepHooks`` at each step start, so the update at step N is in the checkpoint taken at
N; its state (weights, history, schedule) is part of that checkpoint, and a run killed with ``kill -9`` resumes
bit-identically. Weights and losses are logged per update (``mixture/weight/<domain>``, DVCLive) and plotted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch

from lmpipe.mixing.config import ReweightConfig
from lmpipe.mixture import WeightSchedule

if TYPE_CHECKING:
    from lmpipe.mixture import TokenIndex

Batch = tuple[torch.Tensor, torch.Tensor]
LAG = 2  # micro-batches between the update and the first one drawn with it: the one training + one prefetched


def eg_step(
    weights: dict[str, float], excess: dict[str, float], step_size: float, smoothing: float
) -> dict[str, float]:
    """One exponentiated-gradient step on the simplex, then the uniform mix (in log space: no overflow)."""
    domains = sorted(weights)
    logits = np.array([math.log(weights[d]) + step_size * excess[d] for d in domains])
    p = np.exp(logits - logits.max())
    p = (1 - smoothing) * p / p.sum() + smoothing / len(domains)
    return {d: float(v) for d, v in zip(domains, p, strict=True)}


def domain_batches(
    index: TokenIndex,
    domains: list[str],
    seq_len: int,
    batch_size: int,
    n: int,
    seed: int,
    split: str = "val",
) -> dict[str, list[Batch]]:
    """``n`` fixed batches of each domain (the same on every run with this seed)."""
    from lmpipe.mixture import MixtureSampler
    from lmpipe.training.data import GlobalBatches

    out = {}
    for d in domains:
        if d not in index.domains(split) or index.tokens(d, split) <= seq_len:
            raise ValueError(
                f"reweight: domain {d!r} has no {split} window of {seq_len + 1} tokens "
                f"(mixture.reweight.split: train uses training windows)"
            )
        it = iter(
            GlobalBatches(
                lambda s, d=d: MixtureSampler(index, {d: 1.0}, seq_len, seed, s), batch_size, split=split
            )
        )
        out[d] = [b for _, b in zip(range(n), it, strict=False)]
    return out


@torch.no_grad()
def model_losses(model_dir: str | Path, batches: dict[str, list[Batch]]) -> dict[str, float]:
    """Mean next-token loss of an HF model on each domain's batches (the DoReMi reference)."""
    from lmpipe.model import load_model

    model = load_model(str(model_dir)).eval()
    out = {}
    for d, bs in batches.items():
        losses = [
            torch.nn.functional.cross_entropy(
                model(input_ids=x, use_cache=False).logits.float().flatten(0, 1), y.reshape(-1)
            )
            for x, y in bs
        ]
        out[d] = float(torch.stack(losses).mean())
    return out


class DomainReweighting(L.Callback):
    """Updates the training sampler's domain weights from per-domain held-out losses (see the module doc)."""

    def __init__(
        self,
        cfg: ReweightConfig,
        batches: dict[str, list[Batch]],
        initial: dict[str, float],
        batch_size: int,
        reference: dict[str, float] | None = None,
    ) -> None:
        self.cfg, self.batches, self.batch_size = cfg, batches, batch_size
        self.windows_per_batch = batch_size  # x world size, known at setup
        self.reference = {d: float((reference or {}).get(d, 0.0)) for d in batches}
        total = sum(initial[d] for d in batches)
        self.weights = {d: initial[d] / total for d in sorted(batches)}
        self.schedule = WeightSchedule()
        self.last = 0  # optimizer step of the last update
        self.history: list[dict[str, Any]] = [{"step": 0, "weights": dict(self.weights)}]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # before the train loader exists: its sampler draws from this schedule (restored in place on resume)
        trainer.datamodule.weight_schedule = self.schedule
        self.windows_per_batch = self.batch_size * trainer.world_size  # the sampler walks global batches

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        step = trainer.global_step
        if step == 0 or step % self.cfg.every or step <= self.last:
            return
        losses = {d: module.evaluate(b) for d, b in self.batches.items()}
        excess = {d: max(losses[d] - self.reference[d], 0.0) for d in losses}
        self.weights = eg_step(self.weights, excess, self.cfg.step_size, self.cfg.smoothing)
        first_batch = step * trainer.accumulate_grad_batches + LAG
        self.schedule.add(first_batch * self.windows_per_batch, self.weights)
        self.last = step
        self.history.append({"step": step, "weights": dict(self.weights), "loss": losses, "excess": excess})
        if trainer.logger and trainer.is_global_zero:
            row = {f"mixture/weight/{d}": w for d, w in self.weights.items()}
            row |= {f"mixture/loss/{d}": v for d, v in losses.items()}
            trainer.logger.log_metrics(row, step=step)

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": dict(self.weights),
            "last": self.last,
            "history": self.history,
            "schedule": self.schedule.as_list(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights, self.last, self.history = (
            dict(state["weights"]),
            int(state["last"]),
            list(state["history"]),
        )
        self.schedule.replace([(s, w) for s, w in state["schedule"]])

    def summary(self) -> dict[str, Any]:
        return {
            "updates": len(self.history) - 1,
            "final_weights": {d: round(w, 6) for d, w in self.weights.items()},
            "mean_weights": {
                d: round(float(np.mean([h["weights"][d] for h in self.history])), 6) for d in self.weights
            },
        }


def plot_weights(history: list[dict[str, Any]], path: str | Path) -> str:
    """Weights over optimizer steps, one line per domain (Agg PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    steps = [h["step"] for h in history]
    for d in sorted(history[0]["weights"]):
        ax.step(steps, [h["weights"][d] for h in history], where="post", label=d)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("domain weight")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def build(
    cfg: ReweightConfig,
    index: TokenIndex,
    weights: dict[str, float],
    seq_len: int,
    batch_size: int,
    seed: int,
) -> DomainReweighting:
    """The callback for a run on ``index`` starting from ``weights`` (normalised; zero-weight domains stay out)."""
    active = sorted(d for d, w in weights.items() if w > 0)
    batches = domain_batches(index, active, seq_len, batch_size, cfg.batches, seed, cfg.split)
    reference = model_losses(cfg.reference_model, batches) if cfg.reference_model else cfg.reference
    return DomainReweighting(cfg, batches, weights, batch_size, reference)
