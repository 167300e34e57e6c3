"""Helpers shared by the thin stage entry points in ``stages/``: params, executors, metrics files."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lmpipe.config import ExecutorConfig
from lmpipe.executors import Executor, make_executor


@contextmanager
def executor_from(cfg: ExecutorConfig) -> Iterator[Executor]:
    ex = make_executor(cfg)
    try:
        yield ex
    finally:
        ex.close()


def write_metrics(path: str | Path, stats: dict[str, Any], seconds: float | None = None) -> None:
    """Write a DVC metrics file (JSON, sorted keys) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if seconds is not None:
        stats = {**stats, "seconds": round(seconds, 2)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def gate_and_write_metrics(
    stage: str, docs_dir: str | Path, stats: dict[str, Any], gates_cfg: Any, report_dir: str | Path,
    metrics_path: str | Path, seconds: float,
) -> None:
    """Run the stage's quality gate, write its metrics either way (they link the gate report), and exit
    non-zero with the failed expectations when the gate fails, so DVC and the Prefect flow stop."""
    from lmpipe.gates import GateError, check

    failure = None
    try:
        stats["gate"] = check(stage, docs_dir, stats, gates_cfg, report_dir)
    except GateError as err:
        stats["gate"], failure = err.summary, err
    write_metrics(metrics_path, stats, seconds)
    if failure is not None:
        raise SystemExit(f"{stage}: {failure}")
