"""Stage ``tokenize``: a document dataset → tokenizer, per-domain token files + an index, a held-out set.

Layout written by :func:`tokenize_corpus` (``data/tokens`` by default)::

    index.json                                   dtype, vocab_size, eos_id, tokenizer, per split/domain counts
    train/<domain>/part-NNNNN.bin                raw little-endian uint16 (vocab <= 65535) or uint32 token ids
    val/<domain>/part-NNNNN.bin

Every document is encoded without special-token parsing (a literal ``<|endoftext|>`` in the text stays
text) and followed by exactly one EOS, so a domain's files concatenated in index order are its documents
joined by EOS. ``NNNNN`` is the upstream shard (the unit of parallel work): each unit streams its shard in
``batch_docs`` batches and appends to its own files, so memory does not grow with the corpus, and a unit
that finished (marker + files of the recorded size) is reused on a rerun, so a killed stage resumes.

Documents are split train / held-out by :mod:`lmpipe.docsplit`; held-out documents are also written as an
ordinary lmpipe document dataset for per-domain evaluation. The tokenizer (trained on the train split, or
reused) comes from :mod:`lmpipe.tokenizer`; this module packs and indexes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmpipe.conditioning.encode import Conditioner
from lmpipe.conditioning.meco import meco_split
from lmpipe.docsplit import SPLITS, SplitPlan, split_plan
from lmpipe.documents import (
    ShardInfo,
    ShardWriter,
    iter_batches,
    sha256_file,
    write_manifest,
)
from lmpipe.executors import Executor
from lmpipe.sharded import dataset_units, files_intact, read_marker, write_marker
from lmpipe.tokenization_config import TokenizeConfig
from lmpipe.tokenizer import Encoder, prepare_tokenizer

if TYPE_CHECKING:
    from lmpipe.conditioning.config import ConditionConfig
    from lmpipe.config import Params
    from lmpipe.contract import StageIO

INDEX = "index.json"
INDEX_FORMAT = "lmpipe-tokens/1"
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # becomes a directory name


# ------------------------------------------------------------------------------------------ packing
@dataclass
class PackTask:
    index: int
    key: str  # the upstream shard's SHA-256
    shard: str
    tokenizer_dir: str
    tokens_dir: str
    heldout_dir: str
    state_dir: str
    plan: SplitPlan
    batch_docs: int
    encode_threads: int
    heldout_docs_per_shard: int
    fingerprint: str
    conditioner: Conditioner | None = None  # PHF control tokens and/or the MeCo variant (lmpipe.conditioning)


def _unit_marker(task: PackTask) -> Path:
    return Path(task.state_dir) / f"{task.index:05d}.json"


def _reusable(task: PackTask) -> dict | None:
    done = read_marker(_unit_marker(task), task.fingerprint)
    if done is None:
        return None
    files = [(Path(task.tokens_dir) / f["path"], f["tokens"] * np.dtype(done["dtype"]).itemsize)
             for f in done["files"]]
    files += [(Path(task.heldout_dir) / s["path"], s["file_bytes"]) for s in done["heldout_shards"]]
    return done if files_intact(files) else None


def _configure_threads(threads: int) -> None:
    # tokenizers reads these lazily: RAYON_NUM_THREADS when its pool starts, the flag on each batch call
    os.environ["TOKENIZERS_PARALLELISM"] = "false" if threads == 1 else "true"
    if threads > 1:
        os.environ.setdefault("RAYON_NUM_THREADS", str(threads))


def pack_unit(task: PackTask) -> dict:
    """Encode one upstream shard into per-(split, domain) token files and its held-out docs. Top-level so
    every executor can pickle it; outputs are named after the unit, so results never depend on scheduling."""
    done = _reusable(task)
    if done is not None:
        return done
    _configure_threads(task.encode_threads)
    if task.conditioner is not None:
        task.conditioner.counts.clear()  # an in-process executor hands every task the same object
    enc = Encoder.load(task.tokenizer_dir)
    name = f"part-{task.index:05d}.bin"
    tokens_dir = Path(task.tokens_dir)
    handles: dict[tuple[str, str], Any] = {}
    counts: dict[tuple[str, str], list[int]] = {}  # (split, domain) -> [tokens, docs, text bytes]
    heldout = ShardWriter(task.heldout_dir, f"part-{task.index:05d}", docs_per_shard=task.heldout_docs_per_shard)
    try:
        with heldout:
            for batch in iter_batches(task.shard, ["id", "text", "domain", "source", "meta"], task.batch_docs):
                cols = batch.to_pydict()
                meco_ids = None
                if task.conditioner is None:
                    ids, lengths = enc.encode_docs(cols["text"])
                else:
                    ids, lengths, meco_ids, meco_lengths = task.conditioner.encode(enc, cols)
                splits = [task.plan.split_of(i) for i in cols["id"]]
                for i, split in enumerate(splits):
                    if split == "val":
                        heldout.write({k: cols[k][i] for k in cols})
                nbytes = [len(t.encode("utf-8")) for t in cols["text"]]
                _append_runs(ids, lengths, nbytes, splits, cols["domain"], tokens_dir, name, handles, counts)
                if meco_ids is not None:  # the same documents with their metadata prefix, in splits *_meco
                    _append_runs(meco_ids, meco_lengths, nbytes, [meco_split(s) for s in splits], cols["domain"],
                                 tokens_dir, name, handles, counts)
        for (split, domain), f in handles.items():
            f.close()
            final = tokens_dir / split / domain / name
            os.replace(final.with_name(f".{name}.tmp"), final)
    finally:
        for f in handles.values():
            f.close()
    files = [
        {"split": s, "domain": d, "path": f"{s}/{d}/{name}", "tokens": counts[s, d][0], "docs": counts[s, d][1],
         "text_bytes": counts[s, d][2]}
        for s, d in sorted(counts)
    ]
    result = {
        "index": task.index, "key": task.key, "fingerprint": task.fingerprint, "dtype": enc.dtype.name,
        "files": files, "heldout_shards": [asdict(s) for s in heldout.shards],
        "control_counts": dict(task.conditioner.counts) if task.conditioner is not None else {},
    }
    write_marker(_unit_marker(task), result)
    return result


def _append_runs(
    ids: np.ndarray, lengths: list[int], nbytes: list[int], splits: list[str], domains: list[str],
    tokens_dir: Path, name: str,
    handles: dict[tuple[str, str], Any], counts: dict[tuple[str, str], list[int]],
) -> None:
    """Write each maximal run of consecutive docs with the same (split, domain) as one slice of ``ids``."""
    start = i = 0
    n = len(lengths)
    while i < n:
        key = (splits[i], domains[i])
        j, end, size = i, start, 0
        while j < n and (splits[j], domains[j]) == key:
            end += lengths[j]
            size += nbytes[j]
            j += 1
        f = handles.get(key)
        if f is None:
            if not _DOMAIN_RE.match(key[1] or ""):
                raise ValueError(f"domain {key[1]!r} cannot name a token directory (allowed: {_DOMAIN_RE.pattern})")
            d = tokens_dir / key[0] / key[1]
            d.mkdir(parents=True, exist_ok=True)
            f = handles[key] = open(d / f".{name}.tmp", "wb")  # noqa: SIM115 - closed by pack_unit
            counts[key] = [0, 0, 0]
        ids[start:end].tofile(f)
        counts[key][0] += end - start
        counts[key][1] += j - i
        counts[key][2] += size
        start, i = end, j


def tokenize_corpus(
    cfg: TokenizeConfig,
    docs_dir: str | Path,
    tokens_dir: str | Path,
    tokenizer_dir: str | Path,
    heldout_dir: str | Path,
    executor: Executor,
    state_dir: str | Path | None = None,
    condition: ConditionConfig | None = None,
) -> dict[str, Any]:
    """The whole stage: split plan → tokenizer → parallel packing → index.json + held-out manifest.

    ``condition`` adds PHF control tokens (reserved in the tokenizer as single ids) and/or MeCo's prefixed
    variant of every document. Returns stats for the metrics file (per split and domain: tokens, docs, bytes
    per token)."""
    docs_dir, tokens_dir, heldout_dir = Path(docs_dir), Path(tokens_dir), Path(heldout_dir)
    state = Path(state_dir) if state_dir else tokens_dir.parent / ".state" / tokens_dir.name
    for d in (tokens_dir, heldout_dir, state):
        d.mkdir(parents=True, exist_ok=True)
    plan = split_plan(docs_dir, cfg.val_fraction)
    reserved = [t for t in (condition.special_tokens() if condition else []) if t not in cfg.extra_special_tokens]
    if reserved:
        cfg = cfg.model_copy(update={"extra_special_tokens": [*cfg.extra_special_tokens, *reserved]})
    enc, tok_info = prepare_tokenizer(cfg, docs_dir, tokenizer_dir, plan, state)
    conditioner = _conditioner(condition, enc, docs_dir, plan)
    tok_sha = sha256_file(Path(tokenizer_dir) / "tokenizer.json")
    recipe = json.dumps([tok_sha, plan.key(), cfg.heldout_docs_per_shard, _describe(conditioner)])
    tasks = [
        PackTask(i, key, shard, str(tokenizer_dir), str(tokens_dir), str(heldout_dir), str(state), plan,
                 cfg.batch_docs, cfg.encode_threads, cfg.heldout_docs_per_shard,
                 hashlib.sha256(f"{recipe}\0{key}".encode()).hexdigest()[:32], conditioner)
        for i, (key, shard) in enumerate(dataset_units(docs_dir))
    ]
    results = executor.map(pack_unit, tasks, desc="tokenize")
    index = _finalize(results, enc, tokenizer_dir, tokens_dir, heldout_dir, state, cfg, _describe(conditioner))
    return _stats(index, tok_info)


def _conditioner(condition: ConditionConfig | None, enc: Encoder, docs_dir: Path, plan: SplitPlan) -> Conditioner | None:
    from lmpipe.conditioning.control import build_tagger

    if condition is None or not (condition.control.enabled or condition.meco.enabled):
        return None
    tagger = None
    if condition.control.enabled:
        ids = [enc.tok.token_to_id(t) for t in condition.control.tokens]
        if any(i is None for i in ids):
            raise ValueError(f"control tokens {condition.control.tokens} are not all single ids in the tokenizer "
                             f"(got {ids}); a reused tokenizer must have room for them")
        tagger = build_tagger(condition.control, docs_dir, plan, ids)
    return Conditioner(tagger, condition.meco if condition.meco.enabled else None)


def _describe(c: Conditioner | None) -> dict[str, Any] | None:
    """The conditioning in index.json (and in the packing fingerprint)."""
    if c is None:
        return None
    out: dict[str, Any] = {}
    if c.tagger is not None:
        t = c.tagger
        out["control"] = {**t.cfg.model_dump(), "ids": t.token_ids, "cuts": t.cuts}
    if c.meco is not None:
        out["meco"] = {**c.meco.model_dump(), "splits": {s: meco_split(s) for s in SPLITS}}
    return out


def _finalize(results: list[dict], enc: Encoder, tokenizer_dir: str | Path, tokens_dir: Path, heldout_dir: Path,
              state: Path, cfg: TokenizeConfig, condition: dict[str, Any] | None = None) -> dict[str, Any]:
    splits: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in SPLITS}
    for r in results:
        for f in r["files"]:
            d = splits.setdefault(f["split"], {}).setdefault(f["domain"], {"tokens": 0, "docs": 0, "text_bytes": 0, "files": []})
            for k in ("tokens", "docs", "text_bytes"):
                d[k] += f[k]
            d["files"].append({"path": f["path"], "tokens": f["tokens"]})
    owned = {f["path"] for r in results for f in r["files"]}
    for p in list(tokens_dir.rglob("*.bin")) + list(tokens_dir.rglob(".*.tmp")):
        if p.relative_to(tokens_dir).as_posix() not in owned:
            p.unlink()  # left over from older params or a killed run
    shards = [ShardInfo(**s) for r in results for s in r["heldout_shards"]]
    keep = {s.path for s in shards}
    for p in list(heldout_dir.glob("*.parquet")) + list(heldout_dir.glob(".*.tmp")):
        if p.name not in keep:
            p.unlink()
    write_manifest(heldout_dir, shards)
    live = {f"{r['index']:05d}.json" for r in results} | {"tokenizer.json"}
    for p in state.glob("*.json"):
        if p.name not in live:
            p.unlink()
    index = {
        "format": INDEX_FORMAT,
        "dtype": enc.dtype.name,
        "vocab_size": enc.vocab_size,
        "eos_id": enc.eos_id,
        "tokenizer": Path(tokenizer_dir).as_posix(),
        "val_fraction": cfg.val_fraction,
        "splits": {s: dict(sorted(v.items())) for s, v in splits.items()},
    }
    if condition is not None:
        if "control" in condition:
            tags: dict[str, int] = {}
            for r in results:
                for k, v in r.get("control_counts", {}).items():
                    tags[k] = tags.get(k, 0) + v
            condition = {**condition, "control": {**condition["control"], "pieces": dict(sorted(tags.items()))}}
        index["condition"] = condition
    tmp = tokens_dir / f".{INDEX}.tmp"
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp, tokens_dir / INDEX)
    return index


def _stats(index: dict, tok_info: dict) -> dict[str, Any]:
    out: dict[str, Any] = {"tokenizer": tok_info}
    for split, domains in index["splits"].items():
        out[split] = {
            d: {
                "tokens": v["tokens"],
                "docs": v["docs"],
                # UTF-8 bytes per non-EOS token: the tokenizer's compression on this domain
                "bytes_per_token": round(v["text_bytes"] / max(1, v["tokens"] - v["docs"]), 3),
            }
            for d, v in domains.items()
        }
        out[f"{split}_tokens"] = sum(v["tokens"] for v in domains.values())
    out["tokens"] = out["train_tokens"] + out["val_tokens"]
    if "condition" in index:
        out["condition"] = index["condition"]
    return out


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``tokenize``: train (or reuse) the tokenizer, split held-out docs, pack ``io.docs`` per domain."""
    import time

    start = time.perf_counter()
    stats = tokenize_corpus(p.tokenize, io.docs, io.tokens, io.tokenizer, io.heldout, ex, condition=p.condition)
    stats["tokens_per_s"] = round(stats["tokens"] / max(time.perf_counter() - start, 1e-9))
    return stats
