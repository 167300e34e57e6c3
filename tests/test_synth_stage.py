"""The augment stage end to end against real servers on 127.0.0.1: a fault-injecting one and the project's
own ``lmpipe serve-llm`` (tiny random model); plus kill -9 mid-stage with the embedded backend."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from lmpipe.contract import run_stage
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
from lmpipe.llm.testing import FaultServer, build_tiny_model, server_stats, start_serve_llm
from lmpipe.synth.augment import AugmentJob, augment, plan_units
from lmpipe.synth.config import AugmentConfig
from stages.registry import by_name
from tests.conftest import stage_cmd

ROOT = Path(__file__).resolve().parent.parent
GARBAGE = b"<html><body>502 upstream hiccup</body></html>"


def make_docs(directory: Path, n_fiction: int = 6, per_shard: int = 3) -> list[str]:
    """Fiction docs interleaved with prose (not selected); returns the fiction ids."""
    docs = []
    for i in range(n_fiction):
        docs.append(
            Document(
                f"fic-{i}",
                (
                    f"# The Guild of Varn {i}\n\nThe Guild of Varn {i} was founded in {1800 + i} by Elsa Marr in the town "
                    f"of Quillhaven. Its rival is the Orlan Company. The guild makes brass clocks for Harbor Street."
                ),
                "fiction",
                "test",
                {"difficulty": i / 10},
            )
        )
        docs.append(
            Document(f"prose-{i}", f"Plain prose number {i} about nothing in particular.", "prose", "test")
        )
    with ShardWriter(directory, "part", docs_per_shard=per_shard) as w:
        w.write_all(docs)
    write_manifest(directory, w.shards)
    return [d.id for d in docs if d.domain == "fiction"]


def lenient_augment(**kw: object) -> AugmentConfig:
    """Small plans; quality lenient enough for a random model's text (quality is tested on its own)."""
    cfg = {
        "temperature": 0.8,
        "repetition_penalty": 1.0,
        "entigraph": {
            "select": {"domains": ["fiction"]},
            "pairs": 2,
            "triples": 1,
            "max_tokens": 12,
            "doc_token_budget": 36,
            "entity_tokens": 16,
            "json_attempts": 2,
        },
        "thoughts": {"select": {"domains": ["fiction"], "max_docs": 4}, "max_tokens": 12},
        "quality": {
            "min_words": 1,
            "truncated": "keep",
            "max_dup_ngram_frac": 1.0,
            "min_unique_word_frac": 0.0,
        },
    }
    cfg.update(kw)
    return AugmentConfig.model_validate(cfg)


def run(job: AugmentJob, docs: Path, out: Path) -> dict:
    return augment(job, docs, out / "docs", out / "rejected", LocalExecutor(1))


def digest(out: Path) -> tuple[str, str]:
    return read_manifest(out / "docs")["sha256"], read_manifest(out / "rejected")["sha256"]


def rows(path: Path) -> list[dict]:
    return [r for b in iter_batches(path) for r in b.to_pylist()]


def assert_accounted(out: Path, selected: set[str], stats: dict) -> None:
    kept, rejected = list(iter_documents(out / "docs")), rows(out / "rejected")
    assert stats["in"] == stats["kept"] + stats["rejected"] == len(kept) + len(rejected)
    ended = {d.meta["source_id"] for d in kept} | {json.loads(r["meta"])["source_id"] for r in rejected}
    assert ended == selected  # every selected document is augmented or quarantined, none lost
    assert all(d.domain == "synthetic" and d.meta["model"] for d in kept)
    assert len({d.id for d in kept} | {r["id"] for r in rejected}) == len(kept) + len(
        rejected
    )  # no duplicates


