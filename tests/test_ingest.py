"""Ingest on real corpora, executor independence, and kill -9 resume."""

import json

import pytest

from lmpipe.documents import count_documents, iter_documents, read_manifest
from lmpipe.executors import DaskExecutor, LocalExecutor
from lmpipe.ingest import ingest
from lmpipe.ingest_config import IngestConfig
from tests.killresume import ingest_killed_and_straight


def _shared_sources(shared):
    return [
        {"uri": str(shared / "domains/math/gsm8k_train.jsonl"), "domain": "math"},
        {"uri": str(shared / "domains/code/sympy_python.jsonl"), "domain": "code"},
        {"uri": str(shared / "wikitext-2/*.txt"), "domain": "prose", "split": "heading"},
        {"uri": str(shared / "tinyshakespeare/input.txt"), "domain": "prose", "split": "paragraph"},
        {"uri": str(shared / "hh-rlhf/harmless-base-test.jsonl.gz"), "domain": "dialogue", "text_field": "chosen"},
    ]


def test_ingest_real_corpora(tmp_path, shared_data):
    cfg = IngestConfig(sources=_shared_sources(shared_data), docs_per_shard=2000)
    stats = ingest(cfg, tmp_path / "docs", tmp_path / "rej", LocalExecutor(2))
    # Independent expectations from the files themselves (see shared/data/README.md).
    wiki_articles = sum(
        1 for f in ("valid.txt", "test.txt")
        for line in (shared_data / "wikitext-2" / f).read_text().split("\n")
        if line.startswith(" = ") and line.rstrip().endswith(" =") and not line.startswith(" = = ")
    )
    shakespeare = [b for b in (shared_data / "tinyshakespeare/input.txt").read_text().split("\n\n") if b.strip()]
    assert stats["kept_by_domain"] == {
        "math": 7470, "code": 263, "dialogue": 2312, "prose": wiki_articles + len(shakespeare)}
    assert stats["rejected"] == 0 and stats["in"] == stats["kept"]
    assert count_documents(tmp_path / "docs") == stats["kept"]
    first = next(iter_documents(tmp_path / "docs"))
    assert first.text.startswith("Question: ") and "source" in first.meta


@pytest.mark.e2e
def test_executors_give_identical_outputs(tmp_path, shared_data):
    cfg = IngestConfig(sources=_shared_sources(shared_data)[:3], docs_per_shard=1000, group_mib=1)
    hashes = {}
    for name, make in {"serial": lambda: LocalExecutor(1), "pool2": lambda: LocalExecutor(2),
                       "dask2": lambda: DaskExecutor(workers=2)}.items():
        ex = make()
        try:
            stats = ingest(cfg, tmp_path / name / "docs", tmp_path / name / "rej", ex)
        finally:
            ex.close()
        assert stats["units"] > 2  # really parallel work
        hashes[name] = read_manifest(tmp_path / name / "docs")["sha256"]
    assert len(set(hashes.values())) == 1, hashes


@pytest.mark.e2e
def test_kill_then_resume_gives_identical_output(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(24):  # 24 one-file units, each a few hundred ms of work
        with open(raw / f"f{i:02d}.jsonl", "w") as f:
            for j in range(6000):
                f.write(json.dumps({"text": f"file {i} record {j} " + "word " * (j % 50)}) + "\n")
    params = {
        "run": {"executor": {"kind": "local", "workers": 1}},
        "ingest": {"sources": [{"uri": str(raw / "*.jsonl"), "domain": "web"}], "group_mib": 1},
    }
    done_before, manifest = ingest_killed_and_straight(tmp_path, params, timeout=120)
    assert 3 <= done_before < 24, "the kill must land mid-run"
    assert manifest["docs"] == 24 * 6000
