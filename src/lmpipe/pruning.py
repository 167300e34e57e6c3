"""Pruning of proxy runs: a Lightning callback that reports the target-domain loss to an Optuna trial.

The tune objective scores a trial by held-out bits/byte on ``tune.targets``, so the intermediate value is the
loss on the same domains (validation windows of ``data/tokens``), not on the trial's own mixture: a run that
trains on the wrong domains is recognisable early only by the domains it is meant to be good at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import optuna
import torch

from lmpipe.mixing.config import PruningConfig


def target_batches(tokens_dir: str | Path, targets: list[str], seq_len: int, batch_size: int, n: int,
                   seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` fixed validation batches drawn evenly from the target domains that have a validation window."""
    from lmpipe.mixture import MixtureSampler, TokenIndex
    from lmpipe.training.data import GlobalBatches

    index = TokenIndex.load(tokens_dir)
    weights = {d: 1.0 for d in targets if d in index.domains("val") and index.tokens(d, "val") > seq_len}
    if not weights:
        raise ValueError(f"pruning: no target domain of {targets} has a validation window of {seq_len + 1} tokens")
    it = iter(GlobalBatches(lambda split: MixtureSampler(index, weights, seq_len, seed, split), batch_size, 0, 1,
                            split="val"))
    return [b for _, b in zip(range(n), it, strict=False)]


def make_pruner(cfg: PruningConfig) -> optuna.pruners.BasePruner:
    if not cfg.enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps)


class ReportTargetLoss(L.Callback):
    """Every ``every`` optimizer steps: ``trial.report(target loss, step)``; raises TrialPruned when told to."""

    def __init__(self, trial: optuna.Trial, batches: list[tuple[torch.Tensor, torch.Tensor]], every: int) -> None:
        self.trial, self.batches, self.every = trial, batches, every
        self.reported: dict[int, float] = {}

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        step = trainer.global_step  # step N+1 starts: step N is finished (as StepHooks validates)
        if step == 0 or step % self.every or step in self.reported:
            return
        loss = module.evaluate(self.batches)
        self.reported[step] = loss
        self.trial.report(loss, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"target loss {loss:.4f} at step {step} is worse than the median")