# ------------------------------------------------------------------------------------ fault server
def test_faulty_server_every_doc_augmented_or_quarantined(tmp_path: Path) -> None:
    docs = tmp_path / "in"
    selected = set(make_docs(docs))
    scenarios = ["ok", "429", "500", "timeout", "garbage", "truncated", "reset", "500!", "garbage!", "ok"]

    assigned: dict[str, str] = {}

    def script(req: dict, attempt: int) -> str:  # new requests take the scenarios in turn
        key = hashlib.sha256(json.dumps(req["messages"]).encode()).hexdigest()
        s = assigned.setdefault(key, scenarios[len(assigned) % len(scenarios)])
        if s.endswith("!"):  # permanent
            return s[:-1]
        return s if attempt == 0 else "ok"

    with FaultServer(script, retry_after="0", hang_s=1.0) as srv:
        llm = LLMConfig(
            backend="http",
            model="fault",
            base_url=srv.url,
            max_retries=2,
            backoff_base_s=0.01,
            backoff_max_s=0.02,
            timeout_s=0.5,
            concurrency=4,
            cache=str(tmp_path / "cache.sqlite"),
        )
        job = AugmentJob(llm=llm, augment=lenient_augment(), seed=3)
        stats = run(job, docs, tmp_path / "out")
        assert_accounted(tmp_path / "out", selected, stats)
        assert max(srv.attempts.values()) <= 3  # bounded: 1 + max_retries
        assert (
            srv.actions["500"] and srv.actions["garbage"] and srv.actions["timeout"] and srv.actions["reset"]
        )
        reasons = stats["by_reason"]
        assert reasons.get("llm_http_500", 0) > 0 and reasons.get("llm_malformed_response", 0) > 0
        for r in rows(tmp_path / "out" / "rejected"):
            if r["reason"] == "llm_malformed_response":
                assert r["raw"] == GARBAGE and r["text"] is None  # the payload is kept for inspection
        # the replies are not JSON, so entities came from the heuristic extractor, and it says so
        kept = list(iter_documents(tmp_path / "out" / "docs"))
        assert {d.meta["entity_source"] for d in kept if d.meta["method"] == "entigraph"} == {"heuristic"}
        assert stats["llm"]["attempts"] > stats["llm"]["requests"] > 0
        # rerun: completed shards are skipped, nothing is sent, output identical
        before, first = srv.requests, digest(tmp_path / "out")
        run(job, docs, tmp_path / "out")
        assert srv.requests == before
        assert digest(tmp_path / "out") == first


# ------------------------------------------------------------------------------- serve-llm process
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def serve_llm(tiny_dir: Path):  # noqa: ANN201
    proc, url = start_serve_llm(tiny_dir, "--batch-size", "8", "--name", "tiny")
    yield url
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_serve_llm_openai_api(serve_llm: str) -> None:
    import httpx

    chat = httpx.post(
        serve_llm + "/chat/completions",
        json={
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5,
            "temperature": 0,
        },
        timeout=30,
    ).json()
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["role"] == "assistant"
    assert chat["usage"]["completion_tokens"] <= 5 and chat["choices"][0]["finish_reason"] in (
        "stop",
        "length",
    )
    comp = httpx.post(
        serve_llm + "/completions", json={"model": "tiny", "prompt": "The guild", "max_tokens": 3}, timeout=30
    ).json()
    assert comp["object"] == "text_completion" and isinstance(comp["choices"][0]["text"], str)
    bad = httpx.post(serve_llm + "/chat/completions", json={"messages": "nope"}, timeout=30)
    assert bad.status_code == 400 and "messages" in bad.json()["error"]["message"]
    assert httpx.get(serve_llm + "/models", timeout=10).json()["data"][0]["id"] == "tiny"


def test_augment_via_serve_llm_second_run_is_served_from_cache(serve_llm: str, tmp_path: Path) -> None:
    docs = tmp_path / "in"
    selected = set(make_docs(docs))
    llm = LLMConfig(
        backend="http", model="tiny", base_url=serve_llm, concurrency=8, cache=str(tmp_path / "c.sqlite")
    )
    job = AugmentJob(llm=llm, augment=lenient_augment(), seed=5)
    n0 = server_stats(serve_llm)["requests"]
    stats = run(job, docs, tmp_path / "out")
    s1 = server_stats(serve_llm)
    sent = s1["requests"] - n0
    assert sent == stats["llm"]["requests"] > 0 and stats["kept"] > 0
    assert s1["max_batch"] > 1  # concurrent requests were batched by the server
    assert_accounted(tmp_path / "out", selected, stats)
    kept = list(iter_documents(tmp_path / "out" / "docs"))
    tpt = [d for d in kept if d.meta["method"] == "tpt"]
    assert len(tpt) == 4 and all("\n\n<think>\n" in d.text for d in tpt)
    sources = {d.id: d.text for d in iter_documents(docs)}
    assert all(d.text.startswith(sources[d.meta["source_id"]]) for d in tpt)
    eg = [d for d in kept if d.meta["method"] == "entigraph"]
    assert eg and all(set(d.meta["entities"]) <= set(d.meta["doc_entities"]) for d in eg)
    first = digest(tmp_path / "out")
    # wipe outputs and resume markers: the work is redone, but every response comes from the cache
    shutil.rmtree(tmp_path / "out")
    stats2 = run(job, docs, tmp_path / "out")
    assert server_stats(serve_llm)["requests"] == s1["requests"]  # zero requests on the second run
    assert stats2["llm_this_run"]["requests"] == 0 and stats2["llm_this_run"]["cache_hits"] == sent
    assert digest(tmp_path / "out") == first


