"""The model builder: HF architecture, closed-form sizes, and save/load round trips."""

from __future__ import annotations

import pytest
import torch

from lmpipe.model import build_model, ffn_width, flops_per_token, load_model, n_params, padded_vocab
from lmpipe.training.config import ModelConfig

torch.set_num_threads(1)


def test_ffn_width_and_vocab_padding() -> None:
    assert ffn_width(ModelConfig(d_model=128)) == 352  # 8·128/3 = 341.3 → next multiple of 32
    assert ffn_width(ModelConfig(d_model=128, d_ff=300)) == 300
    assert padded_vocab(1000, 64) == 1024 and padded_vocab(1024, 64) == 1024


@pytest.mark.parametrize(
    ("arch", "kv", "tied"),
    [("llama", None, True), ("llama", 2, False), ("qwen2", 2, True), ("mistral", 1, True)],
)
def test_param_count_matches_the_hf_model(arch: str, kv: int | None, tied: bool) -> None:
    cfg = ModelConfig(
        arch=arch, d_model=64, n_layers=2, n_heads=4, n_kv_heads=kv, tie_embeddings=tied, max_seq_len=32
    )
    model = build_model(cfg, vocab_size=300)
    assert model.config.model_type == arch
    actual = sum(p.numel() for p in model.parameters())  # parameters() counts a tied matrix once
    assert n_params(model.config)["total"] == actual


def test_llama_is_rmsnorm_rope_swiglu() -> None:
    model = build_model(ModelConfig(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, max_seq_len=16), 100)
    names = {type(m).__name__ for m in model.modules()}
    assert {"LlamaRMSNorm", "LlamaRotaryEmbedding", "LlamaMLP"} <= names
    layer = model.model.layers[0]
    assert layer.mlp.act_fn.__class__.__name__ == "SiLUActivation" or "silu" in str(layer.mlp.act_fn).lower()
    assert layer.self_attn.k_proj.out_features == 16  # one KV head of 16 dims: grouped-query attention


def test_flops_per_token_by_hand() -> None:
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=4, d_ff=172, vocab_multiple=1, tie_embeddings=True)
    model = build_model(cfg, vocab_size=128)
    # per layer: q,k,v,o 4·64·64 = 16384 + SwiGLU 3·64·172 = 33024 → 49408; 2 layers = 98816
    # + output head 128·64 = 8192 → 107008 weights that multiply; 6 FLOPs per weight per token = 642048
    # attention: 12 · layers 2 · T 32 · (4 heads · 16) = 49152
    assert flops_per_token(model.config, 32) == 642048 + 49152


def test_forward_and_save_load_round_trip(tmp_path) -> None:
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, max_seq_len=16)
    model = build_model(cfg, vocab_size=50, eos_id=0).eval()
    x = torch.randint(0, 50, (2, 16))
    logits = model(input_ids=x).logits
    assert logits.shape == (2, 16, 64)  # vocab padded to a multiple of 64
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    again = load_model(tmp_path).eval()
    torch.testing.assert_close(again(input_ids=x).logits, logits)


def test_load_model_needs_a_model_dir(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="divisible by n_heads"):
        ModelConfig(d_model=100, n_heads=3)
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelConfig(n_heads=4, n_kv_heads=3)
