"""Optional adapter: run lm-evaluation-harness tasks on an exported (HF-format) checkpoint, offline.

lm-eval is not a runtime dependency (``pip install 'lmpipe[lmeval]'``). Tasks come from local YAML files
(``include_path``) so nothing is fetched; where lm-eval is absent the result says so instead of failing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from lmpipe.evaluation.config import LmEvalConfig


def lm_eval_available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def run_lm_eval(model_dir: str | Path, cfg: LmEvalConfig, batch_size: int = 8) -> dict[str, Any]:
    """``{task: {metric: value}}`` for ``cfg.tasks``; ``{"skipped": reason}`` when there is nothing to run."""
    if not cfg.tasks:
        return {"skipped": "no tasks configured (evaluate.lm_eval.tasks)"}
    if not lm_eval_available():
        return {"skipped": "lm-eval is not installed (pip install 'lmpipe[lmeval]')"}
    import lm_eval
    from lm_eval.tasks import TaskManager

    if cfg.include_path and not Path(cfg.include_path).is_dir():
        raise FileNotFoundError(f"evaluate.lm_eval.include_path {cfg.include_path} is not a directory")
    manager = TaskManager(include_path=cfg.include_path) if cfg.include_path else TaskManager()
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={Path(model_dir).resolve()},dtype=float32",
        tasks=list(cfg.tasks),
        limit=cfg.limit,
        batch_size=batch_size,
        device="cpu",
        task_manager=manager,
    )
    # keep numbers only: "acc,none" -> "acc" so DVC can diff them
    return {
        task: {k.split(",")[0]: v for k, v in res.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        for task, res in out["results"].items()
    }
