"""Dedup: MinHash against exact Jaccard, union-find against BFS, planted duplicates in real and demo text."""

from __future__ import annotations

import itertools
import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np

from lmpipe.config import load_params
from lmpipe.dedup.config import DedupConfig, NormalizeConfig
from lmpipe.dedup.exact import normalize
from lmpipe.dedup.minhash import MinHasher, candidate_probability, estimate_jaccard, shingle_hashes
from lmpipe.dedup.passes import dedup
from lmpipe.dedup.unionfind import UnionFind
from lmpipe.demo.config import DemoConfig
from lmpipe.documents import Document, ShardWriter, iter_documents, read_manifest, write_manifest
from lmpipe.executors import LocalExecutor
from lmpipe.ingest_config import IngestConfig, SourceConfig


def ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))} if words else set()


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def write_dataset(path: Path, docs: list[Document], per_shard: int) -> None:
    with ShardWriter(path, "part", docs_per_shard=per_shard) as w:
        w.write_all(docs)
    write_manifest(path, w.shards)


def rejected_rows(path: Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    rows = {}
    for s in read_manifest(path)["shards"]:
        for r in pq.read_table(path / s["path"]).to_pylist():
            rows[r["id"]] = r
    return rows


# ---------------------------------------------------------------------------------------- units
def test_normalize_steps() -> None:
    cfg = NormalizeConfig()
    assert normalize("  Hello,\tWORLD!!  It's 42 \n", cfg) == "hello world it s 42"
    assert normalize("ﬁle Ｆｕｌｌ", cfg) == "file full"  # NFKC folds the ligature and full-width letters
    assert normalize("v2 has 3 parts", NormalizeConfig(strip_digits=True)) == "v has parts"
    assert normalize("A-b", NormalizeConfig(lowercase=False, strip_punctuation=False)) == "A-b"
    assert normalize("?! ...", cfg) == ""


def test_normalize_ascii_fast_path_matches_the_regex_steps() -> None:
    """Every ASCII character, in random strings, under all 16 flag combinations: the ``bytes.translate`` path
    gives what the documented regex steps give (written out here independently)."""
    import re
    import unicodedata

    def steps(t: str, c: NormalizeConfig) -> str:
        t = unicodedata.normalize("NFKC", t) if c.unicode_nfkc else t
        t = t.lower() if c.lowercase else t
        t = re.sub(r"[^\w\s]+", " ", t) if c.strip_punctuation else t
        t = re.sub(r"\d+", "", t) if c.strip_digits else t
        return " ".join(t.split())

    rng = random.Random(1)
    texts = ["".join(rng.choice([chr(c) for c in range(128)]) for _ in range(300)) for _ in range(20)]
    for flags in itertools.product([False, True], repeat=4):
        names = ("unicode_nfkc", "lowercase", "strip_punctuation", "strip_digits")
        c = NormalizeConfig(**dict(zip(names, flags, strict=True)))
        for t in texts:
            assert t.isascii() and normalize(t, c) == steps(t, c), (flags, t)


def test_shingles_count_distinct_ngrams() -> None:
    rng = random.Random(3)
    docs = [[rng.choice("abcdefgh") for _ in range(k)] for k in (0, 1, 3, 5, 6, 40, 200)]
    hashes, offsets = shingle_hashes([" ".join(w) for w in docs], 5)
    for d, words in enumerate(docs):
        got = hashes[offsets[d] : offsets[d + 1]]
        assert len(got) == (max(len(words) - 4, 1) if words else 0)
        assert len(set(got.tolist())) == len(ngrams(words, 5))  # same n-grams ↔ same hash, no collisions


NUM_PERM = 256


def test_minhash_estimates_exact_jaccard() -> None:
    """Estimates of 256 permutations are unbiased, and their spread is that of 256 independent draws.

    Each permutation's minima agree with probability J, so the estimate is a binomial(num_perm, J) proportion
    with standard error sqrt(J(1-J)/num_perm). Over 200 pairs the squared standardised errors average ~1;
    with half the effective permutations they average ~2 (the check would fail), so the spread is tested
    against num_perm, not just bounded loosely.
    """
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)]
    hasher = MinHasher(NUM_PERM, seed=5)
    pairs = []
    for edits in (0, 3, 10, 25, 50, 100):
        for _ in range(40 if edits else 3):
            base = [rng.choice(vocab) for _ in range(300)]
            other = list(base)
            for i in rng.sample(range(300), edits):
                other[i] = rng.choice(vocab)
            pairs.append((base, other))
    docs = [w for pair in pairs for w in pair]
    sig = hasher.signatures(*shingle_hashes([" ".join(w) for w in docs], 5))
    assert sig.shape == (len(docs), NUM_PERM)
    errors, z = [], []
    levels = set()
    for k, (a, b) in enumerate(pairs):
        true = jaccard(ngrams(a, 5), ngrams(b, 5))
        est = float(estimate_jaccard(sig[2 * k], sig[2 * k + 1]))
        if true == 1.0:
            assert est == 1.0
            continue
        levels.add(round(true, 1))
        se = np.sqrt(true * (1 - true) / NUM_PERM)
        assert abs(est - true) <= 4.5 * se, (true, est)
        errors.append(est - true)
        z.append((est - true) / se)
    assert len(levels) >= 5  # several Jaccard levels were actually covered (0.03 .. 0.93)
    assert abs(np.mean(errors)) < 0.01  # unbiased
    spread = float(np.mean(np.square(z)))  # ~1 for num_perm independent permutations; ~2 for half as many
    assert 0.75 < spread < 1.35, spread


