"""What every post-training stage shares around its TRL trainer: loading, arguments, resume, export, curves.

A stage driver (sft, dpo, rlvr) is: :func:`open_model` → build its rows → :func:`fit` with a function that makes
its TRL trainer → its own stats on top of :meth:`Fitted.stats`.

- Checkpoints are HF Trainer ``checkpoint-N`` dirs under the stage's checkpoint dir; a run killed at any point
  (kill -9) resumes from the last one, and the logged curve (restored with the trainer state) continues it.
  A fingerprint of (stage params, base model, data) lives beside them: a changed input never resumes a stale run.
- The final model is written to a temporary dir and renamed, so ``models/<stage>`` is complete or absent.
- Curves go to DVCLive's on-disk layout (``dvclive/<stage>/plots/metrics/train/<metric>.tsv``) for the report.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmpipe.posttrain.chat import ensure_chat_template
from lmpipe.posttrain.config import TrainLoopConfig

FINGERPRINT = "fingerprint.json"


def model_hash(model_dir: str | Path) -> str:
    """Hash of a model dir's weights, config and tokenizer files (what the model *is*)."""
    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(
            f"{d}: not an HF model directory (no config.json); run the stage that writes it"
        )
    h = hashlib.sha256()
    for p in sorted(d.iterdir()):
        if p.is_file() and (
            p.suffix in {".safetensors", ".bin", ".json", ".jinja"} or p.name == "tokenizer.model"
        ):
            h.update(p.name.encode())
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:32]


def data_hash(rows: list[Any]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:32]


def prepare_checkpoints(ckpt_dir: str | Path, fingerprint: dict[str, Any]) -> str | None:
    """The checkpoint to resume from, or None; checkpoints of other inputs are removed first."""
    from transformers.trainer_utils import get_last_checkpoint

    ckpt = Path(ckpt_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    fp = ckpt / FINGERPRINT
    if fp.is_file() and json.loads(fp.read_text()) != fingerprint:
        shutil.rmtree(ckpt)
        ckpt.mkdir(parents=True)
    fp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
    return get_last_checkpoint(str(ckpt))


def score_labelled_only() -> None:
    """Make TRL's fused LM head score only the positions with a label on CPU too (idempotent, process-wide).

    ``trl.trainer.utils`` projects every position through the LM head unless Triton runs the kernel: static tile
    shapes for compiled backends (Neuron). On eager CPU that reason does not hold, and SFT labels only the assistant
    tokens (~30%), so scoring all of them tripled the head's work (the largest cost of an SFT step at vocab 8192).
    The ignored positions' outputs are zeroed either way, so loss, gradients and metrics are the same. TRL has no
    switch for it: we replace the predicate it reads (``_use_triton``, used for this decision only); the kernel
    still runs its torch fallback, chosen by its own module's predicate.
    """
    import trl.trainer.utils as tu
    from trl.kernels import chunked_logprob

    if getattr(tu._use_triton, "lmpipe_compact", False):
        return

    def compact(device: Any) -> bool:
        return device.type == "cpu" or chunked_logprob._use_triton(device)

    compact.lmpipe_compact = True  # type: ignore[attr-defined]
    tu._use_triton = compact


def trainer_args(cls: type, loop: TrainLoopConfig, ckpt_dir: str | Path, seed: int, **extra: Any) -> Any:
    """A TRL config (SFTConfig, DPOConfig, GRPOConfig) with the loop settings and CPU-safe defaults."""
    import torch

    score_labelled_only()

    return cls(
        output_dir=str(ckpt_dir),
        max_steps=loop.max_steps,
        learning_rate=loop.lr,
        warmup_steps=loop.warmup_steps,
        per_device_train_batch_size=loop.batch_size,
        gradient_accumulation_steps=loop.grad_accum,
        weight_decay=loop.weight_decay,
        lr_scheduler_type="linear",
        seed=seed,
        data_seed=seed,
        save_strategy="steps",
        save_steps=loop.save_steps,
        save_total_limit=2,
        logging_steps=loop.logging_steps,
        report_to=[],
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=True,
        save_only_model=False,
        **extra,
    )


def export(model: Any, tok: Any, out_dir: str | Path, extra: dict[str, str] | None = None) -> None:
    """Model + tokenizer (+ ``extra`` text files) to ``out_dir``, complete or absent (written aside, renamed)."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    for name, text in (extra or {}).items():
        (tmp / name).write_text(text)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def write_curves(
    log_history: list[dict[str, Any]], live_dir: str | Path
) -> dict[str, list[tuple[int, float]]]:
    """Every numeric per-step log value as a DVCLive-style TSV (+ ``metrics.json``: the last values)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in log_history:
        if "step" not in row or "train_runtime" in row:
            continue
        for k, v in row.items():
            if k not in ("step", "epoch") and isinstance(v, int | float) and math.isfinite(v):
                curves.setdefault(k, []).append((int(row["step"]), float(v)))
    base = Path(live_dir) / "plots" / "metrics" / "train"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True, exist_ok=True)
    last = {name.replace("/", "_"): pts[-1][1] for name, pts in curves.items()}
    steps = [s for pts in curves.values() for s, _ in pts]
    (Path(live_dir) / "metrics.json").write_text(
        json.dumps({"step": max(steps, default=0), "train": last}, indent=1)
    )
    for name, pts in curves.items():
        path = base / f"{name.replace('/', '_')}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"step\t{name}\n" + "".join(f"{s}\t{v}\n" for s, v in pts))
    return curves


