"""Training throughput: the Lightning path of `pretrain` vs a plain PyTorch loop, same model/batch/precision.

Both train the same freshly initialised model (params.yaml's `model`, seeded identically) on the same random
token batches with the same AdamW groups, LR schedule and gradient clipping, one after the other, in
alternating rounds (the machine is shared: each round's tokens/s is kept, and the median and spread reported). The Lightning side is what
the stage runs: ``CausalLMModule`` + ``TokenDataModule`` + the step hooks, throughput callback and DVCLive
logger. MFU = model FLOPs/s (``lmpipe.model.flops_per_token``) over the peak: a GPU's spec sheet, or on CPU a
measured fp32 GEMM with the same thread count.

    python bench/train_throughput.py [--steps 20] [--threads 1] [--precision 32-true]

JSON goes to bench/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
from _common import REPEATS, stat, table, write_result  # noqa: E402

from lmpipe.config import load_params  # noqa: E402
from lmpipe.model import build_model, flops_per_token, n_params  # noqa: E402
from lmpipe.schedules import lr_lambda  # noqa: E402
from lmpipe.training.callbacks import StepHooks, Throughput, peak_flops  # noqa: E402
from lmpipe.training.config import TrainConfig  # noqa: E402
from lmpipe.training.data import TokenDataModule  # noqa: E402
from lmpipe.training.module import CausalLMModule  # noqa: E402
from lmpipe.training.resume import dvclive_logger  # noqa: E402
from lmpipe.training.trainer import build_trainer  # noqa: E402

VOCAB = 8192  # the demo tokenizer's size (tokenize.vocab_size)


class RandomWindows:
    """Uniform random windows from a seeded generator: the same stream for both sides, no I/O."""

    def __init__(self, seq_len: int, seed: int) -> None:
        self.seq_len, self.rng = seq_len, np.random.default_rng(seed)

    def __iter__(self):
        while True:
            yield self.rng.integers(0, VOCAB, self.seq_len + 1)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


def plain_loop(cfg: TrainConfig, model_cfg, steps: int, warmup: int) -> float:
    """Tokens/s of a hand-written loop over the steps after ``warmup``."""
    torch.manual_seed(0)
    model = build_model(model_cfg, VOCAB)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=cfg.betas,
        eps=cfg.eps,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.schedule, cfg.max_steps))
    windows = iter(RandomWindows(cfg.seq_len, 0))
    dtype = torch.bfloat16 if "bf16" in cfg.precision else None
    for step in range(steps):
        if step == warmup:
            start = time.perf_counter()
        for _ in range(cfg.grad_accum):
            block = torch.from_numpy(
                np.stack([next(windows) for _ in range(cfg.batch_size)]).astype(np.int64)
            )
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                logits = model(input_ids=block[:, :-1], use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(
                logits.float().view(-1, logits.size(-1)), block[:, 1:].reshape(-1)
            )
            (loss / cfg.grad_accum).backward()
        loss.item()  # the Lightning side logs the loss every step, which syncs the same way
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return (steps - warmup) * cfg.batch_size * cfg.seq_len * cfg.grad_accum / (time.perf_counter() - start)


class StepTimes(__import__("lightning").Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, *args) -> None:
        self.times.append(time.perf_counter())


def lightning_path(cfg: TrainConfig, model_cfg, steps: int, warmup: int, log_dir: Path) -> float:
    torch.manual_seed(0)
    model = build_model(model_cfg, VOCAB)
    dm = TokenDataModule(lambda split: RandomWindows(cfg.seq_len, 0), cfg.batch_size, cfg.val_batches)
    module = CausalLMModule(model, cfg)
    times = StepTimes()
    hooks = StepHooks(dm, log_dir / "ckpt.ckpt", val_every=10**9, ckpt_every=10**9)
    trainer = None
    logger = dvclive_logger(log_dir, False, lambda: trainer.global_step)
    trainer = build_trainer(
        cfg.model_copy(update={"max_steps": steps}),
        model,
        logger,
        [
            hooks,
            Throughput(
                cfg.batch_size * cfg.seq_len * cfg.grad_accum, flops_per_token(model.config, cfg.seq_len)
            ),
            times,
        ],
        progress=False,
    )
    trainer.fit(module, datamodule=dm)
    t = times.times[warmup * cfg.grad_accum - 1 :: cfg.grad_accum]
    return (len(t) - 1) * cfg.batch_size * cfg.seq_len * cfg.grad_accum / (t[-1] - t[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    params = load_params(ROOT / "params.yaml")
    cfg = params.train.model_copy(update={"precision": args.precision, "threads": args.threads})
    model_cfg = params.model
    results: dict[str, list[float]] = {"plain_pytorch": [], "lightning": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(REPEATS):
            results["plain_pytorch"].append(plain_loop(cfg, model_cfg, args.steps, args.warmup))
            results["lightning"].append(
                lightning_path(cfg, model_cfg, args.steps, args.warmup, Path(tmp) / f"l{r}")
            )
            print(
                f"round {r}: plain {results['plain_pytorch'][-1]:.0f} tok/s, "
                f"lightning {results['lightning'][-1]:.0f} tok/s",
                flush=True,
            )

    config = build_model(model_cfg, VOCAB).config
    fpt = flops_per_token(config, cfg.seq_len)
    peak, source = peak_flops(torch.device("cpu"), args.precision)
    labels = {
        "plain_pytorch": "plain PyTorch loop",
        "lightning": "lmpipe Lightning Trainer (+ DVCLive logging)",
    }
    rows = {
        labels[k]: {"tokens_per_s": stat(v, 1), "mfu": stat([x * fpt / peak for x in v], 4)}
        for k, v in results.items()
    }
    write_result(
        "train_throughput",
        input={
            "model": {**model_cfg.model_dump(), "vocab": VOCAB, "params": n_params(config)},
            "batch_size": cfg.batch_size,
            "seq_len": cfg.seq_len,
            "grad_accum": cfg.grad_accum,
            "precision": args.precision,
            "steps_timed": args.steps - args.warmup,
            "threads": args.threads,
            "device": f"CPU ({platform.processor() or platform.machine()})",
        },
        tables=[
            table(
                "training step throughput, same model, batches and optimizer",
                "tokens_per_s",
                rows,
                ours=[labels["lightning"]],
                peers=[labels["plain_pytorch"]],
            )
        ],
        checks={
            "gpu_available": torch.cuda.is_available(),
            "flops_per_token": fpt,
            "peak_flops": peak,
            "peak_source": source,
        },
        notes=[
            "MFU on CPU is against a measured fp32 GEMM peak with the same thread count; no GPU figure here."
        ],
    )


if __name__ == "__main__":
    main()
