"""The refine stage: pass-through when off; against a real OpenAI-compatible server on 127.0.0.1 whose
replies are scripted edit programs; kill -9 mid-stage then rerun gives the uninterrupted result."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from lmpipe.documents import (
    Document,
    ShardWriter,
    iter_batches,
    iter_documents,
    read_manifest,
    write_manifest,
)
from lmpipe.executors import LocalExecutor
from lmpipe.llm.config import LLMConfig
from lmpipe.llm.testing import FaultServer
from lmpipe.refine.config import RefineConfig
from lmpipe.refine.run import PROMPTS, RefineJob, pass_through, refine
from tests.conftest import stage_cmd
from tests.killresume import child_env, kill_when

ROOT = Path(__file__).resolve().parent.parent

DOCS = {
    "a": "Home | About\nThe river rises.\nIt flows east.",
    "b": "buy spam now",
    "c": "garble garble",
    "d": "teh cat sat on teh mat",
    "f": "plain fine text",
}


def program_for(req: dict) -> str:
    """The scripted model: reads the numbered document out of the prompt, answers an edit program."""
    shown = req["messages"][-1]["content"].split("Document:\n", 1)[1]
    if "[1] Home" in shown:
        return "remove_lines(start=1, end=1)"
    if "spam" in shown:
        return "drop_doc()"
    if "garble" in shown:
        return "rewrite_everything()"
    if "teh" in shown:
        return 'normalize(source="teh", target="the")'
    return "keep_doc()"


def make_docs(directory: Path, per_shard: int = 3, copies: int = 1) -> Path:
    docs = []
    for c in range(copies):
        for k, text in DOCS.items():
            docs.append(Document(f"{k}{c}", text, "prose", "test", {"n": c}))
        docs.append(Document(f"code{c}", "def f():\n    return 1", "code", "test"))
    with ShardWriter(directory, "part", docs_per_shard=per_shard) as w:
        w.write_all(docs)
    write_manifest(directory, w.shards)
    return directory


def test_off_passes_documents_through_as_links(tmp_path: Path) -> None:
    src = make_docs(tmp_path / "in")
    stats = pass_through(src, tmp_path / "out" / "docs", tmp_path / "out" / "rejected")
    assert stats == {"enabled": False, "in": 6, "kept": 6, "rejected": 0, "passed_through": 6}
    assert read_manifest(tmp_path / "out" / "docs")["sha256"] == read_manifest(src)["sha256"]
    for s in read_manifest(src)["shards"]:
        assert os.path.samefile(src / s["path"], tmp_path / "out" / "docs" / s["path"])  # a link, not a copy
    assert read_manifest(tmp_path / "out" / "rejected")["docs"] == 0


def test_refine_applies_programs_and_quarantines_invalid_ones(tmp_path: Path) -> None:
    src = make_docs(tmp_path / "in")
    with FaultServer(lambda req, attempt: "ok", reply=program_for) as server:
        llm = LLMConfig(
            backend="http",
            model="scripted",
            base_url=server.url,
            cache=str(tmp_path / "c.sqlite"),
            max_retries=0,
        )
        job = RefineJob(
            llm=llm,
            refine=RefineConfig(enabled=True, domains=["prose"]),
            seed=1,
            template=(PROMPTS / "refine.txt").read_text(),
        )
        stats = refine(job, src, tmp_path / "out" / "docs", tmp_path / "out" / "rejected", LocalExecutor(1))
    kept = {d.id: d for d in iter_documents(tmp_path / "out" / "docs")}
    rejected = {r["id"]: r for b in iter_batches(tmp_path / "out" / "rejected") for r in b.to_pylist()}
    assert kept["a0"].text == "The river rises.\nIt flows east."
    assert kept["d0"].text == "the cat sat on the mat"
    assert kept["f0"].text == DOCS["f"] and "refine" not in kept["f0"].meta
    assert kept["code0"].text == "def f():\n    return 1"  # not selected: passed through untouched
    meta = kept["a0"].meta["refine"]
    assert meta["program"] == "remove_lines(start=1, end=1)"
    assert meta["original_sha256"] == hashlib.sha256(DOCS["a"].encode()).hexdigest()
    assert kept["a0"].meta["n"] == 0  # earlier meta kept
    assert rejected["b0"]["reason"] == "refine_drop"
    assert (
        rejected["c0"]["reason"] == "refine_invalid"
        and "unknown operation 'rewrite_everything'" in rejected["c0"]["detail"]
    )
    assert stats["in"] == 6 == stats["kept"] + stats["rejected"]
    assert stats["edits"] == {
        "drop_doc": 1,
        "keep_doc": 1,
        "lines_removed": 1,
        "normalize": 1,
        "remove_lines": 1,
        "replacements": 2,
    }
    assert stats["docs"] == {"dropped": 1, "edited": 2, "invalid": 1, "passed_through": 1, "unchanged": 1}
    assert stats["chars_removed"] == len("Home | About\n") + len(
        "buy spam now"
    )  # teh -> the changes no length
    assert stats["llm"]["requests"] == 5


def _params(path: Path, url: str, cache: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "run": {"seed": 3, "executor": {"kind": "local", "workers": 1}},
                "ingest": {"sources": [{"uri": "unused", "domain": "x"}]},
                "llm": {
                    "backend": "http",
                    "model": "scripted",
                    "base_url": url,
                    "cache": str(cache),
                    "max_retries": 0,
                },
                "refine": {"enabled": True, "domains": ["prose"]},
            }
        )
    )
    return path


def _digest(out: Path) -> tuple[str, str]:
    return read_manifest(out / "docs")["sha256"], read_manifest(out / "rejected")["sha256"]


@pytest.mark.e2e
def test_kill_9_mid_stage_then_rerun_gives_identical_output(tmp_path: Path) -> None:
    src = make_docs(tmp_path / "in", per_shard=2, copies=4)  # 24 docs in 12 shards
    n_units = len(read_manifest(src)["shards"])
    env = child_env()
    with FaultServer(lambda req, attempt: "slow", reply=program_for, hang_s=0.15) as server:

        def cmd(out: Path, params: Path) -> list[str]:
            return stage_cmd(
                "refine", params, out / "m.json", docs=src, out=out / "docs", rejected=out / "rejected"
            )

        ref = tmp_path / "ref"
        subprocess.run(
            cmd(ref, _params(tmp_path / "a.yaml", server.url, tmp_path / "a.sqlite")),
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        out, params = tmp_path / "killed", _params(tmp_path / "b.yaml", server.url, tmp_path / "b.sqlite")
        proc = subprocess.Popen(
            cmd(out, params), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        state = out / ".state" / "docs"
        kill_when(proc, lambda: len(list(state.glob("*.json"))) >= 3, timeout=60)
        done = len(list(state.glob("*.json")))
        assert 1 <= done < n_units, f"kill landed after {done}/{n_units} shards"
        subprocess.run(cmd(out, params), cwd=ROOT, env=env, check=True, capture_output=True)
    assert _digest(out) == _digest(ref)
    m, r = json.loads((out / "m.json").read_text()), json.loads((ref / "m.json").read_text())
    assert m["units_reused"] >= done and m["llm_this_run"]["requests"] < r["llm"]["requests"]
    assert m["edits"] == r["edits"] and m["docs"] == r["docs"]


def test_embedded_backend_by_default_quarantines_what_a_random_model_writes(tmp_path: Path) -> None:
    """The default backend (in-process model; here a tiny random one): its text is no program, so every selected
    document is quarantined with the parser's reason and none is lost."""
    from lmpipe.llm.testing import build_tiny_model

    src = make_docs(tmp_path / "in")
    llm = LLMConfig(model=str(build_tiny_model(tmp_path / "tiny")), cache=None, batch_size=8)
    assert llm.backend == "embedded"
    job = RefineJob(
        llm=llm,
        refine=RefineConfig(enabled=True, domains=["prose"], max_tokens=12, max_docs=3),
        seed=1,
        template=(PROMPTS / "refine.txt").read_text(),
    )
    stats = refine(job, src, tmp_path / "out" / "docs", tmp_path / "out" / "rejected", LocalExecutor(1))
    rejected = [r for b in iter_batches(tmp_path / "out" / "rejected") for r in b.to_pylist()]
    assert stats["in"] == 6 and stats["kept"] == 3 and stats["docs"]["passed_through"] == 3  # max_docs=3
    assert [r["reason"] for r in rejected] == ["refine_invalid"] * 3 and all(r["detail"] for r in rejected)
    assert stats["llm"]["requests"] == 3
