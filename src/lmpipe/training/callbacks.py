"""Callbacks of a training run: throughput (tokens/s, MFU) and the per-optimizer-step validation (mixed and per
domain), the rolling checkpoint and the models kept at chosen steps."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch

if TYPE_CHECKING:
    from lmpipe.training.data import TokenDataModule
    from lmpipe.training.module import CausalLMModule


def measured_matmul_flops(n: int = 1024, seconds: float = 0.3) -> float:
    """Sustained fp32 GEMM FLOP/s on this CPU with the current thread count: the 'peak' for a CPU MFU."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start)


def peak_flops(
    device: torch.device, precision: str, override_tflops: float | None = None
) -> tuple[float, str]:
    """Peak FLOP/s of one device and where the number comes from."""
    if override_tflops:
        return override_tflops * 1e12, "params"
    if device.type == "cuda":
        from lightning.fabric.utilities.throughput import get_available_flops

        dtype = (
            torch.bfloat16 if "bf16" in precision else torch.float16 if "16" in precision else torch.float32
        )
        flops = get_available_flops(device, dtype)
        if flops:
            return float(flops), f"spec sheet of {torch.cuda.get_device_name(device)} ({dtype})"
    return measured_matmul_flops(), "measured fp32 GEMM on this CPU"


class Throughput(L.Callback):
    """Logs tokens/s and MFU, averaged over the last ``window`` optimizer steps."""

    def __init__(self, tokens_per_step: int, flops_per_token: float, window: int = 10) -> None:
        self.tokens_per_step, self.flops_per_token, self.window = tokens_per_step, flops_per_token, window
        self.peak: float | None = None
        self.peak_source = ""
        self.times: list[float] = []
        self.last_step = -1
        self.tokens = 0
        self.seconds = 0.0
        self.summary: dict[str, float] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        precision = str(trainer.precision)
        peak, self.peak_source = peak_flops(
            pl_module.device, precision, getattr(pl_module.cfg, "peak_tflops", None)
        )
        self.peak = peak * trainer.world_size
        self.times = [time.perf_counter()]
        self.last_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.last_step:  # inside an accumulation window
            return
        self.last_step = trainer.global_step
        now = time.perf_counter()
        self.seconds += now - self.times[-1]
        self.tokens += self.tokens_per_step
        self.times = (self.times + [now])[-(self.window + 1) :]
        if len(self.times) > 1:
            tps = self.tokens_per_step * (len(self.times) - 1) / (self.times[-1] - self.times[0])
            mfu = tps * self.flops_per_token / self.peak if self.peak else 0.0
            pl_module.log_dict({"perf/tokens_per_s": tps, "perf/mfu": mfu}, on_step=True)
            self.summary = {"tokens_per_s": tps, "mfu": mfu}


class StepHooks(L.Callback):
    """Validation every ``val_every`` and an (atomic) ``latest.ckpt`` every ``ckpt_every`` optimizer steps, and
    an HF model kept at each of ``keep_steps`` (``<keep_dir>/step-NNNNNN``) for metrics over training time.

    Both run when step N+1 starts rather than inside step N's end hooks: by then step N's metrics are logged,
    so validation (first) and the checkpoint (second) see a finished step, and a run killed right after the
    save resumes with its log complete up to N. Validation is placed by the optimizer step, not by Lightning's
    batch counter, so a resumed run validates at the same steps as an uninterrupted one. The final step has
    no next step: the trainer calls :meth:`validate` and :meth:`keep` itself after ``fit``.

    Validation logs ``val/loss`` (the training mixture's weights over the held-out domains) and, per held-out
    domain, ``val/loss_<domain>`` on a few fixed batches of that domain alone, so a study can see which
    domain a change helps or hurts over time (e.g. the re-warming bump of continual pretraining).
    """

    def __init__(
        self,
        dm: TokenDataModule,
        path: Path,
        val_every: int,
        ckpt_every: int,
        keep_steps: list[int] | None = None,
        keep_dir: Path | None = None,
        export: Callable[[torch.nn.Module, Path], None] | None = None,
    ) -> None:
        self.dm, self.path, self.val_every, self.ckpt_every = dm, path, val_every, ckpt_every
        self.keep_steps, self.keep_dir, self.export = set(keep_steps or ()), keep_dir, export
        self.done_at = -1
        self.last_val: float | None = None
        self.last_domains: dict[str, float] = {}

    def validate(self, trainer: L.Trainer, module: CausalLMModule) -> float:
        self.last_val = module.evaluate(self.dm.validation_set())
        self.last_domains = {d: module.evaluate(b) for d, b in self.dm.domain_validation_sets().items() if b}
        if trainer.logger and trainer.is_global_zero:
            row = {"val/loss": self.last_val, **{f"val/loss_{d}": x for d, x in self.last_domains.items()}}
            trainer.logger.log_metrics(row, step=trainer.global_step, sync=True)
        return self.last_val

    def keep(self, trainer: L.Trainer, module: CausalLMModule) -> Path | None:
        """Export the model as it is after this step when the step is one to keep (rank 0; atomic)."""
        step = trainer.global_step
        if step not in self.keep_steps or self.keep_dir is None or self.export is None:
            return None
        out = self.keep_dir / f"step-{step:06d}"
        if trainer.is_global_zero:
            self.export(module.model, out)
        return out

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.done_at = trainer.global_step  # resuming from N: N was validated and saved before the crash

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == 0 or step == self.done_at:  # not the first micro-batch of a new step
            return
        self.done_at = step
        if step % self.val_every == 0:
            self.validate(trainer, module)
        self.keep(trainer, module)
        if step % self.ckpt_every == 0:
            trainer.save_checkpoint(self.path)
