"""DPO and RLVR resume after kill -9 from their last HF Trainer checkpoint; the curve continues the one before."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmpipe.posttrain.config import PosttrainConfig
from lmpipe.tiny import build_tiny_model

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import sys, time, json, torch
from transformers import TrainerCallback
from lmpipe.posttrain.config import PosttrainConfig
torch.set_num_threads(1)
class Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        time.sleep(float(sys.argv[3]))
stage, d = sys.argv[1], sys.argv[2]
post = PosttrainConfig.model_validate(json.loads(open(d + '/post.json').read()))
common = (post, d + '/base', d + '/out', d + '/ck', d + '/data', d + '/live')
if stage == 'dpo':
    from lmpipe.posttrain.dpo import train_dpo
    s = train_dpo(*common, d + '/refcache', 0, callbacks=[Slow()])
else:
    from lmpipe.posttrain.rlvr import train_rlvr
    s = train_rlvr(*common, 0, callbacks=[Slow()])
open(d + '/stats.json', 'w').write(json.dumps(s))
"""


def _child(stage: str, d: Path, slow: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, stage, str(d), str(slow)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _curve(d: Path, name: str) -> list[tuple[int, float]]:
    rows = (d / f"live/plots/metrics/train/{name}.tsv").read_text().splitlines()[1:]
    return [(int(r.split("\t")[0]), float(r.split("\t")[1])) for r in rows]


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


@pytest.mark.parametrize(("stage", "steps", "curve"), [("dpo", 8, "loss"), ("rlvr", 6, "reward")])
def test_resumes_after_kill_9(tmp_path, stage, steps, curve):
    runs = _workspace(tmp_path, stage)
    killed = runs["killed"]
    proc = _child(stage, killed, 0.5)
    deadline = time.time() + 300
    while not (killed / "ck" / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    time.sleep(0.6)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "out").exists()
    for d in runs.values():
        p = _child(stage, d, 0.0)
        assert p.wait(400) == 0, p.stderr.read().decode()[-3000:]
    stats = json.loads((killed / "stats.json").read_text())
    assert stats["resumed_from"] in {"checkpoint-2", "checkpoint-4"} and stats["steps"] == steps
    a, b = _curve(killed, curve), _curve(runs["straight"], curve)
    assert [s for s, _ in a] == list(range(1, steps + 1))  # the curve continues: every step once
    if stage == "dpo":
        assert [v for _, v in a] == pytest.approx([v for _, v in b], rel=1e-4)
        assert stats["ref_logps"]["forward_batches"] == 0  # the resumed run reads the reference cache
