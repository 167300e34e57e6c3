"""Tokenizer training/reuse, train/held-out split, and packing into per-domain token files."""

from __future__ import annotations

import json
import subprocess
import tracemalloc
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from lmpipe.documents import Document, ShardWriter, iter_documents, read_manifest, write_manifest
from lmpipe.executors import LocalExecutor
from lmpipe.tokenization import tokenize_corpus
from lmpipe.tokenization_config import TokenizeConfig
from lmpipe.tokenizer import token_dtype
from tests.conftest import stage_cmd

EOS = "<|endoftext|>"


def write_docs(directory: Path, docs: list[Document], per_shard: int = 50) -> Path:
    with ShardWriter(directory, "part", docs_per_shard=per_shard) as w:
        w.write_all(docs)
    write_manifest(directory, w.shards)
    return directory


def real_docs(shared: Path, per_domain: int = 60) -> list[Document]:
    """Real text of three domains: Shakespeare/WikiText paragraphs, sympy files, GSM8K problems."""
    prose = [p for p in (shared / "tinyshakespeare/input.txt").read_text().split("\n\n") if p.strip()][:per_domain]
    prose += [p for p in (shared / "wikitext-2/valid.txt").read_text().split("\n \n") if p.strip()][:per_domain]
    code = [json.loads(x)["text"][:4000] for x in (shared / "domains/code/sympy_python.jsonl").open()][:per_domain]
    math = [json.loads(x)["text"] for x in (shared / "domains/math/gsm8k_train.jsonl").open()][:per_domain]
    docs = []
    for domain, texts in (("prose", prose), ("code", code), ("math", math)):
        docs += [Document(f"{domain}-{i}", t, domain, "shared") for i, t in enumerate(texts)]
    return docs


def run(tmp: Path, docs_dir: Path, ex_workers: int = 1, **cfg) -> tuple[dict, Path]:
    cfg.setdefault("vocab_size", 1000)
    out = tmp / "out"
    stats = tokenize_corpus(TokenizeConfig(**cfg), docs_dir, out / "tokens", out / "tokenizer",
                            out / "heldout", LocalExecutor(ex_workers))
    return stats, out


def read_index_stream(tokens: Path, split: str, domain: str) -> np.ndarray:
    index = json.loads((tokens / "index.json").read_text())
    files = index["splits"][split][domain]["files"]
    return np.concatenate([np.fromfile(tokens / f["path"], dtype=index["dtype"]) for f in files])


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, shared_data):
    tmp = tmp_path_factory.mktemp("real")
    docs = real_docs(shared_data)
    # a document that mentions the EOS string must not gain a separator from it
    docs.append(Document("code-eos", f'SEP = "{EOS}"  # GPT-2 style\nprint(SEP)\n', "code", "hand"))
    docs_dir = write_docs(tmp / "docs", docs, per_shard=70)
    stats, out = run(tmp, docs_dir, ex_workers=2, val_fraction=0.1)
    return docs, docs_dir, stats, out


def test_tokenizer_round_trips_real_text(real_run, shared_data):
    docs, _, _, out = real_run
    tok = Tokenizer.from_file(str(out / "tokenizer/tokenizer.json"))
    assert tok.get_vocab_size() == 1000  # the vocab_size param is honoured
    unseen = [
        (shared_data / "wikitext-2/test.txt").read_text()[:20_000],  # never in the training docs
        (shared_data / "tinyshakespeare/input.txt").read_text()[-5_000:],
        "naïve café — 数学 🙂\ttabs\r\nand  double  spaces\n\n\n",
    ]
    for text in [d.text for d in docs] + unseen:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == text
    # BPE really merges: clearly more than one UTF-8 byte per token (a byte tokenizer gives 1.0)
    sample = unseen[1]
    assert len(sample.encode()) / len(tok.encode(sample).ids) > 1.5


