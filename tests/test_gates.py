"""great-expectations gates: pass on clean data, list every violation, and stop the stage that fails."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from lmpipe.documents import Document, ShardInfo, ShardWriter, sha256_file, write_manifest
from lmpipe.gates import GateError, check
from lmpipe.gates_config import GatesConfig
from tests.conftest import stage_cmd

GATES = GatesConfig(domains=["prose", "code"], stages={
    "s": {"min_chars": 5, "max_chars": 200, "drop_bounds": {"exact_dup": [0.0, 0.2]}, "max_drop_fraction": 0.1}})


def write(path: Path, docs: list[Document], per_shard: int = 3) -> None:
    with ShardWriter(path, "part", docs_per_shard=per_shard) as w:
        w.write_all(docs)
    write_manifest(path, w.shards)


def clean_docs(n: int = 8) -> list[Document]:
    return [Document(f"id{i}", f"document number {i} is fine", "prose" if i % 2 else "code", "t", {"k": i})
            for i in range(n)]


def test_gate_passes_and_writes_report(tmp_path: Path) -> None:
    write(tmp_path / "docs", clean_docs())
    stats = {"in": 10, "kept": 8, "rejected": 2, "by_reason": {"exact_dup": 1, "near_dup": 1}}
    summary = check("s", tmp_path / "docs", stats, GATES, tmp_path / "report")
    assert summary["success"] and summary["failed"] == 0 and summary["evaluated"] >= 15
    assert summary["sampled_docs"] == 8
    page = (tmp_path / "report" / "index.html").read_text()
    assert "PASSED" in page and "expect_column_values_to_be_unique" in page
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert saved["measured"]["drop_fraction.exact_dup"] == pytest.approx(0.1)


def test_gate_lists_every_failed_expectation(tmp_path: Path) -> None:
    docs = clean_docs()
    docs[3] = Document("id2", "a duplicated id", "prose", "t")  # duplicate id
    docs[4] = Document("id4", "x" * 500, "code", "t")  # too long
    docs[5] = Document("id5", "from a domain nobody allowed", "klingon", "t")
    write(tmp_path / "docs", docs)
    stats = {"in": 20, "kept": 8, "rejected": 11,  # one record lost: conservation gap
             "by_reason": {"exact_dup": 5, "spam": 6}}  # 25 % > 20 %, and 30 % > the 10 % default
    with pytest.raises(GateError) as err:
        check("s", tmp_path / "docs", stats, GATES, tmp_path / "report")
    msg = str(err.value)
    for needle in ("duplicate_ids", "texts_too_long", "unexpected_domain_docs", "conservation_gap",
                   "drop_fraction.exact_dup", "drop_fraction.spam", "expect_column_values_to_be_unique",
                   "expect_column_values_to_be_in_set", "klingon"):
        assert needle in msg, needle
    assert "drop_fraction.near_dup" not in msg
    assert err.value.summary["success"] is False and err.value.summary["failed"] >= 8
    assert "FAILED" in (tmp_path / "report" / "index.html").read_text()


def test_gate_detects_schema_change(tmp_path: Path) -> None:
    write(tmp_path / "docs", clean_docs(3))
    rows = [d.to_row() | {"score": 1.0} for d in clean_docs(2)]  # an upstream stage added a column
    extra = tmp_path / "docs" / "part-9999.parquet"
    pq.write_table(pa.Table.from_pylist([{**r, "id": f"x{r['id']}"} for r in rows]), extra)
    manifest = json.loads((tmp_path / "docs" / "manifest.json").read_text())
    shards = [ShardInfo(**s) for s in manifest["shards"]]
    shards.append(ShardInfo(extra.name, 2, 0, extra.stat().st_size, sha256_file(extra)))
    write_manifest(tmp_path / "docs", shards)
    with pytest.raises(GateError, match="schema_mismatched_shards"):
        check("s", tmp_path / "docs", {"in": 5, "kept": 5, "rejected": 0}, GATES, tmp_path / "report")


def test_disabled_gate_skips(tmp_path: Path) -> None:
    summary = check("s", tmp_path / "missing", {}, GatesConfig(enabled=False), tmp_path / "r")
    assert summary["skipped"] and summary["success"]


@pytest.mark.e2e  # two stage runs in subprocesses (~10 s each on a busy machine: great-expectations import)
def test_failing_gate_stops_the_stage(tmp_path: Path, project_root: Path) -> None:
    """`python -m stages dedup ...` exits non-zero with a readable message when its gate fails."""
    text = " ".join(f"word{i}" for i in range(60))
    distinct = [" ".join(f"doc{i}w{k}" for k in range(60)) for i in range(4)]
    docs = [Document(f"d{i}", text if i < 4 else distinct[i - 4], "prose", "t") for i in range(8)]
    write(tmp_path / "docs", docs)
    params = yaml.safe_load((project_root / "params.yaml").read_text())
    params["run"]["executor"] = {"kind": "local", "workers": 1}
    params["gates"]["stages"]["dedup"] = {"drop_bounds": {"exact_dup": [0.0, 0.1]}}  # 3 of 8 will be dropped
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    cmd = stage_cmd("dedup", tmp_path / "params.yaml", out / "metrics.json", docs=tmp_path / "docs",
                    out=out / "docs", rejected=out / "rej", plots=out / "plots", gate_report=out / "gate")
    proc = subprocess.run(cmd, cwd=project_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "gate 'dedup' failed 1 of" in proc.stderr
    assert "drop_fraction.exact_dup" in proc.stderr and "observed 0.375" in proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["gate"]["success"] is False and Path(metrics["gate"]["report"]).exists()
    assert (out / "plots" / "cluster_sizes.png").exists()

    params["gates"]["stages"]["dedup"] = {"drop_bounds": {"exact_dup": [0.0, 0.5]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ok = subprocess.run(cmd, cwd=project_root, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["by_reason"] == {"exact_dup": 3}
