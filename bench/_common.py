"""Small helpers shared by the benchmark scripts: where the real data lives, timing, JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LMPIPE_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results"


def require_shared() -> Path:
    if not (SHARED / "README.md").exists():
        raise SystemExit(f"benchmark data not found at {SHARED} (set LMPIPE_SHARED_DATA)")
    return SHARED


def best_of(fn, repeats: int = 3) -> tuple[float, object]:
    """Fastest wall time of ``repeats`` runs (less noise on a shared machine) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    result = {"benchmark": name, "machine": machine(), **result}
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return path
