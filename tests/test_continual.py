"""Continual pretraining: the synthetic domain packed with the parent's tokenizer, replay of the old domains
through a merged token index, and a CPT run that starts from the parent, re-warms its LR and learns the new text."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from lmpipe.config import Params
from lmpipe.continual import continue_pretraining, model_fingerprint, replay_index, tokenize_new_domains
from lmpipe.documents import Document, ShardWriter, sha256_file, write_manifest
from lmpipe.executors import LocalExecutor
from lmpipe.mixing.config import MixtureConfig
from lmpipe.mixture import MixtureSampler, TokenIndex
from lmpipe.schedules import lr_factor
from lmpipe.tokenization import tokenize_corpus
from lmpipe.tokenization_config import TokenizeConfig
from lmpipe.training.config import CptConfig, ModelConfig, TrainConfig
from tests.conftest import stage_cmd

torch.set_num_threads(1)
SEQ = 32
TINY = ModelConfig(d_model=48, n_layers=2, n_heads=4, max_seq_len=SEQ)

NOUNS = ["river", "tower", "garden", "engine", "harbour", "market", "bridge", "forest", "lamp", "school"]
ADJS = ["old", "quiet", "bright", "narrow", "busy", "green", "tall", "cold"]
VERBS = ["faces", "follows", "crosses", "shelters", "feeds", "watches", "joins"]
# invented entities: the synthetic domain states facts the parent never read
FACTS = [
    "Vornek Mills was founded by Ysolde Karrath in 1874 in Quellport.",
    "The Obrin Guild trades amber with Taskel Harbour every winter.",
    "Ysolde Karrath later chaired the Obrin Guild for eleven years.",
    "Quellport lies north of Taskel Harbour on the Marrow coast.",
    "Vornek Mills supplies copper wire to the Obrin Guild.",
]


def prose_doc(rng: random.Random, n: int) -> str:
    return " ".join(
        f"The {rng.choice(ADJS)} {rng.choice(NOUNS)} {rng.choice(VERBS)} the {rng.choice(NOUNS)}." for _ in range(n)
    )


def synthetic_doc(rng: random.Random) -> str:
    return " ".join(rng.sample(FACTS, k=len(FACTS)))


def write_docs(directory: Path, docs: list[Document]) -> Path:
    with ShardWriter(directory, "part", docs_per_shard=100) as w:
        w.write_all(docs)
    write_manifest(directory, w.shards)
    return directory


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Base docs (prose, code-ish) → tokenizer + data/tokens; synthetic docs → data/tokens-cpt with that tokenizer."""
    root = tmp_path_factory.mktemp("cpt")
    rng = random.Random(0)
    base = [Document(f"p{i}", prose_doc(rng, 30), "prose", "test") for i in range(60)]
    base += [Document(f"c{i}", "\n".join(f"x{j} = {j} * {i}" for j in range(40)), "code", "test") for i in range(20)]
    synth = [Document(f"s{i}", synthetic_doc(rng), "synthetic", "test") for i in range(40)]
    cfg = TokenizeConfig(vocab_size=400, val_fraction=0.1)
    ex = LocalExecutor(1)
    tokenize_corpus(cfg, write_docs(root / "dedup", base), root / "tokens", root / "tokenizer", root / "heldout", ex)
    tok_sha = sha256_file(root / "tokenizer" / "tokenizer.json")
    stats = tokenize_new_domains(cfg, 0.1, write_docs(root / "augment", synth), root / "tokens-cpt",
                                 root / "tokenizer", ex)
    return {"root": root, "synth": synth, "stats": stats, "tok_sha": tok_sha, "cfg": cfg}


def test_new_domain_is_packed_with_the_parents_tokenizer(corpus: dict) -> None:
    root = corpus["root"]
    assert sha256_file(root / "tokenizer" / "tokenizer.json") == corpus["tok_sha"]  # reused, not retrained
    tok = Tokenizer.from_file(str(root / "tokenizer" / "tokenizer.json"))
    eos = tok.token_to_id("<|endoftext|>")
    index = TokenIndex.load(root / "tokens-cpt")
    assert index.domains("train") == ["synthetic"] and index.eos_id == eos
    # train + val streams hold exactly the parent tokenizer's ids of every synthetic doc, each followed by EOS
    expect = sorted(tuple([*tok.encode(d.text).ids, eos]) for d in corpus["synth"])
    got = []
    for split in ("train", "val"):
        ids = index.stream("synthetic", split).read(0, index.tokens("synthetic", split)).tolist()
        while ids:
            cut = ids.index(eos) + 1
            got.append(tuple(ids[:cut]))
            ids = ids[cut:]
    assert sorted(got) == expect
    assert corpus["stats"]["val"]["synthetic"]["docs"] >= 1


