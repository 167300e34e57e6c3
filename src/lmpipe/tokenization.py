"""Tokenizer training and packing: a document dataset → per-domain token files + an index + a held-out set.

Layout written by :func:`tokenize_corpus` (``data/tokens`` by default)::

    index.json                                   dtype, vocab_size, eos_id, tokenizer, per split/domain counts
    train/<domain>/part-NNNNN.bin                raw little-endian uint16 (vocab <= 65535) or uint32 token ids
    val/<domain>/part-NNNNN.bin

Every document is encoded without special-token parsing (a literal ``<|endoftext|>`` in the text stays
text) and followed by exactly one EOS, so a domain's files concatenated in index order are its documents
joined by EOS. ``NNNNN`` is the upstream shard (the unit of parallel work): each unit streams its shard in
``batch_docs`` batches and appends to its own files, so memory does not grow with the corpus, and a unit
that finished (marker + files of the recorded size) is reused on a rerun, so a killed stage resumes.

Documents are split train / held-out by a keyed hash of their id (:func:`split_plan`), independent of
order, shard layout and executor. Held-out documents are also written as an ordinary lmpipe document dataset
for per-domain evaluation. The tokenizer is a byte-level BPE trained on the train split only (no held-out
text shapes the vocabulary), or any local Hugging Face tokenizer directory; it is saved in HF format.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmpipe.config import TokenizeConfig
from lmpipe.documents import (
    ShardInfo,
    ShardWriter,
    iter_batches,
    read_manifest,
    sha256_file,
    write_manifest,
)
from lmpipe.executors import Executor
from lmpipe.sharded import dataset_units, files_intact, read_marker, write_marker

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO

INDEX = "index.json"
INDEX_FORMAT = "lmpipe-tokens/1"
SPLITS = ("train", "val")
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # becomes a directory name


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (ids < vocab_size <= 65535), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


# ------------------------------------------------------------------------------------------ hashing
def id_hash(doc_id: str, salt: bytes) -> float:
    """A uniform number in [0, 1) from a document id; ``salt`` keeps independent uses uncorrelated."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8, person=salt.ljust(16, b"\0")[:16]).digest()
    return int.from_bytes(digest, "big") / 2**64


_SPLIT_SALT = b"lmpipe/split"
_SAMPLE_SALT = b"lmpipe/toksample"


@dataclass
class SplitPlan:
    """Which documents are held out: ``hash(id) < val_fraction``, adjusted so that every domain with at
    least two documents has at least one in each split (the lowest-hash doc is moved to val, or the
    highest-hash doc back to train)."""

    val_fraction: float
    force_val: set[str] = field(default_factory=set)
    force_train: set[str] = field(default_factory=set)
    docs: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> domain -> docs

    def split_of(self, doc_id: str) -> str:
        if doc_id in self.force_val:
            return "val"
        if doc_id in self.force_train:
            return "train"
        return "val" if id_hash(doc_id, _SPLIT_SALT) < self.val_fraction else "train"

    def key(self) -> str:
        return json.dumps([self.val_fraction, sorted(self.force_val), sorted(self.force_train)])


def split_plan(docs_dir: str | Path, val_fraction: float) -> SplitPlan:
    """One streaming pass over ids and domains (memory: a few numbers per domain)."""
    stats: dict[str, dict[str, Any]] = {}
    for batch in iter_batches(docs_dir, ["id", "domain"], batch_size=10_000):
        for doc_id, domain in zip(batch.column("id").to_pylist(), batch.column("domain").to_pylist(), strict=True):
            h = id_hash(doc_id, _SPLIT_SALT)
            s = stats.setdefault(domain, {"n": 0, "val": 0, "lo": (2.0, ""), "hi": (-1.0, "")})
            s["n"] += 1
            s["val"] += h < val_fraction
            s["lo"] = min(s["lo"], (h, doc_id))
            s["hi"] = max(s["hi"], (h, doc_id))
    plan = SplitPlan(val_fraction)
    for domain, s in sorted(stats.items()):
        n_val = s["val"]
        if val_fraction > 0 and s["n"] >= 2 and n_val == 0:
            plan.force_val.add(s["lo"][1])
            n_val = 1
        elif s["n"] >= 2 and n_val == s["n"]:
            plan.force_train.add(s["hi"][1])
            n_val -= 1
        plan.docs.setdefault("train", {})[domain] = s["n"] - n_val
        plan.docs.setdefault("val", {})[domain] = n_val
    return plan


