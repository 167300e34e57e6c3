"""Held-out loss over training time: every model a training run kept at ``train.keep_steps``
(``<ckpt_dir>/steps/step-NNNNNN``, :data:`lmpipe.training.resume.KEPT_DIR`) scored like the final model.

The curve lands in ``metrics/evaluate.json`` (``models.<name>.steps.<step>.<domain>``) and, for study curves
(read from an experiment's commit) and the run report, as one wide TSV: a ``step`` column and one
``<model>/<domain>`` column of bits per byte per evaluated model and domain (blank where a model kept no such
step). No kept step: no ``steps`` section, and the TSV holds its header alone.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from lmpipe.documents import iter_documents
from lmpipe.evaluation.config import HeldoutConfig
from lmpipe.evaluation.heldout import heldout_metrics
from lmpipe.evaluation.lm import LM
from lmpipe.training.resume import KEPT_DIR

STEP_DIR = re.compile(r"^step-(\d+)$")
Curve = dict[str, dict[str, dict[str, float]]]  # step -> domain -> {loss, bits_per_byte}


def kept_steps(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, model dir)`` of every finished kept model (a ``.tmp`` export in progress has no match)."""
    d = Path(ckpt_dir) / KEPT_DIR
    if not d.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in d.iterdir()
        if (m := STEP_DIR.match(p.name)) and (p / "config.json").is_file()
    ]
    return sorted(found)


def step_curve(
    name: str, ckpt_dir: str | Path, heldout_dir: str | Path, cfg: HeldoutConfig, batch_tokens: int = 1024
) -> Curve:
    """``{step: {domain: {loss, bits_per_byte}}}`` over the held-out documents, one kept model at a time."""
    curve: Curve = {}
    for step, path in kept_steps(ckpt_dir):
        lm = LM.load(path, name=f"{name}@{step}", seq_len=cfg.seq_len)
        m = heldout_metrics(lm, iter_documents(heldout_dir), cfg, batch_tokens)
        curve[str(step)] = {d: {"loss": x["loss"], "bits_per_byte": x["bits_per_byte"]} for d, x in m.items()}
        del lm
    return curve


def write_tsv(curves: dict[str, Curve], path: str | Path) -> list[str]:
    """The wide TSV of every model's curve (bits per byte); returns its value columns."""
    columns = sorted({f"{model}/{d}" for model, c in curves.items() for per in c.values() for d in per})
    steps = sorted({int(s) for c in curves.values() for s in c})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["step", *columns])
        for step in steps:
            row: list[Any] = [step]
            for col in columns:
                model, domain = col.split("/", 1)
                v = curves[model].get(str(step), {}).get(domain, {}).get("bits_per_byte")
                row.append("" if v is None else f"{v:.6f}")
            w.writerow(row)
    return columns
