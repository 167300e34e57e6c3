"""Scale transfer: does a study's ranking of arms at a small profile predict the ranking at a larger one?

Pairwise decision accuracy (DataDecide, Magnusson et al. 2025, arXiv:2504.11393): over every pair of arms, the
share whose order by a metric's mean is the same at both scales; reported per metric and pooled by metric kind
(continuous likelihood metrics vs discrete accuracies, which DataDecide found transfer worse).
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any


def decision_accuracy(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """Compare two results of one study (``studies/results/*.json`` as written by the runner)."""
    if small["study"] != large["study"]:
        raise ValueError(f"different studies: {small['study']!r} vs {large['study']!r}")
    per_metric: dict[str, Any] = {}
    pooled: dict[str, list[int]] = {}
    for m, spec in large["metrics"].items():
        agree = total = 0
        for a, b in combinations(sorted(large["arms"]), 2):
            means = [
                r["arms"][x]["metrics"][m]["mean"] if x in r["arms"] else None
                for r in (small, large)
                for x in (a, b)
            ]
            if None in means or means[0] == means[1] or means[2] == means[3]:
                continue  # an arm missing at either scale, or a tie: no decision to compare
            total += 1
            agree += (means[0] < means[1]) == (means[2] < means[3])
        per_metric[m] = {
            "kind": spec.get("kind", "continuous"),
            "pairs": total,
            "accuracy": agree / total if total else None,
        }
        counts = pooled.setdefault(spec.get("kind", "continuous"), [0, 0])
        counts[0] += agree
        counts[1] += total
    return {
        "study": large["study"],
        "small": small["label"],
        "large": large["label"],
        "metrics": per_metric,
        "by_kind": {k: {"pairs": n, "accuracy": a / n if n else None} for k, (a, n) in pooled.items()},
    }


def write_transfer(root: Path, name: str, small: str, large: str | None) -> Path:
    """``studies/results/NAME.SMALL.json`` vs ``NAME.json`` (or ``NAME.LARGE.json``) → ``NAME.transfer.json``."""
    res = root / "studies" / "results"
    load = lambda label: json.loads((res / f"{label}.json").read_text())  # noqa: E731
    out = decision_accuracy(load(f"{name}.{small}"), load(f"{name}.{large}" if large else name))
    path = res / f"{name}.transfer.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    return path