# ---------------------------------------------------------------------------------------- tokenizer
class Encoder:
    """The packing view of a saved tokenizer: ids without special-token parsing, EOS after each doc.

    Use this (not ``AutoTokenizer(text)``) wherever text must map to the same ids as the token files:
    HF's call parses special-token strings inside the text, which this deliberately does not.
    """

    def __init__(self, tokenizer: Any, eos_id: int) -> None:
        self.tok = tokenizer
        self.tok.encode_special_tokens = True  # a literal "<|endoftext|>" in a document stays plain text
        self.eos_id = eos_id
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.dtype = token_dtype(self.vocab_size)

    @classmethod
    def load(cls, tokenizer_dir: str | Path) -> Encoder:
        from tokenizers import Tokenizer

        tokenizer_dir = Path(tokenizer_dir)
        cfg = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
        eos = cfg.get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        eos_id = tok.token_to_id(eos) if eos else None
        if eos_id is None:
            raise ValueError(f"{tokenizer_dir}: eos_token {eos!r} is not in the vocabulary")
        return cls(tok, eos_id)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def encode_docs(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Encode a batch (parallel inside ``tokenizers``) → (ids with EOS after each doc, per-doc lengths
        including the EOS)."""
        # encode_batch_fast skips character offsets, which packing never needs
        encs = self.tok.encode_batch_fast(texts, add_special_tokens=False)
        flat: list[int] = []
        lengths: list[int] = []
        eos = self.eos_id
        for e in encs:
            ids = e.ids
            flat.extend(ids)
            flat.append(eos)
            lengths.append(len(ids) + 1)
        return np.array(flat, dtype=self.dtype), lengths


def _specials(cfg: TokenizeConfig) -> list[str]:
    return [cfg.eos_token, *([cfg.pad_token] if cfg.pad_token else []), *cfg.extra_special_tokens]


def train_tokenizer(texts: Iterable[str], cfg: TokenizeConfig, length: int | None = None) -> Any:
    """Byte-level BPE from a stream of texts (``tokenizers`` consumes the iterator in chunks)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # no prefix space: decode(encode(x)) == x exactly, and documents are not shifted by a phantom space
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=_specials(cfg),  # ids 0.. in this order: eos first
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable, even unseen ones
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=length)
    return tok


def save_tokenizer(tok: Any, out_dir: str | Path, cfg: TokenizeConfig) -> Path:
    """HF format: ``tokenizer.json`` + ``tokenizer_config.json`` + ``special_tokens_map.json``."""
    from transformers import PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    specials = {"bos_token": cfg.eos_token, "eos_token": cfg.eos_token, "unk_token": cfg.eos_token}
    if cfg.pad_token:
        specials["pad_token"] = cfg.pad_token
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        clean_up_tokenization_spaces=False,  # keep decode exact (no " ." → "." rewriting)
        additional_special_tokens=list(cfg.extra_special_tokens) or None,
        **specials,
    )
    hf.save_pretrained(str(tmp))
    _finish_hf_dir(tmp, specials, cfg.extra_special_tokens)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def _finish_hf_dir(directory: Path, specials: dict[str, str], extra: list[str]) -> None:
    """Make the directory load in transformers 4.x as well as 5.x (5.x writes neither of these)."""
    cfg_path = directory / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.pop("model_max_length", None)  # the model, not the tokenizer, knows its context length
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    smap: dict[str, Any] = dict(specials)
    if extra:
        smap["additional_special_tokens"] = list(extra)
    (directory / "special_tokens_map.json").write_text(json.dumps(smap, indent=2, ensure_ascii=False) + "\n")


def reuse_tokenizer(src: str | Path, out_dir: str | Path, cfg: TokenizeConfig) -> Path:
    """Copy a local HF tokenizer dir into ``out_dir`` (fast tokenizers only; needs an EOS)."""
    from transformers import AutoTokenizer

    src = Path(src)
    if not (src / "tokenizer.json").exists():
        raise FileNotFoundError(f"tokenize.tokenizer_path={src}: no tokenizer.json there (need a fast HF tokenizer dir)")
    hf = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    if hf.eos_token is None:
        if hf.convert_tokens_to_ids(cfg.eos_token) in (None, hf.unk_token_id):
            raise ValueError(f"{src}: the tokenizer has no eos_token and {cfg.eos_token!r} is not in its vocabulary")
        hf.eos_token = cfg.eos_token
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf.save_pretrained(str(tmp))
    specials = {k: str(v) for k, v in hf.special_tokens_map.items() if isinstance(v, str)}
    if not (tmp / "special_tokens_map.json").exists():
        (tmp / "special_tokens_map.json").write_text(json.dumps(specials, indent=2, ensure_ascii=False) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def _sample_texts(docs_dir: Path, plan: SplitPlan, keep: float, batch_docs: int) -> Iterator[str]:
    """Train-split texts, subsampled by a second id hash when the corpus is larger than the budget."""
    for batch in iter_batches(docs_dir, ["id", "text"], batch_size=batch_docs):
        for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist(), strict=True):
            if plan.split_of(doc_id) == "train" and (keep >= 1.0 or id_hash(doc_id, _SAMPLE_SALT) < keep):
                yield text


