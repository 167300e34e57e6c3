"""MinHash dedup: lmpipe's vectorised signatures + LSH vs datasketch on its fast path, same texts, same run.

Both sides get the same normalised word 5-gram shingles and the same LSH shape (14 bands x 8 rows, 112
permutations). datasketch runs on its documented fast path: ``MinHash.bulk`` (permutations built once and
shared by every document), once with its default SHA-1 shingle hash and once with ``xxh32`` (the fastest hash
it takes; lmpipe hashes with xxhash too), and ``MinHashLSH.insertion_session`` for the inserts. Measured:
signature docs/s (normalising and shingling included, as both need them), LSH bucketing (insert + query)
docs/s, agreement of the candidate pairs, and each side's recall of pairs whose exact shingle Jaccard is
>= 0.8 (computed with Python sets).

    python bench/dedup_part.py [--docs 4000]   # ../shared/data text (+ planted near copies) -> results/dedup.json

Needs ``pip install -e '.[bench]'`` (``make bench`` installs it).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, rate, require_shared, table, write_result  # noqa: E402

from lmpipe.dedup.config import DedupConfig  # noqa: E402
from lmpipe.dedup.exact import normalize  # noqa: E402
from lmpipe.dedup.minhash import MinHasher, band_keys, shingle_hashes  # noqa: E402


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
            pairs.update(
                (members[i], members[j]) for i in range(len(members)) for j in range(i + 1, len(members))
            )
    return pairs


def _grams(text: str, cfg: DedupConfig) -> set[str]:
    w = normalize(text, cfg.normalize).split()
    return {" ".join(w[i : i + cfg.shingle_size]) for i in range(max(1, len(w) - cfg.shingle_size + 1))}


def bench_dedup(texts: list[str], cfg: DedupConfig | None = None) -> dict:
    import xxhash
    from datasketch import MinHash, MinHashLSH

    cfg = cfg or DedupConfig(shingle_size=5, bands=14, rows=8)
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    n = len(texts)

    def ours_sig() -> np.ndarray:  # normalise, shingle, sign in batches, as the stage does
        hasher = MinHasher(cfg.num_perm, cfg.seed, cfg.chunk_shingles)
        sigs = []
        for i in range(0, n, cfg.batch_docs):
            norm = [normalize(t, cfg.normalize) for t in texts[i : i + cfg.batch_docs]]
            sigs.append(hasher.signatures(*shingle_hashes(norm, cfg.shingle_size, cfg.seed)))
        return np.concatenate(sigs)

    def ds_sig(hashfunc=None) -> list:  # noqa: ANN001
        kw = {"hashfunc": hashfunc} if hashfunc else {}
        shingles = ([g.encode() for g in _grams(t, cfg)] for t in texts)
        return MinHash.bulk(shingles, num_perm=cfg.num_perm, seed=cfg.seed, **kw)

    sig_secs, sig_out = alternate(
        {
            "lmpipe MinHasher": ours_sig,
            "datasketch MinHash.bulk (sha1)": ds_sig,
            "datasketch MinHash.bulk (xxh32)": lambda: ds_sig(xxhash.xxh32_intdigest),
        }
    )
    sig, mhs = sig_out["lmpipe MinHasher"], sig_out["datasketch MinHash.bulk (xxh32)"]

    def ours_lsh() -> set:
        return _pairs_from_keys(band_keys(sig, cfg.bands, cfg.rows))

    def ds_lsh() -> set:
        lsh = MinHashLSH(num_perm=cfg.num_perm, params=(cfg.bands, cfg.rows))
        with lsh.insertion_session() as session:  # its bulk-insert path
            for i, m in enumerate(mhs):
                session.insert(i, m)
        return {(min(i, j), max(i, j)) for i, m in enumerate(mhs) for j in lsh.query(m) if j != i}

    lsh_secs, lsh_out = alternate({"lmpipe band keys": ours_lsh, "datasketch MinHashLSH": ds_lsh})
    ours_pairs, ds_pairs = lsh_out["lmpipe band keys"], lsh_out["datasketch MinHashLSH"]

    # ground truth for the pairs either side proposes
    proposed = ours_pairs | ds_pairs
    cache: dict[int, set[str]] = {}
    high = set()
    for a, b in proposed:
        ga, gb = cache.setdefault(a, _grams(texts[a], cfg)), cache.setdefault(b, _grams(texts[b], cfg))
        if len(ga & gb) / len(ga | gb) >= 0.8:
            high.add((a, b))

    def recall(pairs: set) -> float:
        return round(len(high & pairs) / len(high), 4) if high else 1.0

    sig_rows = {k: {"docs_per_s": rate(n, v), "mb_per_s": rate(mb, v, 3)} for k, v in sig_secs.items()}
    lsh_rows = {k: {"docs_per_s": rate(n, v)} for k, v in lsh_secs.items()}
    return {
        "input": {
            "docs": n,
            "mb": round(mb, 3),
            "num_perm": cfg.num_perm,
            "bands": cfg.bands,
            "rows": cfg.rows,
            "shingle_size": cfg.shingle_size,
        },
        "tables": [
            table(
                "MinHash signatures (normalise + shingle + sign)",
                "docs_per_s",
                sig_rows,
                ours=["lmpipe MinHasher"],
                peers=["datasketch MinHash.bulk (sha1)", "datasketch MinHash.bulk (xxh32)"],
            ),
            table(
                "LSH bucketing (insert + query all)",
                "docs_per_s",
                lsh_rows,
                ours=["lmpipe band keys"],
                peers=["datasketch MinHashLSH"],
            ),
        ],
        "checks": {
            "candidate_pairs": {"lmpipe": len(ours_pairs), "datasketch": len(ds_pairs)},
            "pair_agreement": round(len(ours_pairs & ds_pairs) / len(proposed), 4) if proposed else 1.0,
            "pairs_jaccard_ge_0.8": len(high),
            "recall_jaccard_ge_0.8": {"lmpipe": recall(ours_pairs), "datasketch": recall(ds_pairs)},
        },
    }


def shared_texts(docs: int, copies: float = 0.05, seed: int = 0, planted: list | None = None) -> list[str]:
    """WikiText-2 paragraphs, GSM8K records and SymPy files (``docs`` of them, sampled across the three), plus
    lightly edited copies of ``copies`` of them (the near duplicates to find); ``planted`` (if given) receives
    the ``(original, copy)`` index pairs."""
    data = require_shared()
    texts = [
        ln.strip()
        for f in sorted((data / "wikitext-2").glob("*.txt"))
        for ln in f.read_text(encoding="utf-8").splitlines()
        if len(ln.split()) >= 20
    ]
    for rel in ("domains/math/gsm8k_train.jsonl", "domains/code/sympy_python.jsonl"):
        texts += [
            json.loads(line)["text"] for line in (data / rel).read_text(encoding="utf-8").split("\n") if line
        ]
    rng = random.Random(seed)
    if docs < len(texts):
        texts = rng.sample(texts, docs)
    for k in rng.sample(range(len(texts)), int(copies * len(texts))):
        words = texts[k].split()
        for i in rng.sample(range(len(words)), max(1, len(words) // 50)):
            words[i] = rng.choice(["the", "a", "of"])
        texts.append(" ".join(words))
        if planted is not None:
            planted.append((k, len(texts) - 1))
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--docs",
        type=int,
        default=4000,
        help="documents sampled before adding near copies (all ~11,200 available: --docs 0)",
    )
    args = ap.parse_args()
    res = bench_dedup(shared_texts(args.docs or 10**9))
    res["input"] = {
        "source": "wikitext-2 paragraphs + gsm8k + sympy files, 5 % edited copies",
        "docs_flag": args.docs,
        **res["input"],
    }
    write_result("dedup", **res)


if __name__ == "__main__":
    main()
