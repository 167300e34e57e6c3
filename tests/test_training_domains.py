"""Per-domain validation curves and models kept at chosen steps, on a two-domain corpus whose domains differ in
what can be learned: tinyshakespeare (learnable) and uniformly random tokens (loss can never beat ln V)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lmpipe.mixing.config import MixtureConfig
from lmpipe.training.config import ModelConfig, TrainConfig
from lmpipe.training.data import mixture_samplers
from lmpipe.training.trainer import train
from tests.test_training import SEQ, _unigram_cross_entropy, _write_tokens, shakespeare  # noqa: F401

torch.set_num_threads(1)
MODEL = ModelConfig(d_model=64, n_layers=2, n_heads=4, max_seq_len=SEQ)


def _add_noise_domain(tokens: Path, vocab: int, n: int = 20_000) -> None:
    """A second domain of uniform random tokens next to ``prose`` in the same index."""
    import json

    rng = np.random.default_rng(0)
    index = json.loads((tokens / "index.json").read_text())
    for split, size in (("train", n), ("val", n // 4)):
        rel = f"{split}/noise/000.bin"
        (tokens / split / "noise").mkdir(parents=True)
        rng.integers(0, vocab, size).astype(np.uint16).tofile(tokens / rel)
        index["splits"][split]["noise"] = {
            "tokens": size,
            "docs": 1,
            "files": [{"path": rel, "tokens": size}],
        }
    (tokens / "index.json").write_text(json.dumps(index))


@pytest.fixture(scope="module")
def run(shakespeare: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: F811
    import shutil

    root = tmp_path_factory.mktemp("domains")
    tokens = root / "tokens"
    shutil.copytree(shakespeare["tokens"], tokens)
    _add_noise_domain(tokens, shakespeare["vocab"])
    cfg = TrainConfig(
        seq_len=SEQ,
        batch_size=16,
        max_steps=40,
        lr=5e-3,
        val_every=10,
        val_batches=2,
        ckpt_every=20,
        val_domain_batches=2,
        keep_steps=[10, 40],
        schedule={"kind": "cosine", "warmup_steps": 5, "min_ratio": 0.1},
    )
    stats = train(
        MODEL,
        cfg,
        mixture_samplers(tokens, MixtureConfig(weights={"prose": 0.8, "noise": 0.2}), SEQ, 3),
        vocab_size=shakespeare["vocab"],
        ckpt_dir=root / "ckpt",
        log_dir=root / "live",
        export_dir=root / "model",
        tokenizer_dir=shakespeare["tokenizer"],
        seed=3,
        progress=False,
    )
    return {"stats": stats, "root": root}


def _curve(root: Path, name: str) -> dict[int, float]:
    rows = (root / "live" / "plots" / "metrics" / "val" / f"{name}.tsv").read_text().splitlines()[1:]
    return {int(r.split("\t")[0]): float(r.split("\t")[-1]) for r in rows}


def test_each_domain_has_its_own_validation_curve(shakespeare: dict, run: dict) -> None:  # noqa: F811
    prose, noise, mixed = (_curve(run["root"], n) for n in ("loss_prose", "loss_noise", "loss"))
    assert sorted(prose) == sorted(noise) == sorted(mixed) == [10, 20, 30, 40]
    # uniform random tokens: cross-entropy can never drop below ln V; prose falls under its unigram baseline
    ln_v = math.log(shakespeare["vocab"])
    assert min(noise.values()) > ln_v - 0.05
    unigram = _unigram_cross_entropy(shakespeare["train"], shakespeare["val"], shakespeare["vocab"])
    assert prose[40] < prose[10] and prose[40] < unigram < ln_v - 1.0
    # the mixed loss (weights 0.8/0.2 over both) lies between the two domains' losses
    assert prose[40] < mixed[40] < noise[40]
    assert run["stats"]["val_loss_domains"] == {
        "noise": pytest.approx(noise[40], abs=1e-5),
        "prose": pytest.approx(prose[40], abs=1e-5),
    }


def test_models_are_kept_at_the_chosen_steps(shakespeare: dict, run: dict) -> None:  # noqa: F811
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    steps = run["root"] / "ckpt" / "steps"
    assert run["stats"]["kept_steps"] == ["step-000010", "step-000040"]
    assert sorted(p.name for p in steps.iterdir()) == ["step-000010", "step-000040"]
    final, last = (load_file(d / "model.safetensors") for d in (run["root"] / "model", steps / "step-000040"))
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)
    # the step-10 model is an earlier state: worse on held-out prose (scored here with plain HF forwards)
    val = torch.from_numpy(shakespeare["val"][: 8 * (SEQ + 1)].astype(np.int64).reshape(8, SEQ + 1))

    def loss(d: Path) -> float:
        model = AutoModelForCausalLM.from_pretrained(d).eval()
        with torch.no_grad():
            logits = model(input_ids=val[:, :-1]).logits
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), val[:, 1:].reshape(-1)
        ).item()

    assert loss(steps / "step-000010") > loss(steps / "step-000040") + 0.1


def test_keep_steps_outside_the_run_are_refused() -> None:
    with pytest.raises(ValueError, match="outside 1..max_steps"):
        TrainConfig(max_steps=10, keep_steps=[5, 11])
