"""Training with Lightning: a causal LM over the mixture sampler, resumable exactly, exported as an HF model.

Pieces
- :class:`CausalLMModule` (LightningModule): next-token loss, AdamW with decoupled weight decay on matrices only,
  a closed-form LR schedule (:mod:`lmpipe.schedules`) stepped per optimizer step; RNG states in the checkpoint.
- :class:`TokenDataModule` (LightningDataModule): training batches from the mixture sampler; its checkpointed
  state is the sampler position *after the last batch actually trained on* (not after the loader's prefetch),
  so a resumed run draws exactly the batches the interrupted one would have.
- :class:`Throughput` callback: tokens/s and MFU (model FLOPs over the device's peak).
- :func:`train`: builds the ``Trainer`` from :class:`TrainConfig` (CPU by default; GPUs, nodes, DDP/FSDP,
  bf16-mixed, accumulation, clipping, ``torch.compile`` by params), resumes from ``<ckpt_dir>/latest.ckpt`` when
  that checkpoint belongs to the same run, logs through DVCLive, and exports the model with the tokenizer.

Data parallelism without a sharded sampler: every rank runs the same sampler and keeps its slice of each global
batch, so the sampler state is identical on all ranks and the one saved by rank 0 resumes all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from lmpipe.config import MixtureConfig, ModelConfig, TrainConfig
from lmpipe.model import build_model, flops_per_token, load_model, n_params
from lmpipe.safeio import load_checkpoint
from lmpipe.schedules import lr_lambda

if TYPE_CHECKING:
    from lmpipe.mixture import TokenIndex

CKPT_NAME = "latest"  # one rolling checkpoint: <ckpt_dir>/latest.ckpt
RUN_FILE = "run.json"  # fingerprint of the run a checkpoint dir belongs to


class WindowSampler(Protocol):
    """What training needs from a sampler (``lmpipe.mixture.MixtureSampler`` is one): windows of seq_len + 1."""

    def __iter__(self) -> Iterator[np.ndarray]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


SamplerFactory = Callable[[str], WindowSampler]  # split name ("train" | "val") -> a fresh sampler


# -------------------------------------------------------------------------------------------- data
def vocab_and_special_ids(index: TokenIndex, tokenizer_dir: str | Path) -> tuple[int, dict[str, int | None]]:
    """The model's vocab size (the index's or the tokenizer's, whichever is larger) and its special token ids
    for training on ``index`` packed with the tokenizer at ``tokenizer_dir``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return max(index.vocab_size, len(tok)), {"bos": tok.bos_token_id, "eos": index.eos_id, "pad": tok.pad_token_id}


def mixture_samplers(
    tokens_dir: str | Path | TokenIndex, mixture: MixtureConfig, seq_len: int, seed: int
) -> SamplerFactory:
    """Samplers over ``data/tokens``: the configured mixture for training; for validation the same weights
    over the held-out domains big enough for one window (small domains may have no held-out window at all).
    ``tokens_dir`` may also be a ready ``TokenIndex`` (e.g. ``TokenIndex.merge`` of several directories)."""
    from lmpipe.mixture import MixtureSampler, TokenIndex

    index = tokens_dir if isinstance(tokens_dir, TokenIndex) else TokenIndex.load(tokens_dir)

    def make(split: str) -> WindowSampler:
        if split == "train":
            return MixtureSampler.from_config(index, mixture, seq_len, seed, "train")
        held = {d for d in index.domains(split) if index.tokens(d, split) > seq_len}
        weights = {d: w for d, w in mixture.weights.items() if d in held and w > 0}
        if not weights:
            raise ValueError(
                f"no weighted domain has a {split} window of {seq_len + 1} tokens in {tokens_dir}"
            )
        return MixtureSampler(index, weights, seq_len, seed, split)

    return make