# ------------------------------------------------------------------------------------------ kill -9
def _stage_cmd(docs: Path, out: Path, params: Path) -> list[str]:
    return stage_cmd("augment", params, out / "m.json", docs=docs, out=out / "docs", rejected=out / "rejected")


def _params(path: Path, tiny: Path, cache: Path) -> Path:
    p = {
        "run": {"seed": 9},
        "ingest": {"sources": [{"uri": "unused", "domain": "x"}]},
        "llm": {
            "backend": "embedded",
            "model": str(tiny),
            "threads": 1,
            "batch_size": 4,
            "cache": str(cache),
        },
        "augment": lenient_augment(
            thoughts={"select": {"domains": ["fiction"]}, "max_tokens": 24}
        ).model_dump(),
    }
    path.write_text(yaml.safe_dump(p))
    return path


@pytest.mark.e2e
def test_kill_9_mid_stage_then_rerun_gives_identical_output(tiny_dir: Path, tmp_path: Path) -> None:
    docs = tmp_path / "in"
    make_docs(docs, n_fiction=12, per_shard=2)  # 12 shards, one fiction doc each
    n_units = len(read_manifest(docs)["shards"])
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}"}
    ref = tmp_path / "ref"  # the uninterrupted reference: the stage entry in this process (one start-up less)
    run_stage(
        "augment",
        by_name()["augment"].entry,
        {"docs": str(docs), "out": str(ref / "docs"), "rejected": str(ref / "rejected")},
        str(_params(tmp_path / "a.yaml", tiny_dir, tmp_path / "a.sqlite")),
        str(ref / "m.json"),
    )
    out = tmp_path / "killed"
    params = _params(tmp_path / "b.yaml", tiny_dir, tmp_path / "b.sqlite")
    proc = subprocess.Popen(
        _stage_cmd(docs, out, params), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    state = out / ".state" / "docs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(state.glob("*.json"))) < 2 and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(state.glob("*.json")))
    assert 1 <= done < n_units, f"kill landed after {done}/{n_units} shards"
    subprocess.run(_stage_cmd(docs, out, params), cwd=ROOT, env=env, check=True, capture_output=True)
    assert digest(out) == digest(ref)
    assert (
        json.loads((out / "m.json").read_text())["llm_this_run"]["requests"]
        < json.loads((ref / "m.json").read_text())["llm"]["requests"]
    )  # the rerun did not redo finished shards


# ----------------------------------------------------------------------------------------- select
def test_selection_quota_spans_shards_and_scores(tmp_path: Path) -> None:
    docs = tmp_path / "in"
    make_docs(docs, n_fiction=6, per_shard=3)  # shards: [f0 p0 f1] [p1 f2 p2] [f3 p3 f4] [p4 f5 p5]
    cfg = lenient_augment(
        entigraph={"select": {"domains": ["fiction"], "max_docs": 3}},
        thoughts={"select": {"domains": [], "score_field": "difficulty", "min_score": 0.35}},
    )
    quotas = [u for _, u in plan_units(docs, cfg)]
    # entigraph: first 3 fiction docs = 2 in shard 0, 1 in shard 1; thoughts: difficulty >= 0.35 = f4, f5
    assert [(q[1], q[2]) for q in quotas] == [(2, 0), (1, 0), (0, 1), (0, 1)]
