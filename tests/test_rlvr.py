"""RLVR through TRL's GRPOTrainer on a tiny model: runs, logs reward / KL / length curves, exports a model."""

from __future__ import annotations

import json

import torch

from lmpipe.posttrain.config import PosttrainConfig
from lmpipe.tiny import build_tiny_model


def test_grpo_logs_reward_kl_and_length(tmp_path):
    from lmpipe.posttrain.rlvr import train_rlvr

    torch.set_num_threads(1)
    prompts = [
        {
            "id": f"m{i}",
            "kind": "math",
            "answer": str(i + 1),
            "messages": [{"role": "user", "content": f"What is {i} plus one?"}],
        }
        for i in range(8)
    ]
    prompts.append(
        {"id": "bad", "messages": [{"role": "assistant", "content": "no user turn"}], "answer": "1"}
    )
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    (tmp_path / "ev.jsonl").write_text(json.dumps({"id": "e", "question": "unrelated", "answer": "x"}) + "\n")
    texts = [p["messages"][0]["content"] for p in prompts] + [str(i) for i in range(10)]
    model = build_tiny_model(tmp_path / "m", texts=texts * 5, vocab_size=300, chat=True)
    post = PosttrainConfig.model_validate(
        {
            "data": {
                "prompts": [{"path": str(tmp_path / "p.jsonl"), "format": "prompts"}],
                "eval_sets": [{"path": str(tmp_path / "ev.jsonl")}],
            },
            "rlvr": {
                "num_generations": 4,
                "beta": 0.04,
                "max_new_tokens": 6,
                "train": {"max_steps": 3, "batch_size": 8, "save_steps": 2},
            },
        }
    )
    stats = train_rlvr(
        post, model, tmp_path / "out", tmp_path / "ck", tmp_path / "data", tmp_path / "live", 0
    )
    curves = tmp_path / "live/plots/metrics/train"
    for name in ("reward", "kl", "completions_mean_length"):
        rows = (curves / f"{name}.tsv").read_text().splitlines()
        assert len(rows) == 1 + 3, name
    lengths = [
        float(r.split("\t")[1]) for r in (curves / "completions_mean_length.tsv").read_text().splitlines()[1:]
    ]
    assert all(0 < x <= 6 for x in lengths)
    assert stats["steps"] == 3 and stats["data"]["rejected"] == {"non_alternating": 1}
    assert stats["data"]["in"] == 9 and stats["rollouts_per_s"] > 0
    assert (tmp_path / "out/config.json").is_file() and (tmp_path / "ck/checkpoint-2").is_dir()
