"""DPO and RLVR resume after kill -9 from their last HF Trainer checkpoint; the curve continues the one before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmpipe.posttrain.config import PosttrainConfig
from lmpipe.tiny import build_tiny_model
from tests.killresume import curve, train_killed_and_straight

pytestmark = pytest.mark.e2e


def _workspace(tmp_path: Path, stage: str) -> dict[str, Path]:
    prompts = [
        {
            "id": f"m{i}",
            "kind": "math",
            "answer": str(i + 1),
            "messages": [{"role": "user", "content": f"What is {i} plus one?"}],
        }
        for i in range(16)
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    (tmp_path / "ev.jsonl").write_text(json.dumps({"id": "e", "question": "unrelated", "answer": "x"}) + "\n")
    post = PosttrainConfig.model_validate(
        {
            "data": {
                "prompts": [{"path": str(tmp_path / "p.jsonl"), "format": "prompts"}],
                "eval_sets": [{"path": str(tmp_path / "ev.jsonl")}],
                "max_length": 96,
            },
            "dpo": {
                "pairs": "off_policy",
                "ln2_patience": 50,
                "train": {"max_steps": 8, "batch_size": 4, "save_steps": 2},
            },
            "rlvr": {
                "num_generations": 2,
                "max_new_tokens": 6,
                "train": {"max_steps": 6, "batch_size": 4, "save_steps": 2},
            },
        }
    )
    texts = [p["messages"][0]["content"] for p in prompts] + [f"#### {i}" for i in range(20)]
    runs = {}
    for name in ("killed", "straight"):
        d = tmp_path / name
        d.mkdir()
        (d / "post.json").write_text(post.model_dump_json())
        build_tiny_model(d / "base", texts=texts * 3, vocab_size=300, chat=True)
        runs[name] = d
    return runs


@pytest.mark.parametrize(("stage", "steps", "metric"), [("dpo", 8, "loss"), ("rlvr", 6, "reward")])
def test_resumes_after_kill_9(tmp_path, stage, steps, metric):
    runs = _workspace(tmp_path, stage)
    killed = runs["killed"]
    stats = train_killed_and_straight(
        stage, killed, runs["straight"], "checkpoint-2", timeout=400, settle=0.6
    )
    assert stats["resumed_from"] in {"checkpoint-2", "checkpoint-4"} and stats["steps"] == steps
    a, b = curve(killed, metric), curve(runs["straight"], metric)
    assert [s for s, _ in a] == list(range(1, steps + 1))  # the curve continues: every step once
    if stage == "dpo":
        assert [v for _, v in a] == pytest.approx([v for _, v in b], rel=1e-4)
        assert stats["ref_logps"]["forward_batches"] == 0  # the resumed run reads the reference cache