def prepare_tokenizer(
    cfg: TokenizeConfig, docs_dir: str | Path, tokenizer_dir: str | Path, plan: SplitPlan, state_dir: str | Path
) -> tuple[Encoder, dict[str, Any]]:
    """Train (or reuse) the tokenizer unless ``tokenizer_dir`` already holds the one these inputs make."""
    docs_dir, tokenizer_dir, state_dir = Path(docs_dir), Path(tokenizer_dir), Path(state_dir)
    manifest = read_manifest(docs_dir)
    recipe = cfg.model_dump(include={"tokenizer_path", "vocab_size", "min_frequency", "train_max_mib",
                                     "eos_token", "pad_token", "extra_special_tokens"})
    if cfg.tokenizer_path:
        recipe["source_sha"] = sha256_file(Path(cfg.tokenizer_path) / "tokenizer.json")
    else:
        recipe.update(corpus=manifest["sha256"], split=plan.key())
    fp = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:32]
    marker = state_dir / "tokenizer.json"
    tok_json = tokenizer_dir / "tokenizer.json"
    info: dict[str, Any] = {"trained": False}
    done = json.loads(marker.read_text()) if marker.exists() else {}
    if not (tok_json.exists() and done.get("fingerprint") == fp and done.get("sha256") == sha256_file(tok_json)):
        if cfg.tokenizer_path:
            reuse_tokenizer(cfg.tokenizer_path, tokenizer_dir, cfg)
        else:
            keep = min(1.0, cfg.train_max_mib * 2**20 / max(1, manifest["text_bytes"]))
            n_train = sum(plan.docs.get("train", {}).values())
            tok = train_tokenizer(_sample_texts(docs_dir, plan, keep, cfg.batch_docs), cfg, length=n_train)
            save_tokenizer(tok, tokenizer_dir, cfg)
            info.update(trained=True, sample_fraction=round(keep, 6))
        state_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"fingerprint": fp, "sha256": sha256_file(tok_json)}))
    enc = Encoder.load(tokenizer_dir)
    info.update(vocab_size=enc.vocab_size, eos_id=enc.eos_id, dtype=enc.dtype.name)
    return enc, info


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
                ids, lengths = enc.encode_docs(cols["text"])
                splits = [task.plan.split_of(i) for i in cols["id"]]
                for i, split in enumerate(splits):
                    if split == "val":
                        heldout.write({k: cols[k][i] for k in cols})
                nbytes = [len(t.encode("utf-8")) for t in cols["text"]]
                _append_runs(ids, lengths, nbytes, splits, cols["domain"], tokens_dir, name, handles, counts)
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
) -> dict[str, Any]:
    """The whole stage: split plan → tokenizer → parallel packing → index.json + held-out manifest.

    Returns stats for the metrics file (per split and domain: tokens, docs, bytes per token)."""
    docs_dir, tokens_dir, heldout_dir = Path(docs_dir), Path(tokens_dir), Path(heldout_dir)
    state = Path(state_dir) if state_dir else tokens_dir.parent / ".state" / tokens_dir.name
    for d in (tokens_dir, heldout_dir, state):
        d.mkdir(parents=True, exist_ok=True)
    plan = split_plan(docs_dir, cfg.val_fraction)
    enc, tok_info = prepare_tokenizer(cfg, docs_dir, tokenizer_dir, plan, state)
    tok_sha = sha256_file(Path(tokenizer_dir) / "tokenizer.json")
    recipe = json.dumps([tok_sha, plan.key(), cfg.heldout_docs_per_shard])
    tasks = [
        PackTask(i, key, shard, str(tokenizer_dir), str(tokens_dir), str(heldout_dir), str(state), plan,
                 cfg.batch_docs, cfg.encode_threads, cfg.heldout_docs_per_shard,
                 hashlib.sha256(f"{recipe}\0{key}".encode()).hexdigest()[:32])
        for i, (key, shard) in enumerate(dataset_units(docs_dir))
    ]
    results = executor.map(pack_unit, tasks, desc="tokenize")
    index = _finalize(results, enc, tokenizer_dir, tokens_dir, heldout_dir, state, cfg)
    return _stats(index, tok_info)


def _finalize(results: list[dict], enc: Encoder, tokenizer_dir: str | Path, tokens_dir: Path, heldout_dir: Path,
              state: Path, cfg: TokenizeConfig) -> dict[str, Any]:
    splits: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in SPLITS}
    for r in results:
        for f in r["files"]:
            d = splits[f["split"]].setdefault(f["domain"], {"tokens": 0, "docs": 0, "text_bytes": 0, "files": []})
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
    return out


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``tokenize``: train (or reuse) the tokenizer, split held-out docs, pack ``io.docs`` per domain."""
    import time

    start = time.perf_counter()
    stats = tokenize_corpus(p.tokenize, io.docs, io.tokens, io.tokenizer, io.heldout, ex)
    stats["tokens_per_s"] = round(stats["tokens"] / max(time.perf_counter() - start, 1e-9))
    return stats