class GlobalBatches(IterableDataset):
    """(x, y) micro-batches for one rank, cut from global batches of one shared sampler.

    Remembers the sampler state after each of the last few batches it produced, keyed by the absolute
    number of batches produced, so the state after batch *n* can be checkpointed while the loader has already
    prefetched batch *n + 1*.
    """

    KEEP = 16  # the loader runs at most a couple of batches ahead of training

    def __init__(
        self,
        make_sampler: SamplerFactory,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        resume: dict[str, Any] | None = None,
        split: str = "train",
    ) -> None:
        self.make_sampler, self.split = make_sampler, split
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.resume = resume
        self.states: OrderedDict[int, dict[str, Any]] = OrderedDict()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sampler = self.make_sampler(self.split)
        produced = 0
        if self.resume is not None:
            sampler.load_state_dict(self.resume["sampler"])
            produced = self.resume["batches"]
        self._remember(produced, sampler)
        windows = iter(sampler)
        n_global = self.batch_size * self.world_size
        while True:
            rows = [next(windows, None) for _ in range(n_global)]
            if rows[-1] is None:  # a finite sampler ran dry: the epoch ends here
                return
            block = torch.from_numpy(np.stack(rows[self.rank :: self.world_size]).astype(np.int64))
            produced += 1
            self._remember(produced, sampler)
            yield block[:, :-1], block[:, 1:]

    def _remember(self, produced: int, sampler: WindowSampler) -> None:
        state = {"batches": produced, "sampler": sampler.state_dict()}
        if hasattr(sampler, "epochs_consumed"):
            state["epochs"] = sampler.epochs_consumed()
        self.states[produced] = state
        while len(self.states) > self.KEEP:
            self.states.popitem(last=False)

    def state_after(self, batches: int) -> dict[str, Any]:
        if batches not in self.states:
            raise RuntimeError(f"sampler state after batch {batches} is gone (have {list(self.states)})")
        return self.states[batches]


