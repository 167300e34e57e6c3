"""The training driver: build the Lightning ``Trainer`` from :class:`TrainConfig`, train or resume, export."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lmpipe.model import build_model, flops_per_token, load_model, n_params
from lmpipe.safeio import load_checkpoint
from lmpipe.training.callbacks import StepHooks, Throughput
from lmpipe.training.config import ModelConfig, TrainConfig
from lmpipe.training.data import SamplerFactory, TokenDataModule
from lmpipe.training.module import CausalLMModule
from lmpipe.training.resume import (
    CKPT_NAME,
    KEPT_DIR,
    dvclive_logger,
    prepare_checkpoint_dir,
    rewind_dvclive,
    run_fingerprint,
)


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
    callbacks: list[L.Callback] | None = None,
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
    dm = TokenDataModule(make_sampler, cfg.batch_size, cfg.val_batches, cfg.val_domain_batches)
    module = CausalLMModule(model, cfg)
    throughput = Throughput(0, flops)
    if cfg.keep_steps and cfg.strategy == "fsdp":  # kept models are exported from rank 0's full module
        raise ValueError("train.keep_steps is not supported with strategy 'fsdp'")
    hooks = StepHooks(dm, ckpt_dir / f"{CKPT_NAME}.ckpt", cfg.val_every, cfg.ckpt_every, cfg.keep_steps,
                      ckpt_dir / KEPT_DIR, lambda m, out: export_hf(m, out, tokenizer_dir))
    # extra callbacks run first at each step start: an online reweighting update at step N is then part of the
    # checkpoint StepHooks saves at N (a resumed run neither repeats nor loses it)
    trainer = build_trainer(cfg, model, logger, [*(callbacks or []), hooks, throughput], progress)
    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * trainer.world_size
    throughput.tokens_per_step = tokens_per_step

    start = time.perf_counter()
    # weights_only=True: RNG and sampler states are stored as plain types and tensors (see module._rng_states)
    trainer.fit(
        module, datamodule=dm, ckpt_path=str(resume_from) if resume_from else None, weights_only=True
    )
    seconds = time.perf_counter() - start
    trainer.save_checkpoint(ckpt_dir / f"{CKPT_NAME}.ckpt")  # the finished state: a rerun only re-exports
    train_loss = float(trainer.callback_metrics.get("train/loss", float("nan")))
    val = hooks.validate(trainer, module)  # the final model, logged at the last step
    hooks.keep(trainer, module)
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
        "val_loss_domains": {d: round(x, 6) for d, x in sorted(hooks.last_domains.items())},
        "kept_steps": sorted(p.name for p in (ckpt_dir / KEPT_DIR).glob("step-*") if p.suffix != ".tmp"),
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