def test_autotokenizer_loads_saved_dir(real_run):
    from transformers import AutoTokenizer

    _, _, stats, out = real_run
    d = out / "tokenizer"
    assert {p.name for p in d.iterdir()} >= {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    hf = AutoTokenizer.from_pretrained(str(d))
    index = json.loads((out / "tokens/index.json").read_text())
    assert hf.eos_token == EOS and hf.eos_token_id == index["eos_id"] == stats["tokenizer"]["eos_id"] == 0
    assert hf.pad_token == "<|pad|>" and hf.pad_token_id == 1
    text = "To be, or not to be: that is the question."
    assert hf.decode(hf(text)["input_ids"]) == text
    assert json.loads((d / "special_tokens_map.json").read_text())["eos_token"] == EOS


def test_packing_preserves_every_token_and_separator(real_run):
    docs, docs_dir, stats, out = real_run
    tokens = out / "tokens"
    index = json.loads((tokens / "index.json").read_text())
    assert index["dtype"] == "uint16" and index["vocab_size"] == 1000 and index["tokenizer"].endswith("tokenizer")
    heldout_ids = {d.id for d in iter_documents(out / "heldout")}
    # independent expectation: a fresh tokenizer, one document at a time, EOS appended by hand
    tok = Tokenizer.from_file(str(out / "tokenizer/tokenizer.json"))
    tok.encode_special_tokens = True
    expect: dict[tuple[str, str], list[int]] = defaultdict(list)
    ndocs: dict[tuple[str, str], int] = defaultdict(int)
    for d in iter_documents(docs_dir):  # dataset order = packing order
        key = ("val" if d.id in heldout_ids else "train", d.domain)
        expect[key] += tok.encode(d.text, add_special_tokens=False).ids + [0]
        ndocs[key] += 1
    assert set(expect) == {(s, dom) for s in index["splits"] for dom in index["splits"][s]}
    for (split, domain), ids in expect.items():
        got = read_index_stream(tokens, split, domain)
        np.testing.assert_array_equal(got, np.array(ids, dtype=np.uint16))
        meta = index["splits"][split][domain]
        assert meta["tokens"] == len(ids) == stats[split][domain]["tokens"]
        assert meta["docs"] == ndocs[split, domain] == int((got == 0).sum())  # one EOS per doc, no more
        assert sum(f["tokens"] for f in meta["files"]) == len(ids)
    assert len(index["splits"]["train"]["code"]["files"]) >= 2  # code spans several upstream shards


def test_split_by_id_hash(real_run, tmp_path):
    docs, _, _, out = real_run
    held = read_manifest(out / "heldout")
    assert held["docs"] == sum(v["docs"] for v in json.loads((out / "tokens/index.json").read_text())
                               ["splits"]["val"].values())
    val = {d.id for d in iter_documents(out / "heldout")}
    assert val and val < {d.id for d in docs}
    # the split depends on ids only: reversed order and other shard sizes hold out the same documents
    docs_dir = write_docs(tmp_path / "docs", docs[::-1], per_shard=33)
    _, out2 = run(tmp_path, docs_dir, tokenizer_path=str(out / "tokenizer"), val_fraction=0.1)
    assert {d.id for d in iter_documents(out2 / "heldout")} == val


def test_split_fraction_and_minimum_per_domain(tmp_path):
    docs = [Document(f"big-{i}", f"doc {i} " * 5, "big", "t") for i in range(2000)]
    docs += [Document(f"pair-{i}", f"pair {i}", "pair", "t") for i in range(2)]  # 5 % of 2 rounds to 0
    docs += [Document("solo", "only one", "solo", "t")]
    stats, out = run(tmp_path, write_docs(tmp_path / "docs", docs, per_shard=500), val_fraction=0.05)
    assert stats["val"]["pair"]["docs"] == 1 and stats["train"]["pair"]["docs"] == 1
    assert "solo" not in stats["val"] and stats["train"]["solo"]["docs"] == 1
    n_val = stats["val"]["big"]["docs"]
    assert abs(n_val - 100) < 4 * (2000 * 0.05 * 0.95) ** 0.5  # binomial(2000, 0.05), 4 sigma
    # every domain with >= 2 docs keeps a train doc even when the fraction would take them all
    stats, _ = run(tmp_path / "all", write_docs(tmp_path / "docs2", docs[-3:]), val_fraction=0.99)
    assert stats["train"]["pair"]["docs"] == 1 and stats["val"]["pair"]["docs"] == 1


def test_rerun_reuses_units_and_repairs_damage(tmp_path):
    docs = [Document(f"d{i}", f"Entry {i}: " + "lorem ipsum dolor " * (i % 7 + 1), ["a", "b"][i % 2], "t")
            for i in range(300)]
    docs_dir = write_docs(tmp_path / "docs", docs, per_shard=60)
    _, out = run(tmp_path, docs_dir)
    tokens = out / "tokens"
    files = sorted(tokens.rglob("*.bin"))
    before = {p: p.read_bytes() for p in files}
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    damaged = files[0]
    damaged.write_bytes(damaged.read_bytes()[:10])  # a truncated file, as a killed run could leave
    (tokens / "train" / "a" / ".part-00009.bin.tmp").write_bytes(b"junk")
    stats, _ = run(tmp_path, docs_dir)
    assert stats["tokenizer"]["trained"] is False  # same corpus + params: the tokenizer is reused
    assert {p: p.read_bytes() for p in sorted(tokens.rglob("*.bin"))} == before
    assert not list(tokens.rglob("*.tmp"))
    untouched = [p for p in files if p != damaged and p.parent == damaged.parent]
    assert untouched and all(p.stat().st_mtime_ns == mtimes[p] for p in untouched)
    # a different split redoes the work and leaves no file of the old layout behind
    _, _ = run(tmp_path, docs_dir, val_fraction=0.3)
    index = json.loads((tokens / "index.json").read_text())
    listed = {f["path"] for s in index["splits"].values() for d in s.values() for f in d["files"]}
    assert {p.relative_to(tokens).as_posix() for p in tokens.rglob("*.bin")} == listed


def test_reuse_local_tokenizer_dir(real_run, tmp_path):
    _, docs_dir, _, out = real_run
    stats, out2 = run(tmp_path, docs_dir, tokenizer_path=str(out / "tokenizer"), val_fraction=0.1)
    assert stats["tokenizer"]["vocab_size"] == 1000
    for split in ("train", "val"):
        for domain in ("code", "math", "prose"):
            np.testing.assert_array_equal(read_index_stream(out2 / "tokens", split, domain),
                                          read_index_stream(out / "tokens", split, domain))
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        run(tmp_path / "bad", docs_dir, tokenizer_path=str(tmp_path))


def test_dtype_by_vocab_size():
    assert token_dtype(65535) == np.uint16
    assert token_dtype(65536) == np.uint32


def test_memory_stays_bounded(tmp_path, real_run):
    _, _, _, out = real_run
    rng = np.random.default_rng(0)
    words = np.array(["the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he", "this", "are", "or"])
    docs = [Document(f"m{i}", " ".join(rng.choice(words, 400)), "prose", "t") for i in range(2500)]
    docs_dir = write_docs(tmp_path / "docs", docs, per_shard=2500)  # ~3.6 MB of text, one shard
    corpus_bytes = read_manifest(docs_dir)["text_bytes"]
    del docs
    tracemalloc.start()
    try:
        stats, _ = run(tmp_path, docs_dir, tokenizer_path=str(out / "tokenizer"), batch_docs=32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats["train"]["prose"]["docs"] + stats["val"]["prose"]["docs"] == 2500
    # holding the corpus (or all its ids) would need more than the whole text; streaming needs a batch
    assert corpus_bytes > 3_000_000 and peak < corpus_bytes / 2, (peak, corpus_bytes)


def test_stage_cli(tmp_path, project_root):
    docs = [Document(f"d{i}", f"Line {i} of a tiny corpus.\n" * 3, ["x", "y"][i % 2], "t") for i in range(40)]
    docs_dir = write_docs(tmp_path / "docs", docs)
    params = tmp_path / "params.yaml"
    params.write_text(
        "run: {executor: {kind: local, workers: 1}}\n"
        "ingest: {sources: [{uri: x, domain: x}]}\n"
        "tokenize: {vocab_size: 300, val_fraction: 0.1}\n"
    )
    cmd = stage_cmd("tokenize", params, tmp_path / "m.json", docs=docs_dir, tokens=tmp_path / "t",
                    tokenizer=tmp_path / "tok", heldout=tmp_path / "held")
    subprocess.run(cmd, cwd=project_root, check=True, capture_output=True)
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["train"]["x"]["docs"] + m["val"]["x"]["docs"] == 20
    assert m["tokens"] == m["train_tokens"] + m["val_tokens"] > 0 and m["seconds"] >= 0


@pytest.mark.e2e
def test_kill_9_then_rerun_matches_uninterrupted(tmp_path, shared_data, project_root):
    import os
    import signal
    import time

    lines = (shared_data / "domains/math/gsm8k_train.jsonl").read_text().rstrip("\n").split("\n")
    docs = [Document(f"m{i}", json.loads(x)["text"], ["a", "b"][i % 2], "gsm8k") for i, x in enumerate(lines)]
    docs_dir = write_docs(tmp_path / "docs", docs, per_shard=600)  # 13 units
    params = tmp_path / "params.yaml"
    params.write_text("run: {executor: {kind: local, workers: 1}}\ningest: {sources: [{uri: x, domain: x}]}\n"
                      "tokenize: {vocab_size: 2000, batch_docs: 64}\n")

    def cmd(out: Path) -> list[str]:
        return stage_cmd("tokenize", params, out / "m.json", docs=docs_dir, tokens=out / "tokens",
                         tokenizer=out / "tok", heldout=out / "held")

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed), cwd=project_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / ".state" / "tokens"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(state.glob("0*.json"))) < 3:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 3 <= len(list(state.glob("0*.json"))) < 13, "the run should be killed mid-packing"
    subprocess.run(cmd(killed), cwd=project_root, check=True, capture_output=True)
    fresh = tmp_path / "fresh"
    subprocess.run(cmd(fresh), cwd=project_root, check=True, capture_output=True)
    for sub in ("tokens", "tok", "held"):
        a = {p.relative_to(killed / sub): p.read_bytes() for p in (killed / sub).rglob("*") if p.is_file()}
        b = {p.relative_to(fresh / sub): p.read_bytes() for p in (fresh / sub).rglob("*") if p.is_file()}
        if sub == "tokens":  # index.json names its own tokenizer path
            a.pop(Path("index.json")), b.pop(Path("index.json"))
        assert a == b, sub
    assert json.loads((killed / "m.json").read_text())["tokenizer"]["trained"] is False  # reused after the kill


def test_tokenizer_learns_from_train_split_only(tmp_path):
    letters = "bcdfghjklmnpqrstvwxz"
    words = ["".join(letters[(i * 7 + k * 3) % 20] for k in range(5)) + letters[i % 20] + letters[i // 20]
             for i in range(60)]  # 60 distinct nonsense words, one per document
    docs = [Document(f"w{i}", (" " + w) * 50, "x", "t") for i, w in enumerate(words)]
    _, out = run(tmp_path, write_docs(tmp_path / "docs", docs), val_fraction=0.2)
    val = {d.id for d in iter_documents(out / "heldout")}
    assert 3 <= len(val) <= 25
    tok = Tokenizer.from_file(str(out / "tokenizer/tokenizer.json"))
    for i, w in enumerate(words):
        n = len(tok.encode(" " + w).ids)
        assert (n > 1) if f"w{i}" in val else (n == 1), (w, n)  # held-out words were never merged
