"""MinHash dedup: lmpipe's vectorised signatures + LSH vs datasketch on the same texts, in the same run.

Both sides get the same normalised word 5-gram shingles and the same LSH shape (14 bands x 8 rows, 112
permutations). Measured: signature docs/s and MB/s (normalising and shingling included), LSH bucketing
(insert + query) docs/s, and the agreement of the candidate pairs each finds, plus each side's recall of
pairs whose exact shingle Jaccard is >= 0.8 (computed with Python sets).

    python bench/dedup_part.py            # ../shared/data text (+ planted near copies) -> bench/results/dedup.json

``bench_dedup(texts)`` is importable (the filter+dedup benchmark reuses it). Needs ``pip install lmpipe[bench]``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import require_shared, write_result  # noqa: E402

from lmpipe.config import DedupConfig  # noqa: E402
from lmpipe.dedup import MinHasher, band_keys, normalize, shingle_hashes  # noqa: E402


def _pairs_from_keys(keys: np.ndarray) -> set[tuple[int, int]]:
    """Every pair of documents sharing a bucket key in any band (all pairs, like a full LSH query)."""
    pairs: set[tuple[int, int]] = set()
    for b in range(keys.shape[1]):
        order = np.argsort(keys[:, b], kind="stable")
        k = keys[order, b]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        ends = np.r_[starts[1:], len(k)]
        for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1], strict=True):
            members = sorted(order[s:e].tolist())
            pairs.update((members[i], members[j]) for i in range(len(members)) for j in range(i + 1, len(members)))
    return pairs


def bench_dedup(texts: list[str], cfg: DedupConfig | None = None) -> dict:
    from datasketch import MinHash, MinHashLSH

    cfg = cfg or DedupConfig(shingle_size=5, bands=14, rows=8)
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    n = len(texts)

    # ---- ours: normalise, shingle, sign (one process, batches like the stage)
    t0 = time.perf_counter()
    hasher = MinHasher(cfg.num_perm, cfg.seed, cfg.chunk_shingles)
    sigs = []
    for i in range(0, n, cfg.batch_docs):
        words = [normalize(t, cfg.normalize).split() for t in texts[i : i + cfg.batch_docs]]
        sigs.append(hasher.signatures(*shingle_hashes(words, cfg.shingle_size, cfg.seed)))
    sig = np.concatenate(sigs)
    t_sig = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours_pairs = _pairs_from_keys(band_keys(sig, cfg.bands, cfg.rows))
    t_lsh = time.perf_counter() - t0

    # ---- datasketch: same shingles as strings, MinHash.update_batch, MinHashLSH insert + query
    t0 = time.perf_counter()
    mhs = []
    for t in texts:
        w = normalize(t, cfg.normalize).split()
        grams = {" ".join(w[i : i + cfg.shingle_size]).encode() for i in range(max(1, len(w) - cfg.shingle_size + 1))}
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        m.update_batch(list(grams))
        mhs.append(m)
    t_ds_sig = time.perf_counter() - t0
    t0 = time.perf_counter()
    lsh = MinHashLSH(num_perm=cfg.num_perm, params=(cfg.bands, cfg.rows))
    for i, m in enumerate(mhs):
        lsh.insert(i, m)
    ds_pairs = {(min(i, j), max(i, j)) for i, m in enumerate(mhs) for j in lsh.query(m) if j != i}
    t_ds_lsh = time.perf_counter() - t0

    # ---- ground truth for the pairs either side proposes, plus exact near-dups among them
    def grams(t: str) -> set[str]:
        w = normalize(t, cfg.normalize).split()
        return {" ".join(w[i : i + cfg.shingle_size]) for i in range(max(1, len(w) - cfg.shingle_size + 1))}

    proposed = ours_pairs | ds_pairs
    cache: dict[int, set[str]] = {}
    true_j = {}
    for a, b in proposed:
        ga, gb = cache.setdefault(a, grams(texts[a])), cache.setdefault(b, grams(texts[b]))
        true_j[(a, b)] = len(ga & gb) / len(ga | gb)
    high = {p for p, j in true_j.items() if j >= 0.8}

    def rate(docs: int, secs: float) -> dict:
        return {"seconds": round(secs, 3), "docs_per_s": round(docs / secs, 1), "mb_per_s": round(mb / secs, 3)}

    return {
        "docs": n, "mb": round(mb, 3), "num_perm": cfg.num_perm, "bands": cfg.bands, "rows": cfg.rows,
        "shingle_size": cfg.shingle_size,
        "lmpipe": {"signatures": rate(n, t_sig), "lsh": rate(n, t_lsh), "candidate_pairs": len(ours_pairs)},
        "datasketch": {"signatures": rate(n, t_ds_sig), "lsh": rate(n, t_ds_lsh), "candidate_pairs": len(ds_pairs)},
        "speedup_signatures": round(t_ds_sig / t_sig, 2),
        "speedup_lsh": round(t_ds_lsh / t_lsh, 2) if t_lsh else None,
        "pair_agreement": round(len(ours_pairs & ds_pairs) / len(proposed), 4) if proposed else 1.0,
        "pairs_jaccard_ge_0.8": len(high),
        "recall_jaccard_ge_0.8": {"lmpipe": round(len(high & ours_pairs) / len(high), 4) if high else 1.0,
                                   "datasketch": round(len(high & ds_pairs) / len(high), 4) if high else 1.0},
    }


def shared_texts(copies: float = 0.05, seed: int = 0) -> list[str]:
    """WikiText-2 paragraphs, GSM8K records and SymPy files, plus lightly edited copies of a few of them."""
    data = require_shared()
    texts = [ln.strip() for f in sorted((data / "wikitext-2").glob("*.txt"))
             for ln in f.read_text(encoding="utf-8").splitlines() if len(ln.split()) >= 20]
    for rel in ("domains/math/gsm8k_train.jsonl", "domains/code/sympy_python.jsonl"):
        texts += [json.loads(line)["text"] for line in (data / rel).read_text(encoding="utf-8").split("\n") if line]
    rng = random.Random(seed)
    for t in rng.sample(texts, int(copies * len(texts))):
        words = t.split()
        for i in rng.sample(range(len(words)), max(1, len(words) // 50)):
            words[i] = rng.choice(["the", "a", "of"])
        texts.append(" ".join(words))
    return texts


if __name__ == "__main__":
    texts = shared_texts()
    write_result("dedup", {"input": "wikitext-2 paragraphs + gsm8k + sympy, 5 % edited copies", **bench_dedup(texts)})
