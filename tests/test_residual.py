"""The instruction residual θ_target + (θ_instruct − θ_base) on tiny models."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from lmpipe.posttrain.residual import ResidualError, add_residual
from lmpipe.tiny import build_tiny_model


def _weights(d):
    return load_file(d / "model.safetensors")


def test_residual_is_exact(tmp_path):
    torch.set_num_threads(1)
    base = build_tiny_model(tmp_path / "base", seed=0)
    target = build_tiny_model(tmp_path / "target", seed=1)
    instruct_model = AutoModelForCausalLM.from_pretrained(base)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in instruct_model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    instruct_model.save_pretrained(tmp_path / "instruct")
    (tmp_path / "instruct").joinpath("tokenizer.json").write_bytes((base / "tokenizer.json").read_bytes())
    for f in ("tokenizer_config.json",):
        (tmp_path / "instruct" / f).write_bytes((base / f).read_bytes())
    for scale in (1.0, 0.5):
        out = tmp_path / f"out-{scale}"
        stats = add_residual(target, tmp_path / "instruct", base, out, scale)
        t, i, b, got = _weights(target), _weights(tmp_path / "instruct"), _weights(base), _weights(out)
        assert set(got) == set(t)
        for k in t:
            assert torch.equal(got[k], t[k] + scale * (i[k] - b[k])), k
        assert stats["added_vocab_rows"] == 0 and stats["residual_norm"] > 0
    # the residual of a model with itself changes nothing
    same = add_residual(target, base, base, tmp_path / "same")
    assert same["residual_norm"] == 0.0
    assert all(torch.equal(v, _weights(target)[k]) for k, v in _weights(tmp_path / "same").items())


def test_residual_carries_added_chat_tokens(tmp_path):
    from transformers import AutoTokenizer

    from lmpipe.posttrain.chat import ensure_chat_template

    base = build_tiny_model(tmp_path / "base", seed=0)
    target = build_tiny_model(tmp_path / "target", seed=1)
    tok = AutoTokenizer.from_pretrained(base)
    m = AutoModelForCausalLM.from_pretrained(base)
    ensure_chat_template(tok, m)
    m.save_pretrained(tmp_path / "sft")
    tok.save_pretrained(tmp_path / "sft")
    stats = add_residual(target, tmp_path / "sft", base, tmp_path / "out")
    assert stats["added_vocab_rows"] == 2
    got, t, i = _weights(tmp_path / "out"), _weights(target), _weights(tmp_path / "sft")
    key = "model.embed_tokens.weight"
    assert torch.equal(
        got[key][: t[key].shape[0]], t[key] + (i[key][: t[key].shape[0]] - _weights(base)[key])
    )
    assert torch.equal(got[key][t[key].shape[0] :], i[key][t[key].shape[0] :])
    assert AutoTokenizer.from_pretrained(tmp_path / "out").chat_template


def test_residual_refuses_other_architectures(tmp_path):
    base = build_tiny_model(tmp_path / "base")
    wide = build_tiny_model(tmp_path / "wide", hidden=96, heads=4)
    with pytest.raises(ResidualError, match="hidden_size differs"):
        add_residual(wide, base, base, tmp_path / "out")
    assert not (tmp_path / "out").exists()
