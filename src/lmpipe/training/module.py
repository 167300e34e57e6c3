"""The LightningModule: next-token loss, AdamW (weight decay on matrices only), the LR schedule stepped per
optimizer step, and the RNG states carried in the checkpoint."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from lmpipe.schedules import lr_lambda
from lmpipe.training.config import TrainConfig


def _rng_states() -> dict[str, Any]:
    # Plain types and tensors only, so the checkpoint loads with weights_only=True: numpy's MT19937 key
    # array becomes a list of ints (Python's state is already a tuple of ints).
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": (kind, key.tolist(), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    kind, key, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class CausalLMModule(L.LightningModule):
    def __init__(self, model: torch.nn.Module, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self._window_loss = 0.0
        self._micro = 0

    def configure_model(self) -> None:
        if self.cfg.compile:
            self.model.compile()  # in place: parameter names (and so checkpoints) stay unchanged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=x, use_cache=False).logits

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        # Log the mean loss of each optimizer step (all its micro-batches), once per step.
        self._window_loss += loss.detach().item()
        self._micro += 1
        if self._micro % self.cfg.grad_accum == 0:
            # sync_dist: under DDP the logged loss is the mean over all ranks, i.e. the loss of the global batch
            # (each rank trains on its slice of it), so the curve does not depend on the number of processes.
            loss_mean = self._window_loss / self.cfg.grad_accum
            self.log("train/loss", loss_mean, on_step=True, prog_bar=True, sync_dist=True)
            self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True)
            self._window_loss = 0.0
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # the norm before clipping (this rank's shard under FSDP): spikes are the early sign of instability
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            self.log("train/grad_norm", torch.nn.utils.get_total_norm(grads))

    @torch.no_grad()
    def evaluate(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """Mean loss over ``batches`` (this rank's share; averaged over ranks), in the trainer's precision."""
        was_training = self.training
        self.eval()
        total = torch.zeros((), device=self.device)
        with self.trainer.strategy.precision_plugin.forward_context():
            for x, y in batches:
                total += self.loss((x.to(self.device), y.to(self.device)))
        self.train(was_training)
        return float(self.trainer.strategy.reduce(total / len(batches), reduce_op="mean"))

    def configure_optimizers(self) -> dict[str, Any]:
        # Weight decay on matrices (and embeddings) only; norms and biases are left alone.
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(groups, lr=self.cfg.lr, betas=self.cfg.betas, eps=self.cfg.eps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(self.cfg.schedule, self.cfg.max_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = _rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            _set_rng_states(checkpoint["rng_states"])
