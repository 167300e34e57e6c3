"""Conditioning enabled end to end at stage level: tokenize (PHF control tokens + MeCo variant), pretrain
(MeCo prefix then cooldown), evaluate (held-out loss with and without the prefix, toxicity of generations
plain and conditioned on <|good|>) through the stage contract's own entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lmpipe.contract import run_stage
from lmpipe.documents import Document, ShardWriter, write_manifest
from stages.registry import by_name

WORDS = [
    "river",
    "hill",
    "stone",
    "cloud",
    "field",
    "market",
    "garden",
    "harbor",
    "lantern",
    "meadow",
    "orchard",
    "path",
    "quarry",
    "road",
    "valley",
    "window",
]


def corpus(directory: Path) -> None:
    docs = []
    for i in range(80):
        words = [WORDS[(i * 5 + k * 3) % len(WORDS)] for k in range(14)]
        toxic = i % 4 == 0
        text = " ".join(words) + (" you idiot anal" if toxic else "") + "."
        docs.append(
            Document(
                f"d{i:03d}",
                text,
                "prose",
                "crawl",
                {"url": f"https://site{i % 4}.example/p{i}", "tox_word_frac": 0.2 if toxic else 0.0},
            )
        )
    with ShardWriter(directory, "part", docs_per_shard=40) as w:
        w.write_all(docs)
    write_manifest(directory, w.shards)


@pytest.mark.e2e
def test_phf_and_meco_through_tokenize_pretrain_evaluate(tmp_path: Path) -> None:
    corpus(tmp_path / "docs")
    (tmp_path / "qa.jsonl").write_text(
        json.dumps({"question": "Which?", "choices": ["river", "stone"], "answer_index": 0}) + "\n"
    )
    params = {
        "run": {"seed": 3, "executor": {"kind": "local", "workers": 1}},
        "ingest": {"sources": [{"uri": "unused", "domain": "x"}]},
        "tokenize": {"vocab_size": 320, "val_fraction": 0.1},
        "condition": {
            "control": {"enabled": True, "score": "tox_word_frac", "percentiles": [50]},
            "meco": {"enabled": True, "fraction": 0.5},
        },
        "mixture": {"weights": {"prose": 1.0}, "from_tune": False},
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 64},
        "train": {
            "seq_len": 32,
            "batch_size": 4,
            "max_steps": 6,
            "val_every": 3,
            "ckpt_every": 3,
            "val_batches": 1,
            "schedule": {"warmup_steps": 1},
        },
        "evaluate": {
            "models": {"pretrain": str(tmp_path / "model")},
            "batch_size": 4,
            "heldout": {"max_docs_per_domain": 4},
            "qa": {"generate": False},
            "toxicity": {
                "prompts": ["You are such a", "The people are"],
                "samples_per_prompt": 2,
                "max_new_tokens": 4,
                "scorer": "wordlist",
            },
            "samples": {"prompts": []},
            "posttrain": {"qa": None, "math": [], "pairs": None},
        },
    }
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    t = {k: str(tmp_path / k) for k in ("tokens", "tokenizer", "heldout", "ckpt", "live")}

    def stage(name: str, **paths: str) -> dict:
        return run_stage(name, by_name()[name].entry, paths, str(pfile), str(tmp_path / f"{name}.json"))

    tok = stage(
        "tokenize",
        docs=str(tmp_path / "docs"),
        tokens=t["tokens"],
        tokenizer=t["tokenizer"],
        heldout=t["heldout"],
    )
    ctrl = tok["condition"]["control"]
    assert ctrl["cuts"] == [0.0] and ctrl["pieces"] == {"<|bad|>": 20, "<|good|>": 60}  # 1 in 4 docs toxic
    assert tok["train_meco_tokens"] > tok["train_tokens"]
    pre = stage(
        "pretrain",
        tokens=t["tokens"],
        tokenizer=t["tokenizer"],
        out=str(tmp_path / "model"),
        ckpt=t["ckpt"],
        live=t["live"],
    )
    assert pre["meco"]["cooldown_from_step"] == 3  # 0.5 x 6 steps
    ev = stage(
        "evaluate",
        heldout=t["heldout"],
        qa=str(tmp_path / "qa.jsonl"),
        samples=str(tmp_path / "s.jsonl"),
        plots=str(tmp_path / "plots"),
    )
    m = ev["models"]["pretrain"]
    assert m["heldout"]["all"]["docs"] == m["heldout_meco"]["all"]["docs"] > 0
    assert (
        m["heldout"]["all"]["tokens"] == m["heldout_meco"]["all"]["tokens"]
    )  # only document tokens are scored
    assert m["heldout"]["all"]["loss"] != m["heldout_meco"]["all"]["loss"]
    assert (
        m["toxicity"]["control_token"] == "<|good|>"
        and "expected_max_toxicity" in m["toxicity_unconditioned"]
    )
    rows = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert (
        sum(r["kind"] == "toxicity" for r in rows)
        == sum(r["kind"] == "toxicity_unconditioned" for r in rows)
        == 4
    )


@pytest.mark.e2e
def test_meco_pretrain_killed_before_the_boundary_resumes_to_the_same_model(tmp_path: Path) -> None:
    """kill -9 after the first checkpoint (step 2, prefix phase), rerun: the run crosses the cooldown boundary
    (step 4) at the same token and ends with the uninterrupted run's weights, bit for bit."""
    import hashlib
    import subprocess

    from tests.conftest import stage_cmd
    from tests.killresume import child_env, kill_when

    corpus(tmp_path / "docs")
    params = {
        "run": {"seed": 4, "executor": {"kind": "local", "workers": 1}},
        "ingest": {"sources": [{"uri": "unused", "domain": "x"}]},
        "tokenize": {"vocab_size": 320, "val_fraction": 0.1},
        "condition": {"meco": {"enabled": True, "fraction": 0.5}},
        "mixture": {"weights": {"prose": 1.0}, "from_tune": False},
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 64},
        "train": {
            "seq_len": 32,
            "batch_size": 4,
            "max_steps": 8,
            "val_every": 4,
            "ckpt_every": 2,
            "val_batches": 1,
            "schedule": {"warmup_steps": 1},
        },
    }
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    run_stage(
        "tokenize",
        by_name()["tokenize"].entry,
        {
            "docs": str(tmp_path / "docs"),
            "tokens": str(tmp_path / "tokens"),
            "tokenizer": str(tmp_path / "tokenizer"),
            "heldout": str(tmp_path / "heldout"),
        },
        str(pfile),
        str(tmp_path / "tokenize.json"),
    )
    root = Path(__file__).resolve().parent.parent
    env = child_env()

    def cmd(run: Path) -> list[str]:
        return stage_cmd(
            "pretrain",
            pfile,
            run / "m.json",
            tokens=tmp_path / "tokens",
            tokenizer=tmp_path / "tokenizer",
            out=run / "model",
            ckpt=run / "ckpt",
            live=run / "live",
        )

    def weights(run: Path) -> str:
        return hashlib.sha256((run / "model" / "model.safetensors").read_bytes()).hexdigest()

    full, crash = tmp_path / "full", tmp_path / "crash"
    run_stage(
        "pretrain",
        by_name()["pretrain"].entry,  # the uninterrupted reference, in this process
        {
            "tokens": str(tmp_path / "tokens"),
            "tokenizer": str(tmp_path / "tokenizer"),
            "out": str(full / "model"),
            "ckpt": str(full / "ckpt"),
            "live": str(full / "live"),
        },
        str(pfile),
        str(full / "m.json"),
    )
    proc = subprocess.Popen(cmd(crash), cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when(proc, (crash / "ckpt" / "latest.ckpt").exists, timeout=120)  # it must still run until then
    subprocess.run(cmd(crash), cwd=root, env=env, check=True, capture_output=True, timeout=300)
    m = json.loads((crash / "m.json").read_text())
    # resumed mid-run: usually from step 2 (before the boundary at 4); a loaded machine may let the child reach
    # the step-4 checkpoint before the kill lands (the sampler's exact resume before, at and after the boundary
    # is checked without timing in test_conditioning.py)
    assert 0 < m["resumed_from_step"] < 8 and m["steps"] == 8
    assert weights(crash) == weights(full)
