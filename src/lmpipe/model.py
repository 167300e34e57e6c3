"""The language model: a Hugging Face ``transformers`` causal LM built from a :class:`ModelConfig`.

Building on an HF architecture (Llama by default: pre-norm RMSNorm, rotary position embeddings, SwiGLU MLP)
means every checkpoint exports as safetensors + ``config.json`` that ``AutoModelForCausalLM`` loads, and any
local HF model directory can be the starting point of a later stage (``load_model``).

``n_params`` and ``flops_per_token`` are closed-form, for the MFU estimate (model FLOPs utilisation): achieved
model FLOPs per second over the hardware's peak.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from lmpipe.training.config import ModelConfig

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel


def ffn_width(cfg: ModelConfig) -> int:
    """SwiGLU hidden width: 8/3·d keeps the three-matrix MLP near the 8·d² params of a 4·d GELU MLP."""
    if cfg.d_ff is not None:
        return cfg.d_ff
    return cfg.ffn_multiple * math.ceil(8 * cfg.d_model / 3 / cfg.ffn_multiple)


def padded_vocab(vocab_size: int, multiple: int) -> int:
    return multiple * math.ceil(vocab_size / multiple)


def hf_config(
    cfg: ModelConfig,
    vocab_size: int,
    bos_id: int | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
) -> PretrainedConfig:
    """The HF config for ``cfg`` with the tokenizer's vocab (padded to ``cfg.vocab_multiple``) and special ids."""
    from transformers import AutoConfig

    extra = {"attention_bias": False} if cfg.arch == "llama" else {}
    if cfg.arch == "mistral":
        extra["sliding_window"] = None  # full attention: the context is short, keep Llama semantics
    return AutoConfig.for_model(
        cfg.arch,
        vocab_size=padded_vocab(vocab_size, cfg.vocab_multiple),
        hidden_size=cfg.d_model,
        intermediate_size=ffn_width(cfg),
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads or cfg.n_heads,
        max_position_embeddings=cfg.max_seq_len,
        rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings,
        initializer_range=cfg.init_std,
        hidden_act="silu",
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        use_cache=True,
        **extra,
    )


def build_model(
    cfg: ModelConfig,
    vocab_size: int,
    bos_id: int | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
) -> PreTrainedModel:
    """A freshly initialised causal LM (fp32; mixed precision is the trainer's business)."""
    from transformers import AutoModelForCausalLM

    config = hf_config(cfg, vocab_size, bos_id, eos_id, pad_id)
    return AutoModelForCausalLM.from_config(config, attn_implementation=cfg.attn_impl)


def load_model(path: str | Path, attn_impl: str = "sdpa") -> PreTrainedModel:
    """A local HF causal-LM directory (ours or anyone's) as the starting point of training."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json)")
    import torch

    return AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn_impl, dtype=torch.float32)


def model_dims(config: PretrainedConfig) -> dict[str, int]:
    """The sizes that FLOPs and params depend on, read from any Llama-like HF config."""
    d = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    return {
        "d_model": d,
        "n_layers": config.num_hidden_layers,
        "n_heads": heads,
        "n_kv_heads": getattr(config, "num_key_value_heads", None) or heads,
        "head_dim": head_dim,
        "d_ff": config.intermediate_size,
        "vocab": config.vocab_size,
        "tied": int(bool(getattr(config, "tie_word_embeddings", False))),
        "qkv_bias": int(config.model_type == "qwen2"),
    }


def n_params(config: PretrainedConfig) -> dict[str, int]:
    """Parameter counts: ``total`` (unique tensors, tied embeddings once), ``embedding``, and ``non_embedding``."""
    m = model_dims(config)
    d, hd = m["d_model"], m["head_dim"]
    q, kv = m["n_heads"] * hd, m["n_kv_heads"] * hd
    attn = d * q + 2 * d * kv + q * d + m["qkv_bias"] * (q + 2 * kv)
    mlp = 3 * d * m["d_ff"]
    norms = 2 * d
    per_layer = attn + mlp + norms
    embedding = m["vocab"] * d * (1 if m["tied"] else 2)
    non_embedding = m["n_layers"] * per_layer + d  # + final norm
    return {"total": embedding + non_embedding, "embedding": embedding, "non_embedding": non_embedding}


def flops_per_token(config: PretrainedConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3× forward, 2 FLOPs per multiply-add).

    6·N over the weights that multiply activations (the non-embedding matrices plus the output head; the input
    embedding is a lookup), plus attention scores and weighted values: 6·2·L·T·(n_heads·head_dim) counting the
    full T×T square, as in the PaLM paper's MFU definition.
    """
    m = model_dims(config)
    p = n_params(config)
    norm_params = (2 * m["n_layers"] + 1) * m["d_model"]
    matmul_params = p["non_embedding"] - norm_params + m["vocab"] * m["d_model"]
    attention = 12 * m["n_layers"] * seq_len * m["n_heads"] * m["head_dim"]
    return 6.0 * matmul_params + attention
