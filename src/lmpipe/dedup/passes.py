"""Dedup of a sharded dataset in three passes, with memory bounded by a shard, not by the corpus.

1. **Sign** (shard-parallel through the executor): each input shard's texts are normalised, hashed for
   exact matching and MinHashed; per shard the signatures, the sorted exact keys and, per LSH band, the
   sorted ``(bucket key, row)`` pairs are spilled to ``.npy`` files in a work directory named by the shard's
   hash and the signing params. A finished shard's directory appears atomically, so a rerun skips it.
2. **Cluster** (one process): per band, the spilled files are memory-mapped and read one bucket-key range at
   a time (sized by ``bucket_mib``), so no pass holds all of a band. Equal exact keys, and LSH candidates
   that pass verification, are merged with a union-find over global row numbers (inputs shards in order).
   Each cluster keeps one document (the first in dataset order, or the longest); the decisions for each
   shard (row → reason + detail naming the kept document) go to a small Parquet file.
3. **Write**: ``lmpipe.sharded.run_stage`` over the input shards applies the decisions, so the output is
   resumable after a crash, byte-identical on rerun, and conserves counts (in = kept + rejected).

Memory in pass 2: three int64 arrays of one entry per document, plus the candidate pairs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from lmpipe.dedup.config import DedupConfig
from lmpipe.dedup.exact import exact_keys, normalize
from lmpipe.dedup.minhash import MinHasher, band_keys, estimate_jaccard, shingle_hashes
from lmpipe.dedup.unionfind import UnionFind
from lmpipe.documents import Document, Rejected, iter_batches, iter_documents, read_manifest
from lmpipe.executors import Executor
from lmpipe.sharded import fingerprint, run_stage

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO

EXACT, NEAR = "exact_dup", "near_dup"
DONE = "done.json"


# ------------------------------------------------------------------------------------ pass 1: sign
@dataclass
class SignTask:
    shard: str
    out_dir: str
    cfg: DedupConfig


def _sign_params(cfg: DedupConfig) -> dict:
    """The params that change what pass 1 writes (others only change clustering or writing)."""
    return cfg.model_dump(include={"normalize", "shingle_size", "bands", "rows", "seed"})


def sign_shard(task: SignTask) -> dict:
    """Pass 1 for one shard. Top-level so every executor can pickle it; idempotent."""
    final = Path(task.out_dir)
    if (final / DONE).exists():
        return json.loads((final / DONE).read_text())
    cfg = task.cfg
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    hasher = MinHasher(cfg.num_perm, cfg.seed, cfg.chunk_shingles)
    sigs, keys, lengths, empty = [], [], [], []
    for batch in iter_batches(task.shard, ["text"], cfg.batch_docs):
        texts = [t or "" for t in batch.column("text").to_pylist()]
        norm = [normalize(t, cfg.normalize) for t in texts]
        keys.append(exact_keys(norm))
        lengths.append(np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)))
        empty.append(np.fromiter((not t for t in norm), dtype=bool, count=len(norm)))
        hashes, offsets = shingle_hashes(norm, cfg.shingle_size, cfg.seed)
        sigs.append(hasher.signatures(hashes, offsets))
    n = sum(len(k) for k in keys)
    sig = np.concatenate(sigs) if sigs else np.zeros((0, cfg.num_perm), np.uint32)
    exact = np.concatenate(keys) if keys else np.zeros((0, 2), np.uint64)
    is_empty = np.concatenate(empty) if empty else np.zeros(0, bool)
    rows = np.flatnonzero(~is_empty).astype(np.uint64)  # text-less documents are never duplicates
    np.save(tmp / "sig.npy", sig)
    np.save(tmp / "length.npy", np.concatenate(lengths) if lengths else np.zeros(0, np.int64))
    _save_sorted(tmp / "exact.npy", np.column_stack([exact[rows.astype(np.int64)], rows]))
    bk = band_keys(sig[rows.astype(np.int64)], cfg.bands, cfg.rows)
    for b in range(cfg.bands):
        _save_sorted(tmp / f"band-{b:03d}.npy", np.column_stack([bk[:, b], rows]))
    info = {"docs": n, "empty": int(is_empty.sum())}
    (tmp / DONE).write_text(json.dumps(info))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return info


def _save_sorted(path: Path, table: np.ndarray) -> None:
    """Rows ``[key..., row]`` sorted by key (then row), so pass 2 can slice key ranges by binary search."""
    order = np.lexsort(table.T[::-1])
    np.save(path, np.ascontiguousarray(table[order], dtype=np.uint64))


# --------------------------------------------------------------------------------- pass 2: cluster
def _groups(files: list[Path], offsets: np.ndarray, budget_bytes: int, alive: np.ndarray | None = None,
            desc: str = "") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(first, member)`` edges, global rows, for every run of equal keys across ``files``.

    Each file holds rows ``[key..., local row]`` sorted by key; the key space is cut into ranges small
    enough for ``budget_bytes``, and each range is gathered from memory-mapped slices. ``first`` is the
    smallest row of its group; ``alive`` (optional) drops rows before grouping.
    """
    maps = [np.load(f, mmap_mode="r") for f in files]
    total_bytes = sum(m.nbytes for m in maps)
    parts = max(1, math.ceil(total_bytes / budget_bytes))
    bounds = [(1 << 64) * k // parts for k in range(parts + 1)]
    for k in range(parts):
        chunks = []
        for m, off in zip(maps, offsets[:-1], strict=True):
            col = m[:, 0]
            lo = int(np.searchsorted(col, np.uint64(bounds[k]), side="left")) if k else 0
            hi = int(np.searchsorted(col, np.uint64(bounds[k + 1]), side="left")) if k + 1 < parts else len(col)
            if hi > lo:
                part = np.array(m[lo:hi])
                part[:, -1] += np.uint64(off)
                chunks.append(part)
        if not chunks:
            continue
        table = np.concatenate(chunks)
        if alive is not None:
            table = table[alive[table[:, -1].astype(np.int64)]]
        if len(table) < 2:
            continue
        table = table[np.lexsort(table.T[::-1])]
        key, row = table[:, :-1], table[:, -1].astype(np.int64)
        starts = np.ones(len(table), dtype=bool)
        starts[1:] = (key[1:] != key[:-1]).any(axis=1)
        group = np.cumsum(starts) - 1
        first = row[starts][group]
        dup = ~starts
        yield first[dup], row[dup]


def _sig_rows(sign_dirs: list[Path], offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Signatures of global ``rows`` (memory-mapped per shard, so only those rows are read)."""
    shard = np.searchsorted(offsets, rows, side="right") - 1
    out = None
    for s in np.unique(shard):
        sel = shard == s
        sig = np.load(sign_dirs[s] / "sig.npy", mmap_mode="r")
        part = np.asarray(sig[rows[sel] - offsets[s]])
        if out is None:
            out = np.empty((len(rows), sig.shape[1]), dtype=sig.dtype)
        out[sel] = part
    return out if out is not None else np.zeros((0, 0), np.uint32)


def _exact_jaccard(shards: list[str], offsets: np.ndarray, a: np.ndarray, b: np.ndarray,
                   cfg: DedupConfig) -> np.ndarray:
    """Jaccard of the shingle sets (64-bit shingle hashes) of each pair, reading only the needed texts."""
    need = np.unique(np.concatenate([a, b]))
    shard_of = np.searchsorted(offsets, need, side="right") - 1
    sets: dict[int, np.ndarray] = {}
    for s in np.unique(shard_of):
        local = need[shard_of == s] - offsets[s]
        texts = pq.read_table(shards[s], columns=["text"]).column("text").take(pa.array(local)).to_pylist()
        norm = [normalize(t or "", cfg.normalize) for t in texts]
        hashes, offs = shingle_hashes(norm, cfg.shingle_size, cfg.seed)
        for i, row in enumerate(local + offsets[s]):
            sets[int(row)] = np.unique(hashes[offs[i] : offs[i + 1]])
    out = np.empty(len(a))
    for i, (x, y) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        inter = len(np.intersect1d(sets[x], sets[y], assume_unique=True))
        union = len(sets[x]) + len(sets[y]) - inter
        out[i] = inter / union if union else 0.0
    return out


def cluster(shards: list[str], sign_dirs: list[Path], cfg: DedupConfig) -> tuple[list[dict[int, tuple[str, str]]], dict]:
    """Pass 2: per shard, ``{row: (reason, detail)}`` for every duplicate, and clustering stats."""
    counts = [json.loads((d / DONE).read_text())["docs"] for d in sign_dirs]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(offsets[-1])
    budget = cfg.bucket_mib << 20
    uf = UnionFind(n)
    stats: dict[str, Any] = {"docs": n, "empty_docs": sum(json.loads((d / DONE).read_text())["empty"] for d in sign_dirs)}

    if cfg.exact:
        for first, member in _groups([d / "exact.npy" for d in sign_dirs], offsets, budget):
            uf.union(first, member)
    exact_root = uf.roots().copy()

    stats.update(candidate_pairs=0, verified_pairs=0)
    if cfg.near and n:
        alive = exact_root == np.arange(n)  # one representative per exact group enters LSH
        pairs = []
        for b in tqdm(range(cfg.bands), desc="dedup lsh bands", unit="band", mininterval=1.0):
            files = [d / f"band-{b:03d}.npy" for d in sign_dirs]
            pairs += [first * n + member for first, member in _groups(files, offsets, budget, alive)]
        cand = np.unique(np.concatenate(pairs)) if pairs else np.zeros(0, np.int64)
        a, b = cand // max(n, 1), cand % max(n, 1)
        stats["candidate_pairs"] = len(a)
        if len(a) and cfg.verify != "none":
            if cfg.verify == "signature":
                sim = estimate_jaccard(_sig_rows(sign_dirs, offsets, a), _sig_rows(sign_dirs, offsets, b))
            else:
                sim = _exact_jaccard(shards, offsets, a, b, cfg)
            a, b = a[sim >= cfg.threshold], b[sim >= cfg.threshold]
        stats["verified_pairs"] = len(a)
        uf.union(a, b)

    roots = uf.roots()
    members = np.flatnonzero(np.bincount(roots, minlength=n)[roots] > 1)  # rows in clusters of 2+
    keep = _survivors(roots, members, sign_dirs, cfg)
    sizes = Counter(np.bincount(roots[members]).tolist())
    sizes.pop(0, None)
    cluster_roots = np.unique(roots[members])
    has_near = np.unique(roots[members][exact_root[members] != roots[members]])
    stats["clusters"] = {"total": len(cluster_roots), "with_near_dups": len(has_near),
                         "exact_only": len(cluster_roots) - len(has_near)}
    stats["cluster_sizes"] = {str(k): v for k, v in sorted(sizes.items())}

    removed = members[keep[roots[members]] != members]
    survivor = keep[roots[removed]]
    is_exact = exact_root[removed] == exact_root[survivor]
    sim = np.ones(len(removed))
    if (~is_exact).any():
        sim[~is_exact] = estimate_jaccard(_sig_rows(sign_dirs, offsets, removed[~is_exact]),
                                          _sig_rows(sign_dirs, offsets, survivor[~is_exact]))
    ids = _ids(shards, offsets, np.unique(survivor))
    decisions: list[dict[int, tuple[str, str]]] = [{} for _ in shards]
    shard_of = np.searchsorted(offsets, removed, side="right") - 1
    for row, s, kept, ex, j in zip(removed.tolist(), shard_of.tolist(), survivor.tolist(), is_exact.tolist(),
                                    sim.tolist(), strict=True):
        detail = f"duplicate of {ids[kept]}" + ("" if ex else f" (estimated jaccard {j:.2f})")
        decisions[s][row - int(offsets[s])] = (EXACT if ex else NEAR, detail)
    return decisions, stats


def _survivors(roots: np.ndarray, members: np.ndarray, sign_dirs: list[Path], cfg: DedupConfig) -> np.ndarray:
    """``keep[root]`` = the row kept for each cluster root (defined for roots of ``members``)."""
    keep = np.arange(len(roots))  # 'first': the root is the cluster's smallest row already
    if cfg.keep == "longest" and len(members):
        length = np.concatenate([np.load(d / "length.npy") for d in sign_dirs])
        order = np.lexsort((members, -length[members], roots[members]))  # by root, longest, first
        ordered = members[order]
        first_of_root = np.ones(len(ordered), dtype=bool)
        first_of_root[1:] = roots[ordered][1:] != roots[ordered][:-1]
        keep[roots[ordered[first_of_root]]] = ordered[first_of_root]
    return keep


def _ids(shards: list[str], offsets: np.ndarray, rows: np.ndarray) -> dict[int, str]:
    """Document ids of global ``rows``, reading only the ``id`` column of the shards that hold them."""
    out: dict[int, str] = {}
    shard_of = np.searchsorted(offsets, rows, side="right") - 1
    for s in np.unique(shard_of):
        local = rows[shard_of == s] - offsets[s]
        col = pq.read_table(shards[s], columns=["id"]).column("id").take(pa.array(local)).to_pylist()
        out.update(zip((local + offsets[s]).tolist(), col, strict=True))
    return out


# ----------------------------------------------------------------------------------- pass 3: write
def apply_decisions(unit: tuple[str, str], cfg: DedupConfig) -> Iterator[Document | Rejected]:
    """``run_stage`` process: stream one input shard, diverting the rows its decisions file names."""
    shard, decisions_file = unit
    table = pq.read_table(decisions_file).to_pydict()
    decided = {r: (reason, detail) for r, reason, detail in zip(table["row"], table["reason"], table["detail"],
                                                               strict=True)}
    n = 0
    for n, doc in enumerate(iter_documents(shard), start=1):
        hit = decided.get(n - 1)
        yield Rejected(doc, *hit) if hit else doc
    return {"in": n}


def _write_decisions(path: Path, decided: dict[int, tuple[str, str]]) -> str:
    rows = sorted(decided)
    table = pa.table({"row": pa.array(rows, pa.int64()), "reason": [decided[r][0] for r in rows],
                      "detail": [decided[r][1] for r in rows]})
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return hashlib.sha256(json.dumps([[r, *decided[r]] for r in rows]).encode()).hexdigest()


def dedup(cfg: DedupConfig, in_dir: str | Path, out_dir: str | Path, rejected_dir: str | Path,
          executor: Executor, work_dir: str | Path | None = None) -> dict:
    """Deduplicate dataset ``in_dir`` into ``out_dir`` (kept) and ``rejected_dir`` (exact_dup / near_dup)."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    work = Path(work_dir) if work_dir else out_dir.parent / ".state" / "dedup-work"
    shard_infos = read_manifest(in_dir)["shards"]
    shards = [str(in_dir / s["path"]) for s in shard_infos]
    sign_dirs = [work / "sign" / fingerprint(_sign_params(cfg), s["sha256"]) for s in shard_infos]
    executor.map(sign_shard, [SignTask(p, str(d), cfg) for p, d in zip(shards, sign_dirs, strict=True)],
                 desc="dedup sign")
    _prune(work / "sign", {d.name for d in sign_dirs})

    decisions, cstats = cluster(shards, sign_dirs, cfg)
    (work / "decisions").mkdir(parents=True, exist_ok=True)
    units = []
    for i, (info, decided) in enumerate(zip(shard_infos, decisions, strict=True)):
        path = work / "decisions" / f"{i:05d}.parquet"
        digest = _write_decisions(path, decided)
        units.append((f"{info['sha256']}:{digest}", (shards[i], str(path))))
    _prune(work / "decisions", {f"{i:05d}.parquet" for i in range(len(units))})

    stats = run_stage(apply_decisions, units, cfg, out_dir, rejected_dir, executor, cfg.docs_per_shard,
                      desc="dedup write")
    stats.update(cstats)
    return stats


def _prune(directory: Path, live: set[str]) -> None:
    """Remove leftovers of older params or inputs, so the work directory stays the size of one run."""
    for p in directory.iterdir() if directory.exists() else ():
        if p.name not in live:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def label_outcomes(kept_dir: str | Path, rejected_dir: str | Path, key: str = "noise") -> dict[str, dict[str, int]]:
    """For documents labelled ``meta[key]`` (the demo's planted noise): how many were kept, and removed per reason.

    Streams only the ``meta`` (and ``reason``) columns.
    """
    out: dict[str, Counter[str]] = {}
    for directory, cols in ((kept_dir, ["meta"]), (rejected_dir, ["meta", "reason"])):
        for batch in iter_batches(directory, cols):
            d = batch.to_pydict()
            for i, meta in enumerate(d["meta"]):
                label = json.loads(meta).get(key) if meta else None
                if label is not None:
                    out.setdefault(str(label), Counter())[d["reason"][i] if "reason" in d else "kept"] += 1
    return {label: dict(sorted(c.items())) for label, c in sorted(out.items())}


def plot_cluster_sizes(cluster_sizes: dict[str, int], path: str | Path, title: str = "dedup clusters") -> Path:
    """Bar chart: number of duplicate clusters per cluster size (documents in the cluster, kept one included)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sizes = sorted((int(k), v) for k, v in cluster_sizes.items())
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if sizes:
        ax.bar([str(s) for s, _ in sizes], [n for _, n in sizes], color="#4477aa")
    else:
        ax.text(0.5, 0.5, "no duplicate clusters", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("documents per cluster")
    ax.set_ylabel("clusters")
    ax.set_title(f"{title} ({sum(n for _, n in sizes)} clusters)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``dedup``: ``io.docs`` into ``io.out`` (one document per cluster) and ``io.rejected`` (the others)."""
    stats = dedup(p.dedup, io.docs, io.out, io.rejected, ex)
    stats["planted_noise"] = label_outcomes(io.out, io.rejected)  # the demo's labelled noise: what became of it
    stats["plot"] = str(plot_cluster_sizes(stats["cluster_sizes"], io.plots / "cluster_sizes.png"))
    return stats