def test_merged_index_replays_old_domains_in_place(corpus: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    root = corpus["root"]
    monkeypatch.chdir(root)  # relative dirs, as the stage passes them
    merged = replay_index(["tokens", "tokens-cpt"])
    assert merged.domains("train") == ["code", "prose", "synthetic"]
    base = TokenIndex.load(root / "tokens")
    n = base.tokens("prose")
    assert np.array_equal(merged.stream("prose").read(0, n), base.stream("prose").read(0, n))
    with pytest.raises(ValueError, match="both"):  # one domain from two places would be ambiguous
        replay_index([root / "tokens", root / "tokens"])
    other = json.loads((root / "tokens-cpt" / "index.json").read_text())
    (root / "bad").mkdir(exist_ok=True)
    (root / "bad" / "index.json").write_text(json.dumps({**other, "vocab_size": other["vocab_size"] + 1}))
    with pytest.raises(ValueError, match="vocab_size"):
        replay_index([root / "tokens", root / "bad"])


def test_replay_sampler_draws_old_domains_at_their_weights(corpus: dict) -> None:
    root = corpus["root"]
    merged = replay_index([root / "tokens", root / "tokens-cpt"])
    weights = {"synthetic": 0.5, "prose": 0.3, "code": 0.2}
    sampler = MixtureSampler(merged, weights, 8, seed=3)
    n = 6000
    for _ in range(n):
        next(sampler)
    for d, w in weights.items():
        sd = math.sqrt(w * (1 - w) / n)
        assert abs(sampler.drawn[d] / n - w) < 4 * sd, (d, sampler.drawn[d] / n)


def test_cpt_needs_a_parent() -> None:
    with pytest.raises(ValueError, match="init_from"):
        CptConfig(train=TrainConfig())
    assert Params.model_validate({"ingest": {"sources": [{"uri": "x", "domain": "x"}]}}).cpt.train.init_from


# ----------------------------------------------------------------------------------------- training
def batch_loss(model: torch.nn.Module, windows: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(input_ids=windows[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), windows[:, 1:].reshape(-1)).item()


def windows_of(index: TokenIndex, domain: str, n: int, split: str = "train") -> torch.Tensor:
    s = index.stream(domain, split)
    k = min(n, (len(s) - 1) // SEQ)
    return torch.from_numpy(np.stack([s.read(i * SEQ, SEQ + 1) for i in range(k)]))


@pytest.fixture(scope="module")
def runs(corpus: dict) -> dict:
    """A parent trained on the base domains, then a CPT run of it on synthetic + replay."""
    from lmpipe.training.data import mixture_samplers
    from lmpipe.training.trainer import train

    root = corpus["root"]
    base = TokenIndex.load(root / "tokens")
    parent_cfg = TrainConfig(seq_len=SEQ, batch_size=8, max_steps=60, lr=5e-3, val_every=100, val_batches=2,
                             ckpt_every=100, schedule={"kind": "cosine", "warmup_steps": 5})
    train(TINY, parent_cfg, mixture_samplers(root / "tokens", MixtureConfig(weights={"prose": 0.7, "code": 0.3}),
                                             SEQ, 1),
          vocab_size=base.vocab_size, ckpt_dir=root / "parent-ckpt", log_dir=None, export_dir=root / "parent",
          tokenizer_dir=root / "tokenizer", seed=1, progress=False)
    cpt = CptConfig(
        train=TrainConfig(init_from=str(root / "parent"), seq_len=SEQ, batch_size=8, max_steps=40, lr=2e-3,
                          val_every=100, val_batches=2, ckpt_every=100,
                          schedule={"kind": "cosine", "warmup_steps": 10, "start_ratio": 0.3, "min_ratio": 0.1}),
        mixture=MixtureConfig(weights={"synthetic": 0.5, "prose": 0.35, "code": 0.15}),
    )
    dirs = [root / "tokens", root / "tokens-cpt"]
    stats = continue_pretraining(TINY, cpt, dirs, root / "tokenizer", seed=2, ckpt_dir=root / "cpt-ckpt",
                                 log_dir=root / "live", export_dir=root / "cpt", progress=False)
    return {"root": root, "cfg": cpt, "stats": stats, "dirs": dirs}


def _tsv(root: Path, name: str) -> dict[int, float]:
    rows = (root / "live" / "plots" / "metrics" / "train" / f"{name}.tsv").read_text().splitlines()[1:]
    return {int(r.split("\t")[0]): float(r.split("\t")[1]) for r in rows}


def test_cpt_starts_from_the_parents_weights(runs: dict) -> None:
    from transformers import AutoModelForCausalLM

    from lmpipe.model import build_model
    from lmpipe.training.data import GlobalBatches, mixture_samplers

    root, cfg = runs["root"], runs["cfg"]
    # the exact first batch of the CPT run, scored by hand with the parent and with a fresh model
    make = mixture_samplers(replay_index(runs["dirs"]), cfg.mixture, SEQ, 2)
    x, y = next(iter(GlobalBatches(make, cfg.train.batch_size)))
    first = torch.cat([x, y[:, -1:]], dim=1)
    parent = AutoModelForCausalLM.from_pretrained(root / "parent").eval()
    fresh = build_model(TINY, parent.config.vocab_size, None, None, None).eval()
    logged = _tsv(root, "loss")[1]  # step 1's loss: computed before the first update
    assert logged == pytest.approx(batch_loss(parent, first), abs=2e-3)
    assert logged < batch_loss(fresh, first) - 1.0
    assert runs["stats"]["parent"] == str(root / "parent")


def test_cpt_lr_rewarms_and_redecays(runs: dict) -> None:
    cfg = runs["cfg"].train
    lr = _tsv(runs["root"], "lr")
    assert sorted(lr) == list(range(1, cfg.max_steps + 1))
    # step k ran with the factor of 0-based step k-1 (lmpipe.schedules closed form)
    for k, v in lr.items():
        assert v == pytest.approx(cfg.lr * lr_factor(cfg.schedule, k - 1, cfg.max_steps), rel=1e-6)
    # by hand: starts at 0.3 * 2e-3, halfway up at step 6 (0-based 5), peak at step 11, min 0.1 * 2e-3 at the end
    assert lr[1] == pytest.approx(6e-4) and lr[6] == pytest.approx(1.3e-3) and lr[11] == pytest.approx(2e-3)
    assert lr[40] == pytest.approx(2e-4 + 1.8e-3 * 0.5 * (1 + math.cos(math.pi * 29 / 30)), rel=1e-6)


def test_cpt_replays_old_domains_and_learns_the_new_one(runs: dict) -> None:
    from transformers import AutoModelForCausalLM

    root = runs["root"]
    epochs = runs["stats"]["epochs_consumed"]
    assert epochs["prose"] > 0 and epochs["code"] > 0 and epochs["synthetic"] > 0
    assert runs["stats"]["mixture"] == {"code": 0.15, "prose": 0.35, "synthetic": 0.5}
    merged = replay_index(runs["dirs"])
    synth = windows_of(merged, "synthetic", 16, "val")  # held-out synthetic docs: never trained on
    parent = AutoModelForCausalLM.from_pretrained(root / "parent").eval()
    child = AutoModelForCausalLM.from_pretrained(root / "cpt").eval()
    before, after = batch_loss(parent, synth), batch_loss(child, synth)
    assert after < before - 1.0, (before, after)
    assert model_fingerprint(root / "cpt") != model_fingerprint(root / "parent")


@pytest.mark.e2e
def test_stage_clis_pack_train_and_resume(runs: dict, tmp_path: Path) -> None:
    """stages.cpt_tokenize + stages.cpt as DVC runs them; a rerun with the same inputs resumes, not retrains."""
    import subprocess

    import yaml
    from transformers import AutoModelForCausalLM

    root = runs["root"]
    params = {
        "ingest": {"sources": [{"uri": "unused", "domain": "prose"}]},
        "run": {"executor": {"workers": 1}},
        "tokenize": {"vocab_size": 400},
        "model": TINY.model_dump(),
        "cpt": {
            "val_fraction": 0.1,
            "train": {"init_from": str(root / "parent"), "seq_len": SEQ, "batch_size": 4, "max_steps": 6,
                      "val_every": 3, "val_batches": 1, "ckpt_every": 3,
                      "schedule": {"kind": "cosine", "warmup_steps": 2, "start_ratio": 0.3}},
            "mixture": {"weights": {"synthetic": 0.5, "prose": 0.5}},
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo / "src") + ":" + str(repo)}
    params = tmp_path / "params.yaml"
    subprocess.run(stage_cmd("cpt_tokenize", params, tmp_path / "m1.json", docs=root / "augment",
                             tokenizer=root / "tokenizer", tokens=tmp_path / "tokens-cpt"), check=True, cwd=repo, env=env)
    cpt = stage_cmd("cpt", params, tmp_path / "m2.json", tokens=root / "tokens", new_tokens=tmp_path / "tokens-cpt",
                    tokenizer=root / "tokenizer", out=tmp_path / "model", ckpt=tmp_path / "ckpt", live=tmp_path / "live")
    subprocess.run(cpt, check=True, cwd=repo, env=env)
    first = json.loads((tmp_path / "m2.json").read_text())
    assert first["steps"] == 6 and first["resumed_from_step"] == 0 and first["parent"] == str(root / "parent")
    assert json.loads((tmp_path / "m1.json").read_text())["train"]["synthetic"]["docs"] > 0
    AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    # same params, data and parent: the checkpoint is reused (the same entry, in this process: one start-up less)
    from lmpipe.contract import run_stage
    from stages.registry import by_name

    paths = {"tokens": root / "tokens", "new_tokens": tmp_path / "tokens-cpt", "tokenizer": root / "tokenizer",
             "out": tmp_path / "model", "ckpt": tmp_path / "ckpt", "live": tmp_path / "live"}
    run_stage("cpt", by_name()["cpt"].entry, {k: str(v) for k, v in paths.items()}, str(params),
              str(tmp_path / "m3.json"))
    assert json.loads((tmp_path / "m3.json").read_text())["resumed_from_step"] == 6