def test_minhash_is_deterministic_and_chunk_independent() -> None:
    docs = [f"doc {i} " .split() + ["word"] * (i % 50) + [str(j) for j in range(i)] for i in range(60)]
    h, off = shingle_hashes([" ".join(w) for w in docs], 3)
    a = MinHasher(64, seed=9, chunk=1 << 15).signatures(h, off)
    b = MinHasher(64, seed=9, chunk=64).signatures(h, off)  # blocks split inside documents
    assert np.array_equal(a, b)
    assert not np.array_equal(a, MinHasher(64, seed=10).signatures(h, off))


def test_candidate_probability_s_curve() -> None:
    assert candidate_probability(1.0, 14, 8) == 1.0
    assert candidate_probability(0.0, 14, 8) == 0.0
    assert candidate_probability(0.85, 14, 8) > 0.95 > 0.05 > candidate_probability(0.4, 14, 8)


def test_unionfind_matches_bfs() -> None:
    rng = np.random.default_rng(1)
    n = 500
    a, b = rng.integers(0, n, 300), rng.integers(0, n, 300)
    uf = UnionFind(n)
    uf.union(a[:150], b[:150])
    uf.union(b[150:], a[150:])  # edge direction and arrival order do not matter
    adj = defaultdict(set)
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        adj[x].add(y)
        adj[y].add(x)
    expected = list(range(n))
    seen = set()
    for start in range(n):  # BFS; a component's root is its smallest member
        if start in seen:
            continue
        comp, todo = {start}, [start]
        while todo:
            for nxt in adj[todo.pop()] - comp:
                comp.add(nxt)
                todo.append(nxt)
        seen |= comp
        for x in comp:
            expected[x] = min(comp)
    assert uf.roots().tolist() == expected


# ------------------------------------------------------------------------------------ the stage
def test_exact_near_and_keep_rules(tmp_path: Path) -> None:
    rng = random.Random(2)
    vocab = [f"tok{i}" for i in range(2000)]
    base = " ".join(rng.choice(vocab) for _ in range(400))
    words = base.split()
    words[200] = "changed"  # one substitution: 5-gram Jaccard = 391/401 ≈ 0.975
    docs = [
        Document("a", base, "prose", "t"),
        Document("other", " ".join(rng.choice(vocab) for _ in range(400)), "prose", "t"),
        Document("a_shouty", base.upper().replace(" ", " ,  "), "prose", "t"),  # same after normalising
        Document("a_near", " ".join(words) + " extra tail words here", "prose", "t"),
        Document("blank", "?!?", "web", "t"),  # nothing to compare: never a duplicate
        Document("blank2", "...", "web", "t"),
    ]
    write_dataset(tmp_path / "in", docs, per_shard=2)  # 3 shards: clusters span shards
    cfg = DedupConfig(verify="exact")
    stats = dedup(cfg, tmp_path / "in", tmp_path / "out", tmp_path / "rej", LocalExecutor(1))
    assert stats["in"] == 6 and stats["kept"] + stats["rejected"] == 6
    assert [d.id for d in iter_documents(tmp_path / "out")] == ["a", "other", "blank", "blank2"]
    rej = rejected_rows(tmp_path / "rej")
    assert rej["a_shouty"]["reason"] == "exact_dup" and rej["a_shouty"]["detail"] == "duplicate of a"
    assert rej["a_near"]["reason"] == "near_dup" and rej["a_near"]["detail"].startswith("duplicate of a (")
    assert stats["cluster_sizes"] == {"3": 1} and stats["empty_docs"] == 2

    longest = dedup(cfg.model_copy(update={"keep": "longest"}), tmp_path / "in", tmp_path / "out2",
                    tmp_path / "rej2", LocalExecutor(1))
    assert longest["kept"] == 4
    assert {d.id for d in iter_documents(tmp_path / "out2")} == {"a_shouty", "other", "blank", "blank2"}
    assert rejected_rows(tmp_path / "rej2")["a"]["detail"] == "duplicate of a_shouty"


