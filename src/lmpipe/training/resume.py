"""Exact resume: which checkpoint belongs to this run, and a DVCLive log rewound to that checkpoint's step."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

CKPT_NAME = "latest"  # one rolling checkpoint: <ckpt_dir>/latest.ckpt
KEPT_DIR = "steps"  # <ckpt_dir>/steps/step-NNNNNN: HF models kept at train.keep_steps
RUN_FILE = "run.json"  # fingerprint of the run a checkpoint dir belongs to


def run_fingerprint(*parts: Any) -> str:
    """A short hash of everything that makes a checkpoint belong to a run (params, data index)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_checkpoint_dir(ckpt_dir: Path, fingerprint: str) -> Path | None:
    """The checkpoint to resume from, or None. A checkpoint from another run (other params/data) is discarded."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    run_file = ckpt_dir / RUN_FILE
    ckpt = ckpt_dir / f"{CKPT_NAME}.ckpt"
    if run_file.exists() and json.loads(run_file.read_text()).get("fingerprint") == fingerprint:
        return ckpt if ckpt.exists() else None
    for p in ckpt_dir.iterdir():  # stale: params or data changed since it was written
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    run_file.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")
    return None


def dvclive_logger(log_dir: Path, resume: bool, trainer_step: Callable[[], int]) -> Any:
    """DVCLive's Lightning logger, with every row keyed by the optimizer steps completed when it was measured.

    Lightning hands loggers a step that is off by one between training and validation rows (and DVCLive treats
    step 0 as "next"), so the trainer's ``global_step`` is used instead. Rows are appended to the .tsv files at
    once; the summary (metrics.json) is rewritten with each validation and at the end, not every step (DVCLive's
    Lightning logger decides that by inspecting the call stack, which costs more than a tiny model's step).
    ``dvcyaml=None``: dvc.yaml declares these metrics and plots itself; no DVC experiment is saved from inside a
    pipeline stage.
    """
    from dvclive.fabric import DVCLiveLogger as FabricDVCLiveLogger
    from dvclive.lightning import DVCLiveLogger

    class StepLogger(DVCLiveLogger):
        def log_metrics(self, metrics: Any, step: int | None = None, sync: bool | None = False) -> None:
            metrics = {k: v for k, v in metrics.items() if k != "epoch"}  # the epoch never ends here
            if metrics:
                sync = bool(sync) or any(k.startswith("val/") for k in metrics)
                FabricDVCLiveLogger.log_metrics(self, metrics, max(trainer_step(), 1), sync)

    return StepLogger(dir=str(log_dir), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)


def rewind_dvclive(log_dir: Path, step: int, finished: bool = False) -> None:
    """Drop DVCLive rows logged after ``step`` (the resumed checkpoint): the resumed run logs them again.

    ``finished``: the checkpoint is the run's last, whose final validation the rerun repeats, so drop it too.
    """
    for tsv in (log_dir / "plots" / "metrics").rglob("*.tsv"):
        last = step - 1 if finished and tsv.parent.name == "val" else step
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        header, rows = lines[0], lines[1:]
        col = header.split("\t").index("step")
        kept = [r for r in rows if int(r.split("\t")[col]) <= last]
        tsv.write_text("\n".join([header, *kept]) + "\n")