class TokenDataModule(L.LightningDataModule):
    def __init__(self, make_sampler: SamplerFactory, batch_size: int, val_batches: int) -> None:
        super().__init__()
        self.make_sampler = make_sampler
        self.batch_size, self.val_batches = batch_size, val_batches
        self.train_batches: GlobalBatches | None = None
        self._resume: dict[str, Any] | None = None
        self._val: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _rank(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        self.train_batches = GlobalBatches(self.make_sampler, self.batch_size, rank, world, self._resume)
        return DataLoader(self.train_batches, batch_size=None, num_workers=0)

    def validation_set(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A fixed held-out set: the first val_batches global batches of a fresh val sampler, drawn once."""
        if self._val is None:
            rank, world = self._rank()
            it = iter(GlobalBatches(self.make_sampler, self.batch_size, rank, world, split="val"))
            self._val = [b for _, b in zip(range(self.val_batches), it, strict=False)]
            if not self._val:
                raise ValueError("the validation split yielded no full batch (too little held-out data?)")
        return self._val

    def consumed_batches(self) -> int:
        # Checkpoints are taken on optimizer-step boundaries: steps × micro-batches per step.
        return self.trainer.global_step * self.trainer.accumulate_grad_batches

    def state_dict(self) -> dict[str, Any]:
        if self.train_batches is None or self.trainer is None:
            return dict(self._resume or {})
        return self.train_batches.state_after(self.consumed_batches())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = state or None


# ------------------------------------------------------------------------------------------- model
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
            self.log("train/loss", self._window_loss / self.cfg.grad_accum, on_step=True, prog_bar=True)
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


# ---------------------------------------------------------------------------------------- throughput
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


# ---------------------------------------------------------------------------------------- resume
class StepHooks(L.Callback):
    """Validation every ``val_every`` and an (atomic) ``latest.ckpt`` every ``ckpt_every`` optimizer steps.

    Both run when step N+1 starts rather than inside step N's end hooks: by then step N's metrics are logged,
    so validation (first) and the checkpoint (second) see a finished step, and a run killed right after the
    save resumes with its log complete up to N. Validation is placed by the optimizer step, not by Lightning's
    batch counter, so a resumed run validates at the same steps as an uninterrupted one.
    """

    def __init__(self, dm: TokenDataModule, path: Path, val_every: int, ckpt_every: int) -> None:
        self.dm, self.path, self.val_every, self.ckpt_every = dm, path, val_every, ckpt_every
        self.done_at = -1
        self.last_val: float | None = None

    def validate(self, trainer: L.Trainer, module: CausalLMModule) -> float:
        self.last_val = module.evaluate(self.dm.validation_set())
        if trainer.logger and trainer.is_global_zero:
            trainer.logger.log_metrics({"val/loss": self.last_val}, step=trainer.global_step, sync=True)
        return self.last_val

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.done_at = trainer.global_step  # resuming from N: N was validated and saved before the crash

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == 0 or step == self.done_at:  # not the first micro-batch of a new step
            return
        self.done_at = step
        if step % self.val_every == 0:
            self.validate(trainer, module)
        if step % self.ckpt_every == 0:
            trainer.save_checkpoint(self.path)


def run_fingerprint(*parts: Any) -> str:
    """A short hash of everything that makes a checkpoint belong to a run (params, data index)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_checkpoint_dir(ckpt_dir: Path, fingerprint: str) -> Path | None:
    """The checkpoint to resume from, or None. A checkpoint from another run (other params/data) is discarded."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    run_file = ckpt_dir / RUN_FILE
    ckpt = ckpt_dir / f"{CKPT_NAME}.ckpt"
    if run_file.exists() and json.loads(run_file.read_text()).get("fingerprint") == fingerprint:
        return ckpt if ckpt.exists() else None
    for p in ckpt_dir.iterdir():  # stale: params or data changed since it was written
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    run_file.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")
    return None


def dvclive_logger(log_dir: Path, resume: bool, trainer_step: Callable[[], int]) -> Any:
    """DVCLive's Lightning logger, with every row keyed by the optimizer steps completed when it was measured.

    Lightning hands loggers a step that is off by one between training and validation rows (and DVCLive treats
    step 0 as "next"), so the trainer's ``global_step`` is used instead. Rows are appended to the .tsv files at
    once; the summary (metrics.json) is rewritten with each validation and at the end, not every step (DVCLive's
    Lightning logger decides that by inspecting the call stack, which costs more than a tiny model's step).
    ``dvcyaml=None``: dvc.yaml declares these metrics and plots itself; no DVC experiment is saved from inside a
    pipeline stage.
    """
    from dvclive.fabric import DVCLiveLogger as FabricDVCLiveLogger
    from dvclive.lightning import DVCLiveLogger

    class StepLogger(DVCLiveLogger):
        def log_metrics(self, metrics: Any, step: int | None = None, sync: bool | None = False) -> None:
            metrics = {k: v for k, v in metrics.items() if k != "epoch"}  # the epoch never ends here
            if metrics:
                sync = bool(sync) or any(k.startswith("val/") for k in metrics)
                FabricDVCLiveLogger.log_metrics(self, metrics, max(trainer_step(), 1), sync)

    return StepLogger(dir=str(log_dir), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)


def rewind_dvclive(log_dir: Path, step: int, finished: bool = False) -> None:
    """Drop DVCLive rows logged after ``step`` (the resumed checkpoint): the resumed run logs them again.

    ``finished``: the checkpoint is the run's last, whose final validation the rerun repeats, so drop it too.
    """
    for tsv in (log_dir / "plots" / "metrics").rglob("*.tsv"):
        last = step - 1 if finished and tsv.parent.name == "val" else step
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        header, rows = lines[0], lines[1:]
        col = header.split("\t").index("step")
        kept = [r for r in rows if int(r.split("\t")[col]) <= last]
        tsv.write_text("\n".join([header, *kept]) + "\n")


# ------------------------------------------------------------------------------------------ export
def export_hf(model: torch.nn.Module, out_dir: Path, tokenizer_dir: str | Path | None) -> None:
    """safetensors + config.json + generation_config.json + the tokenizer files: an ``AutoModelForCausalLM`` dir."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer_dir is not None:
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


def _strategy(cfg: TrainConfig, model: torch.nn.Module) -> Any:
    if cfg.strategy == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        # One FSDP unit per decoder layer; checkpoints hold the full (gathered) state dict for export.
        layer_cls = {type(m) for m in model.modules() if type(m).__name__.endswith("DecoderLayer")}
        return FSDPStrategy(auto_wrap_policy=layer_cls, state_dict_type="full")
    if cfg.strategy == "ddp":
        return "ddp"
    return "auto"


def build_trainer(
    cfg: TrainConfig, model: torch.nn.Module, logger: Any, callbacks: list[L.Callback], progress: bool = True
) -> L.Trainer:
    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=_strategy(cfg, model),
        precision=cfg.precision,
        max_steps=cfg.max_steps,
        max_epochs=-1,
        accumulate_grad_batches=cfg.grad_accum,
        gradient_clip_val=cfg.grad_clip or None,
        limit_val_batches=0,  # StepHooks validates by optimizer step
        num_sanity_val_steps=0,
        log_every_n_steps=cfg.log_every,
        logger=logger,
        callbacks=callbacks,
        use_distributed_sampler=False,  # every rank slices the shared sampler's global batches itself
        enable_model_summary=False,
        enable_progress_bar=progress,
        enable_checkpointing=False,  # StepHooks does it
        deterministic=False,
    )


def train(
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    make_sampler: SamplerFactory,
    *,
    vocab_size: int,
    ckpt_dir: str | Path,
    log_dir: str | Path | None,
    export_dir: str | Path | None,
    tokenizer_dir: str | Path | None = None,
    special_ids: dict[str, int | None] | None = None,
    seed: int = 0,
    fingerprint: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) one run; returns a metrics dict. ``fingerprint``: anything identifying the run's inputs."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.set_float32_matmul_precision("high")  # TF32 on GPUs that have it; no effect on CPU
    L.seed_everything(seed, workers=True, verbose=False)
    ids = special_ids or {}
    if cfg.init_from:
        model = load_model(cfg.init_from, model_cfg.attn_impl)
        model.train()  # from_pretrained returns eval mode; Lightning keeps whatever mode it is given
        if model.config.vocab_size < vocab_size:
            raise ValueError(
                f"init_from model has vocab {model.config.vocab_size} < tokenizer's {vocab_size}"
            )
    else:
        model = build_model(model_cfg, vocab_size, ids.get("bos"), ids.get("eos"), ids.get("pad"))
    ctx = getattr(model.config, "max_position_embeddings", cfg.seq_len)
    if cfg.seq_len > ctx:
        raise ValueError(f"train.seq_len ({cfg.seq_len}) exceeds the model's context ({ctx})")

    ckpt_dir = Path(ckpt_dir)
    fp = run_fingerprint(model_cfg.model_dump(), cfg.model_dump(), vocab_size, seed, fingerprint)
    resume_from = prepare_checkpoint_dir(ckpt_dir, fp)
    # weights_only: a checkpoint from a shared remote must not run code (UnsafeFileError names it)
    resume_step = int(load_checkpoint(resume_from)["global_step"]) if resume_from else 0

    logger: Any = False
    if log_dir is not None:
        log_dir = Path(log_dir)
        if resume_from:
            rewind_dvclive(log_dir, resume_step, finished=resume_step >= cfg.max_steps)
        logger = dvclive_logger(log_dir, resume_from is not None, lambda: trainer.global_step)

    flops = flops_per_token(model.config, cfg.seq_len)
    dm = TokenDataModule(make_sampler, cfg.batch_size, cfg.val_batches)
    module = CausalLMModule(model, cfg)
    throughput = Throughput(0, flops)
    hooks = StepHooks(dm, ckpt_dir / f"{CKPT_NAME}.ckpt", cfg.val_every, cfg.ckpt_every)
    trainer = build_trainer(cfg, model, logger, [hooks, throughput], progress)
    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * trainer.world_size
    throughput.tokens_per_step = tokens_per_step

    start = time.perf_counter()
    # weights_only=True: RNG and sampler states are stored as plain types and tensors (see _rng_states)
    trainer.fit(
        module, datamodule=dm, ckpt_path=str(resume_from) if resume_from else None, weights_only=True
    )
    seconds = time.perf_counter() - start
    trainer.save_checkpoint(ckpt_dir / f"{CKPT_NAME}.ckpt")  # the finished state: a rerun only re-exports
    train_loss = float(trainer.callback_metrics.get("train/loss", float("nan")))
    val = hooks.validate(trainer, module)  # the final model, logged at the last step
    if logger:
        logger.finalize("success")

    if export_dir is not None and trainer.is_global_zero:
        export = module.model
        if cfg.strategy == "fsdp":  # gather the full weights from the checkpoint Lightning just wrote
            state = load_checkpoint(ckpt_dir / f"{CKPT_NAME}.ckpt")
            export = (
                build_model(model_cfg, vocab_size, ids.get("bos"), ids.get("eos"), ids.get("pad"))
                if not cfg.init_from
                else load_model(cfg.init_from)
            )
            export.load_state_dict({k.removeprefix("model."): v for k, v in state["state_dict"].items()})
        export_hf(export, Path(export_dir), tokenizer_dir)

    train_state = dm.state_dict()
    counts = n_params(model.config)
    return {
        "steps": trainer.global_step,
        "resumed_from_step": resume_step,
        "tokens": trainer.global_step * tokens_per_step,
        "train_loss": train_loss,
        "val_loss": float(val),
        "params": counts["total"],
        "params_non_embedding": counts["non_embedding"],
        "flops_per_token": flops,
        "tokens_per_s": round(throughput.tokens / throughput.seconds, 1) if throughput.seconds else None,
        "mfu": throughput.summary.get("mfu"),
        "mfu_peak_source": throughput.peak_source,
        "train_seconds": round(seconds, 2),
        "epochs_consumed": train_state.get("epochs"),
        "world_size": trainer.world_size,
    }