def _paragraphs(path: Path, min_words: int = 60) -> list[str]:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if len(ln.split()) >= min_words and not ln.startswith("=")]


def test_real_near_duplicates_found_and_distinct_docs_kept(tmp_path: Path, shared_data: Path) -> None:
    """Edited copies of WikiText-2 paragraphs and GSM8K records are found; the distinct originals are not merged."""
    rng = random.Random(7)
    paras = _paragraphs(shared_data / "wikitext-2" / "valid.txt")[:250]
    gsm = [json.loads(line)["text"] for line in
           (shared_data / "domains" / "math" / "gsm8k_train.jsonl").read_text().split("\n")[:250]]
    originals = [Document(f"wiki{i}", t, "prose", "wikitext") for i, t in enumerate(paras)]
    originals += [Document(f"gsm{i}", t, "math", "gsm8k") for i, t in enumerate(gsm)]
    copies = {}
    for doc in rng.sample([d for d in originals if len(d.text.split()) >= 180], 30):
        words = doc.text.split()
        for i in rng.sample(range(len(words)), max(1, len(words) // 150)):  # 0.7 % of the words replaced
            words[i] = rng.choice(["the", "a", "its", "their"])
        cut = len(words) // 50  # and the first 2 % cut off
        copies[f"{doc.id}_copy"] = (doc.id, Document(f"{doc.id}_copy", " ".join(words[cut:]), doc.domain, "edit"))
    docs = originals + [c for _, c in copies.values()]
    rng.shuffle(docs)

    # independent expectation: the planted pairs are near-duplicates by exact 5-gram Jaccard (above 0.9,
    # where 14 x 8 LSH misses a pair with probability < 0.001), and no two originals come near 0.7
    cfg = DedupConfig()
    grams = {d.id: ngrams(normalize(d.text, cfg.normalize).split(), 5) for d in docs}
    for copy_id, (orig, _) in copies.items():
        assert jaccard(grams[copy_id], grams[orig]) > 0.9
    top_distinct = max(jaccard(grams[a.id], grams[b.id]) for a, b in itertools.combinations(originals, 2))
    assert top_distinct < 0.5

    write_dataset(tmp_path / "in", docs, per_shard=97)
    stats = dedup(cfg, tmp_path / "in", tmp_path / "out", tmp_path / "rej", LocalExecutor(1))
    rej = rejected_rows(tmp_path / "rej")
    # each pair loses exactly one member (whichever came later), and that one names the other
    pairs = {frozenset((c, o)) for c, (o, _) in copies.items()}
    found = {frozenset((rid, r["detail"].split()[2])) for rid, r in rej.items()}
    assert found == pairs
    assert all(r["reason"] == "near_dup" for r in rej.values())
    assert stats["kept"] == len(originals)


def test_demo_planted_duplicates_removed(tmp_path: Path, project_root: Path) -> None:
    """With the project's params, each planted exact/near-duplicate group of the demo keeps one document."""
    from lmpipe.demo.corpus import generate
    from lmpipe.ingest import ingest

    demo = DemoConfig(prose_docs=150, code_docs=40, math_docs=60, fiction_entities=8, noise_fraction=0.2)
    generate(demo, 1234, tmp_path / "raw", tmp_path / "eval")
    raw = tmp_path / "raw"
    icfg = IngestConfig(sources=[SourceConfig(uri=str(raw / "prose.jsonl.gz"), domain="prose"),
                                 SourceConfig(uri=str(raw / "fiction" / "*.md"), domain="fiction")])
    ingest(icfg, tmp_path / "ingest", tmp_path / "ingest_rej", LocalExecutor(1))

    cfg = load_params(project_root / "params.yaml").dedup
    stats = dedup(cfg, tmp_path / "ingest", tmp_path / "out", tmp_path / "rej", LocalExecutor(1))
    kept = {d.id for d in iter_documents(tmp_path / "out")}
    groups: dict[str, set[str]] = defaultdict(set)
    labelled = set()
    for d in iter_documents(tmp_path / "ingest"):
        key = d.meta.get("title") or Path(d.source.split("#")[0]).name.replace("-mirror", "")
        groups[key].add(d.id)
        if d.meta.get("noise") in ("exact_dup", "near_dup") or "-mirror" in d.source:
            labelled.add(key)
    assert len(labelled) >= 10
    for key in labelled:
        assert len(groups[key] & kept) == 1, key
    assert stats["by_reason"].get("exact_dup", 0) > 0 and stats["by_reason"].get("near_dup", 0) > 0
