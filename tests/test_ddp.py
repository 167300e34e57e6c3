"""Data parallelism on CPU: Lightning DDP with 2 processes (gloo) follows the loss curve of 1 process at the
same global batch.

Both runs draw the same global batches from one mixture sampler (each DDP rank keeps every other row of
each, see ``lmpipe.training.data.GlobalBatches``) and DDP averages the gradients, so the two runs compute the
same updates up to the order of float additions. The stated tolerance: every logged train and validation loss
within 1e-5 relative of the 1-process run over 20 steps (measured here: 1.8e-7 and 9.1e-8 at worst).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_training import SEQ, SMALL_MODEL, _losses, run_like_the_child, shakespeare  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-5  # relative, per logged loss (measured: 1.8e-7 train, 9.1e-8 validation)
# Lightning's DDP launcher re-runs the command of rank 0 for every other rank, so this is a script file.
SCRIPT = """
import json, sys
from lmpipe.mixing.config import MixtureConfig
from lmpipe.training.config import ModelConfig, TrainConfig
from lmpipe.training.data import mixture_samplers
from lmpipe.training.trainer import train
a = json.loads(sys.argv[1])
cfg = TrainConfig(**a["train"])
stats = train(ModelConfig(**a["model"]), cfg,
              mixture_samplers(a["tokens"], MixtureConfig(weights={"prose": 1.0}), cfg.seq_len, 5),
              vocab_size=a["vocab"], ckpt_dir=a["out"] + "/ckpt", log_dir=a["out"] + "/live",
              export_dir=None, seed=5, progress=False)
print("STATS " + json.dumps(stats))
"""


@pytest.mark.e2e
def test_ddp_two_cpu_processes_match_one_process_at_the_same_global_batch(
    shakespeare: dict,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
) -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    common = {
        "seq_len": SEQ,
        "max_steps": 20,
        "lr": 5e-3,
        "val_every": 10,
        "val_batches": 2,
        "ckpt_every": 100,
        "threads": 1,
        "accelerator": "cpu",
        "schedule": {"kind": "cosine", "warmup_steps": 3},
    }
    runs = {"one": {"batch_size": 8, "devices": 1}, "ddp": {"batch_size": 4, "devices": 2, "strategy": "ddp"}}
    stats = {}
    for name, extra in runs.items():
        spec = {
            "tokens": str(shakespeare["tokens"]),
            "vocab": shakespeare["vocab"],
            "out": str(tmp_path / name),
            "model": SMALL_MODEL.model_dump(),
            "train": {**common, **extra},
        }
        if name == "one":  # the 1-process reference needs no launcher: in this process, same call as SCRIPT
            stats[name] = run_like_the_child(spec, tmp_path / name, seed=5)
            continue
        done = subprocess.run(
            [sys.executable, str(script), json.dumps(spec)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        stats[name] = json.loads(done.stdout.split("STATS ", 1)[1].splitlines()[0])
    assert stats["one"]["world_size"] == 1 and stats["ddp"]["world_size"] == 2
    assert stats["one"]["tokens"] == stats["ddp"]["tokens"] == 20 * 8 * SEQ  # the same global batch
    for split, steps in (("train", list(range(1, 21))), ("val", [10, 20])):
        one, ddp = _losses(tmp_path / "one", split), _losses(tmp_path / "ddp", split)
        assert [s for s, _ in one] == [s for s, _ in ddp] == steps
        worst = max(abs(a - b) / abs(a) for (_, a), (_, b) in zip(one, ddp, strict=True))
        assert worst <= TOLERANCE, (split, worst, one, ddp)
    # and the curve is a learning curve, not a constant: the runs did train
    assert _losses(tmp_path / "one", "train")[-1][1] < _losses(tmp_path / "one", "train")[0][1] - 0.5
