"""The instruction residual θ_target + (θ_instruct − θ_base) on tiny models, and stage ``residual``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from lmpipe.posttrain.residual import ResidualError, add_residual
from lmpipe.tiny import build_tiny_model
from tests.conftest import ROOT, stage_cmd


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


def _constant(src, dst, value: float):
    """A copy of model ``src`` with every parameter set to ``value`` (exact in binary floating point)."""
    m = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(value)
    m.save_pretrained(dst)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (dst / f).write_bytes((src / f).read_bytes())
    return dst


def test_residual_stage_matches_hand_computed_weights(tmp_path):
    """Through the stage entry as dvc.yaml runs it: 1.0 + 0.5 x (0.75 - 0.25) = 1.25 in every weight."""
    tiny = build_tiny_model(tmp_path / "tiny", vocab_size=300)
    dirs = {k: _constant(tiny, tmp_path / k, v) for k, v in (("cpt", 1.0), ("inst", 0.75), ("pre", 0.25))}
    params = tmp_path / "params.yaml"
    params.write_text(
        json.dumps(
            {
                "ingest": {"sources": [{"uri": "x", "domain": "x"}]},
                "posttrain": {
                    "residual": {
                        "target": str(dirs["cpt"]),
                        "instruct": str(dirs["inst"]),
                        "base": str(dirs["pre"]),
                        "scale": 0.5,
                    }
                },
            }
        )
    )
    cmd = stage_cmd("residual", params, tmp_path / "m.json", out=tmp_path / "out")
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    got = _weights(tmp_path / "out")
    assert got and all(bool((v == 1.25).all()) for v in got.values())
    m = json.loads((tmp_path / "m.json").read_text())
    # ‖instruct − base‖ = 0.5 · sqrt(number of weights)
    n = sum(v.numel() for v in got.values())
    assert m["residual_norm"] == pytest.approx(0.5 * n**0.5, rel=1e-5) and m["scale"] == 0.5


def test_residual_refuses_other_shapes_with_a_clear_error(tmp_path):
    base = build_tiny_model(tmp_path / "base")
    deep = build_tiny_model(tmp_path / "deep", layers=3)
    with pytest.raises(ResidualError, match="num_hidden_layers differs"):
        add_residual(base, deep, base, tmp_path / "out")
    small = build_tiny_model(tmp_path / "small", vocab_size=300)
    with pytest.raises(ResidualError, match="embed_tokens.weight: instruct .* vs target"):
        add_residual(base, small, base, tmp_path / "out")  # a smaller vocabulary is no extension
    with pytest.raises(FileNotFoundError, match="not an HF model directory"):
        add_residual(base, tmp_path / "nowhere", base, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_sft_base_is_in_the_graph_only_while_the_residual_uses_it(tmp_path):
    """posttrain.residual.instruct names the instruct model; another dir than models/sft_base drops that stage."""
    import shutil

    import yaml

    shutil.copytree(ROOT / "stages", tmp_path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())

    def stages() -> list[str]:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        out = subprocess.run(
            [sys.executable, "-m", "stages.registry"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        return [line.split()[0] for line in out.stdout.splitlines()]

    assert {"sft_base", "residual"} <= set(stages())
    params["posttrain"]["residual"].update(instruct="models/smollm2-instruct", base="models/smollm2-base")
    got = stages()
    assert "residual" in got and "sft_base" not in got
