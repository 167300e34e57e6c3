"""The benchmarks report what they compute: repeated runs, median + spread, RESULTS.md generated from the JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))


def test_stat_and_rate_hand_computed() -> None:
    from _common import rate, stat

    assert stat([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": [3.0, 1.0, 2.0]}
    r = rate(100, [2.0, 4.0, 5.0])  # 50, 25, 20 per second
    assert (r["median"], r["min"], r["max"]) == (25.0, 20.0, 50.0)


def test_every_bench_writes_through_the_shared_helper() -> None:
    scripts = [p for p in BENCH.glob("*.py") if not p.name.startswith("_") and p.name != "report.py"]
    assert len(scripts) >= 6
    for p in scripts:
        src = p.read_text()
        assert "write_result(" in src and "from _common import" in src, f"{p.name} bypasses bench/_common.py"
        assert "best_of" not in src and "max(v) for" not in src, f"{p.name} reports a best-of figure"


def _committed() -> list[tuple[str, dict]]:
    return [(p.name, json.loads(p.read_text())) for p in sorted((BENCH / "results").glob("*.json"))]


@pytest.mark.parametrize(("name", "res"), _committed() or [pytest.param("none", {}, marks=pytest.mark.skip)])
def test_committed_results_have_repeats_spread_input_size_and_a_peer(name: str, res: dict) -> None:
    assert res["repeats"] >= 3 and res["date"] and res["machine"]["cpus"], name
    assert res["input"], f"{name}: no input size recorded"
    for t in res["tables"]:
        assert set(t["ours"] + t["peers"]) <= set(t["rows"]), name
        for row, vals in t["rows"].items():
            v = vals[t["metric"]]
            assert len(v["runs"]) >= 3 and v["min"] <= v["median"] <= v["max"], (name, row)
    assert any(t["peers"] for t in res["tables"]), f"{name}: no peer measured in the same run"


def test_results_md_is_generated_from_the_committed_json(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(BENCH / "report.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + r.stdout
    md = (BENCH / "RESULTS.md").read_text()
    for name, res in _committed():
        for t in res["tables"]:
            hib = t.get("higher_is_better", True)
            median = {row: vals[t["metric"]]["median"] for row, vals in t["rows"].items()}
            best = (max if hib else min)(t["peers"], key=median.__getitem__) if t["peers"] else None
            for row in t["rows"]:
                assert row in md, (name, row)
                if best and row in t["ours"]:  # the ratio to the strongest peer, from the JSON's medians
                    ratio = median[row] / median[best] if hib else median[best] / median[row]
                    assert f"{ratio:.2f}×" in md, (name, row)
