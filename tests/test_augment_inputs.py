"""What reaches ``augment``: never a document the tokenize stage holds out for evaluation; and the baselines of
synthetic CPT on the same selection (``entigraph.mode``: LLM rephrases, or the raw documents themselves)."""

from __future__ import annotations

from pathlib import Path

from lmpipe.documents import iter_documents
from lmpipe.executors import LocalExecutor
from lmpipe.llm.config import LLMConfig
from lmpipe.llm.testing import FaultServer
from lmpipe.synth.augment import AugmentJob, Holdout, augment
from lmpipe.tokenization import tokenize_corpus
from lmpipe.tokenization_config import TokenizeConfig
from tests.test_synth_stage import lenient_augment, make_docs, rows

VAL = 0.25


def _llm(url: str, tmp: Path) -> LLMConfig:
    return LLMConfig(backend="http", model="fault", base_url=url, cache=str(tmp / "cache.sqlite"))


def test_no_heldout_document_reaches_augment(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    fiction = set(make_docs(docs, n_fiction=24, per_shard=7))
    # the held-out set as the tokenize stage itself writes it (data/heldout/docs), not recomputed here
    tokenize_corpus(
        TokenizeConfig(vocab_size=300, val_fraction=VAL),
        docs,
        tmp_path / "tokens",
        tmp_path / "tokenizer",
        tmp_path / "heldout",
        LocalExecutor(1),
    )
    held = {d.id for d in iter_documents(tmp_path / "heldout")} & fiction
    assert 0 < len(held) < len(fiction)
    cfg = lenient_augment(
        entigraph={"mode": "raw"}, thoughts={"select": {"domains": ["fiction"]}, "max_tokens": 12}
    )
    with FaultServer(lambda req, attempt: "ok") as srv:
        job = AugmentJob(llm=_llm(srv.url, tmp_path), augment=cfg, seed=1, holdout=Holdout.of(docs, VAL))
        stats = augment(job, docs, tmp_path / "out" / "docs", tmp_path / "out" / "rejected", LocalExecutor(1))
        assert srv.requests == len(fiction - held)  # one thought per augmented doc, none for a held-out one
    out = list(iter_documents(tmp_path / "out" / "docs"))
    by_method = {m: {d.meta["source_id"] for d in out if d.meta["method"] == m} for m in ("raw", "tpt")}
    assert by_method == {"raw": fiction - held, "tpt": fiction - held}
    assert stats["heldout_skipped"] == {"entigraph": len(held), "thoughts": len(held)}
    # raw-document mode: the synthetic domain holds the documents themselves, byte for byte
    texts = {d.id: d.text for d in iter_documents(docs)}
    assert all(
        d.text == texts[d.meta["source_id"]] and d.domain == "synthetic" for d in out if d.id.endswith("/raw")
    )


def test_rephrase_mode_asks_for_paraphrases_only(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    fiction = make_docs(docs, n_fiction=4, per_shard=4)
    cfg = lenient_augment(
        entigraph={"mode": "rephrase", "rephrases": 3, "rephrase_tokens": 12}, thoughts={"enabled": False}
    )
    with FaultServer(lambda req, attempt: "ok") as srv:
        job = AugmentJob(llm=_llm(srv.url, tmp_path), augment=cfg, seed=1)
        stats = augment(job, docs, tmp_path / "out" / "docs", tmp_path / "out" / "rejected", LocalExecutor(1))
        assert srv.requests == 3 * len(fiction)  # no entity-extraction step
    out = list(iter_documents(tmp_path / "out" / "docs"))
    rejected = rows(tmp_path / "out" / "rejected")
    # the test server answers a prompt with one fixed text, so copies 1 and 2 repeat copy 0: the shared
    # quality checks quarantine them as duplicates (a sampling LLM, seeded per copy, writes different texts)
    assert sorted(d.id for d in out) == sorted(f"{f}/rephrase/00" for f in fiction)
    assert sorted(r["id"] for r in rejected) == sorted(
        f"{f}/rephrase/{k:02d}" for f in fiction for k in (1, 2)
    )
    assert {r["reason"] for r in rejected} == {"duplicate"}
    assert {d.meta["method"] for d in out} == {"rephrase"} and stats["synth"]["kept_rephrase"] == 4