def curve_summary(curves: dict[str, list[tuple[int, float]]], *names: str) -> dict[str, Any]:
    """First and last value of the named curves (``loss_start``, ``loss_end``, ...)."""
    out: dict[str, Any] = {}
    for n in names:
        pts = curves.get(n)
        if pts:
            key = n.replace("/", "_")
            out[f"{key}_start"], out[f"{key}_end"] = round(pts[0][1], 5), round(pts[-1][1], 5)
    return out


def check_context(model: Any, max_length: int) -> None:
    ctx = getattr(model.config, "max_position_embeddings", None)
    if ctx is not None and max_length > ctx:
        raise ValueError(
            f"posttrain.data.max_length ({max_length}) exceeds the model's context ({ctx} tokens): "
            "lower it, or post-train a model with a longer context"
        )


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def load_model(model_dir: str | Path, template: str = "chatml") -> tuple[Any, Any, bool]:
    """(model in fp32, tokenizer, whether a chat template was added) from an HF model dir."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not an HF model directory (no config.json)")
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    added = ensure_chat_template(tok, model, template)
    return model, tok, added


def open_model(
    model_dir: str | Path, loop: TrainLoopConfig, max_length: int, template: str = "chatml"
) -> tuple[Any, Any, bool]:
    """A stage's start: its thread count, the model (+ chat template), and a context-length check."""
    set_threads(loop.threads)
    model, tok, added = load_model(model_dir, template)
    check_context(model, max_length)
    return model, tok, added


@dataclass
class Fitted:
    trainer: Any
    result: Any  # transformers.TrainOutput
    resume: str | None  # the checkpoint dir resumed from
    setup_s: float  # building the trainer (DPO: includes the reference log-probs)
    train_s: float  # trainer.train()
    curves: dict[str, list[tuple[int, float]]]

    @property
    def steps_done(self) -> int:
        """Optimizer steps run by this process (total minus those restored from the checkpoint)."""
        return self.trainer.state.global_step - (
            int(Path(self.resume).name.split("-")[1]) if self.resume else 0
        )

    def stats(self, model_dir: str | Path) -> dict[str, Any]:
        return {
            "base_model": str(model_dir),
            "resumed_from": Path(self.resume).name if self.resume else None,
            "steps": self.trainer.state.global_step,
        }


def fit(
    fingerprint: dict[str, Any],
    build: Callable[[], Any],
    tok: Any,
    out_dir: str | Path,
    ckpt_dir: str | Path,
    live_dir: str | Path,
) -> Fitted:
    """Resume (or start) under ``fingerprint``, train the trainer ``build()`` makes, export the model, write curves."""
    resume = prepare_checkpoints(ckpt_dir, fingerprint)
    t0 = time.perf_counter()
    trainer = build()
    t1 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    t2 = time.perf_counter()
    export(trainer.model, tok, out_dir)
    curves = write_curves(trainer.state.log_history, live_dir)
    return Fitted(trainer, result, resume, t1 - t0, t2 - t1, curves)


def stage_seed(loop: TrainLoopConfig, run_seed: int) -> int:
    return loop.seed if loop.seed is not None else run_seed
