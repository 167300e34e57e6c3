"""Config of a training run: the model built from scratch (section ``model``, :mod:`lmpipe.model`), the LR
schedule (:mod:`lmpipe.schedules`), the run itself (section ``train``, :mod:`lmpipe.training`) and continual
pretraining (section ``cpt``, :mod:`lmpipe.continual`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lmpipe.mixing.config import MixtureConfig
from lmpipe.sections import Section


class ModelConfig(Section):
    """A Hugging Face causal LM built from scratch (ignored when ``init_from`` names a model dir)."""

    arch: Literal["llama", "mistral", "qwen2"] = Field(
        "llama", description="HF model_type; all are pre-norm RMSNorm + RoPE + SwiGLU decoders"
    )
    d_model: int = Field(128, ge=8)
    n_layers: int = Field(4, ge=1)
    n_heads: int = Field(4, ge=1)
    n_kv_heads: int | None = Field(None, ge=1, description="fewer than n_heads = grouped-query attention")
    d_ff: int | None = Field(
        None, ge=1, description="SwiGLU width; default 8/3·d_model rounded up to ffn_multiple"
    )
    ffn_multiple: int = Field(32, ge=1)
    max_seq_len: int = Field(256, ge=2, description="RoPE context length written to the HF config")
    rope_theta: float = Field(10_000.0, gt=0)
    norm_eps: float = Field(1e-5, gt=0)
    tie_embeddings: bool = True
    init_std: float = Field(0.02, gt=0)
    vocab_multiple: int = Field(
        64, ge=1, description="pad the vocab (tokenizer's) up to a multiple: faster matmuls"
    )
    attn_impl: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"

    @model_validator(mode="after")
    def _heads(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.n_kv_heads is not None and self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})")
        return self


class ScheduleConfig(Section):
    """LR multiplier as a closed-form function of the optimizer step (src/lmpipe/schedules.py).

    Continual pretraining reuses it: re-warm with ``start_ratio`` > 0 (begin at the previous run's final LR) and
    re-decay with cosine/wsd, or continue an ``infinite`` run at its constant LR (warmup_steps = cooldown_steps = 0).
    """

    kind: Literal["cosine", "wsd", "constant", "infinite"] = "cosine"
    warmup_steps: int = Field(20, ge=0, description="linear warmup from start_ratio·lr to lr")
    start_ratio: float = Field(0.0, ge=0, le=1, description="LR at step 0 as a fraction of lr (re-warming)")
    min_ratio: float = Field(0.1, ge=0, le=1, description="final LR as a fraction of lr")
    decay_fraction: float = Field(
        0.2, gt=0, le=1, description="wsd: decay phase; infinite: anneal phase (of steps)"
    )
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = Field("1-sqrt", description="wsd decay curve")
    cooldown_steps: int = Field(0, ge=0, description="infinite: cosine cooldown from lr to const_ratio·lr")
    const_ratio: float = Field(
        0.5, gt=0, le=1, description="infinite: LR of the long constant phase, fraction of lr"
    )

    @model_validator(mode="after")
    def _ratios(self) -> ScheduleConfig:
        if self.kind == "infinite" and self.min_ratio > self.const_ratio:
            raise ValueError(f"min_ratio ({self.min_ratio}) must not exceed const_ratio ({self.const_ratio})")
        return self


class TrainConfig(Section):
    """One training run (pretraining, or continual pretraining from ``init_from``) with Lightning."""

    init_from: str | None = Field(
        None, description="local HF model dir to start from; None = new model from `model`"
    )
    seed: int | None = Field(None, ge=0, description="None = run.seed")
    seq_len: int = Field(256, ge=2)
    batch_size: int = Field(8, ge=1, description="sequences per device per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_steps: int = Field(120, ge=1, description="optimizer steps")
    lr: float = Field(3e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.1, ge=0, description="AdamW; not applied to norms and biases")
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 = off")
    schedule: ScheduleConfig = ScheduleConfig()
    val_every: int = Field(50, ge=1, description="optimizer steps between validations")
    val_batches: int = Field(4, ge=1, description="fixed held-out batches per validation")
    ckpt_every: int = Field(50, ge=1, description="optimizer steps between resumable checkpoints")
    val_domain_batches: int = Field(
        1, ge=0, description="fixed held-out batches per domain, validated every val_every steps (0 = off)"
    )
    keep_steps: list[int] = Field(
        default_factory=list, description="optimizer steps whose model is kept as an HF dir in <ckpt>/steps"
    )
    log_every: int = Field(1, ge=1)
    accelerator: Literal["cpu", "gpu", "cuda", "mps", "tpu", "auto"] = "cpu"
    devices: int | Literal["auto"] = Field(1, description="devices per node")
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true"] = "32-true"
    compile: bool = Field(False, description="torch.compile the model")
    threads: int = Field(1, ge=0, description="torch intra-op threads; 0 = torch's default (one per core)")
    peak_tflops: float | None = Field(
        None, gt=0, description="per-device peak for MFU; None = known GPU or measured"
    )

    @model_validator(mode="after")
    def _keep_steps(self) -> TrainConfig:
        outside = [s for s in self.keep_steps if not 1 <= s <= self.max_steps]
        if outside:
            raise ValueError(f"keep_steps {outside} outside 1..max_steps ({self.max_steps})")
        return self


def _cpt_train() -> TrainConfig:
    # continue from the pretrained model: re-warm from its final LR (3e-3 * 0.1) up to a lower peak, re-decay
    return TrainConfig(
        init_from="models/pretrain",
        lr=1e-3,
        max_steps=80,
        schedule=ScheduleConfig(kind="cosine", warmup_steps=10, start_ratio=0.3, min_ratio=0.1),
    )


class CptConfig(Section):
    """Continual pretraining (stages ``cpt_tokenize`` + ``cpt``): the synthetic domain, tokenized with the base
    tokenizer, mixed with replay of the original domains (``data/tokens``), starting from ``train.init_from``."""

    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="synthetic docs held out (by id hash) for validation"
    )
    train: TrainConfig = Field(default_factory=_cpt_train)
    mixture: MixtureConfig = Field(
        default_factory=lambda: MixtureConfig(
            weights={"synthetic": 0.5, "prose": 0.15, "code": 0.1, "math": 0.1, "fiction": 0.15}
        )
    )
    replay_from_cmr: bool = Field(
        False,
        description="replay share from the cmr stage's critical ratio (data/cmr/replay.yaml): old domains "
        "keep their relative weights and sum to it (cpt always depends on that file; with the flag off it is not read)",
    )

    @model_validator(mode="after")
    def _parent(self) -> CptConfig:
        if not self.train.init_from:
            raise ValueError(
                "train.init_from must name the parent model dir (continual pretraining starts from it)"
            )
        return self
