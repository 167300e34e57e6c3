"""Tokenize + pack throughput of the `tokenize` stage code vs raw HF ``tokenizers`` batch encoding.

Same text, same trained tokenizer, same batch size and thread setting, in the same run, alternating:

- raw ``Tokenizer.encode_batch`` (the reference the target is set against) and ``encode_batch_fast``,
  on texts already in memory: pure encoding, nothing read or written;
- ours: ``lmpipe.tokenization.pack_unit`` over every shard (read Parquet, split by id hash, encode,
  append EOS, write the per-domain token files and the held-out dataset), in-process;
- ours, whole stage: ``tokenize_corpus`` with the tokenizer reused (split plan, index, manifests too).

Corpus: the real text in ``../shared/data`` (GSM8K, sympy, WikiText-2, Tiny Shakespeare), ~12 MB in all;
``--max-mb`` takes the first documents of each domain up to that many MB in total.

    python bench/tokenize_pack.py [--threads 1] [--max-mb 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
from _common import REPEATS, SHARED, rate, table, write_result  # noqa: E402

from lmpipe.docsplit import split_plan  # noqa: E402
from lmpipe.documents import Document, ShardWriter, iter_batches, write_manifest  # noqa: E402
from lmpipe.executors import LocalExecutor  # noqa: E402
from lmpipe.tokenization import PackTask, pack_unit, tokenize_corpus  # noqa: E402
from lmpipe.tokenization_config import TokenizeConfig  # noqa: E402
from lmpipe.tokenizer import Encoder  # noqa: E402


def build_corpus(shared: Path, out: Path, per_shard: int, max_bytes: float) -> Path:
    docs: list[Document] = []
    for i, line in enumerate((shared / "domains/math/gsm8k_train.jsonl").open()):
        docs.append(Document(f"math-{i}", json.loads(line)["text"], "math", "gsm8k"))
    for i, line in enumerate((shared / "domains/code/sympy_python.jsonl").open()):
        docs.append(Document(f"code-{i}", json.loads(line)["text"], "code", "sympy"))
    prose = [p for f in ("valid.txt", "test.txt") for p in (shared / "wikitext-2" / f).read_text().split("\n \n")]
    prose += (shared / "tinyshakespeare/input.txt").read_text().split("\n\n")
    docs += [Document(f"prose-{i}", p, "prose", "wiki+shakespeare") for i, p in enumerate(prose) if p.strip()]
    total = sum(len(d.text.encode()) for d in docs)
    if max_bytes < total:  # the same share of every domain, in file order
        share, kept, used = max_bytes / total, [], {}
        for dom in ("math", "code", "prose"):
            budget = share * sum(len(d.text.encode()) for d in docs if d.domain == dom)
            for d in (d for d in docs if d.domain == dom):
                if used.get(dom, 0) >= budget:
                    break
                kept.append(d)
                used[dom] = used.get(dom, 0) + len(d.text.encode())
        docs = kept
    with ShardWriter(out, "part", docs_per_shard=per_shard) as w:
        w.write_all(docs)
    write_manifest(out, w.shards)
    return out


def raw_encode(tok, texts: list[str], batch: int, fast: bool) -> int:
    fn = tok.encode_batch_fast if fast else tok.encode_batch
    n = 0
    for i in range(0, len(texts), batch):
        n += sum(len(e.ids) for e in fn(texts[i : i + batch], add_special_tokens=False))
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(SHARED))
    ap.add_argument("--threads", type=int, default=1, help="encode threads for both paths (0 = all cores)")
    ap.add_argument("--max-mb", type=float, default=2.0, help="corpus size (all of it: 0)")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_tok_"))
    try:
        docs_dir = build_corpus(Path(args.shared), tmp / "docs", per_shard=2000,
                                max_bytes=args.max_mb * 1e6 if args.max_mb else float("inf"))
        cfg = TokenizeConfig(vocab_size=args.vocab, batch_docs=args.batch, encode_threads=args.threads)
        t0 = time.perf_counter()
        stats = tokenize_corpus(cfg, docs_dir, tmp / "t0/tokens", tmp / "tokenizer", tmp / "t0/held",
                                LocalExecutor(1))
        first_stage_s = time.perf_counter() - t0  # includes BPE training on the train split
        tokens_total = stats["tokens"]
        docs_total = sum(v["docs"] for s in ("train", "val") for v in stats[s].values())

        # the same texts in memory, in the same order and batches as the stage encodes them
        texts = [t for b in iter_batches(docs_dir, ["text"], args.batch) for t in b.column("text").to_pylist()]
        text_bytes = sum(len(t.encode()) for t in texts)
        enc = Encoder.load(tmp / "tokenizer")  # raw tokenizers object, special-token parsing off like ours
        plan = split_plan(docs_dir, cfg.val_fraction)
        from lmpipe.sharded import dataset_units

        units = dataset_units(docs_dir)
        os.environ["TOKENIZERS_PARALLELISM"] = "false" if args.threads == 1 else "true"

        def ours_pack(rep: int) -> int:
            out = tmp / f"pack{rep}"
            results = [
                pack_unit(PackTask(i, key, shard, str(tmp / "tokenizer"), str(out / "tokens"), str(out / "held"),
                                   str(out / "state"), plan, args.batch, args.threads, 5000, f"rep{rep}"))
                for i, (key, shard) in enumerate(units)
            ]
            shutil.rmtree(out)
            return sum(f["tokens"] for r in results for f in r["files"])

        def ours_stage(rep: int) -> int:
            out = tmp / f"stage{rep}"
            c = cfg.model_copy(update={"tokenizer_path": str(tmp / "tokenizer")})
            s = tokenize_corpus(c, docs_dir, out / "tokens", out / "tk", out / "held", LocalExecutor(1))
            shutil.rmtree(out)
            return s["tokens"]

        runs = {
            "raw_encode_batch": lambda r: raw_encode(enc.tok, texts, args.batch, fast=False) + len(texts),
            "raw_encode_batch_fast": lambda r: raw_encode(enc.tok, texts, args.batch, fast=True) + len(texts),
            "ours_pack": ours_pack,
            "ours_stage": ours_stage,
        }
        ours_stage(-1)  # warm: transformers import for the tokenizer-reuse path, page cache
        times: dict[str, list[float]] = {k: [] for k in runs}
        for rep in range(REPEATS):
            for name, fn in runs.items():  # alternate, so contention hits every path alike
                t = time.perf_counter()
                n = fn(rep)
                times[name].append(time.perf_counter() - t)
                assert n == tokens_total, (name, n, tokens_total)  # every path produced the same tokens (+EOS)
        labels = {"raw_encode_batch": "HF tokenizers encode_batch (texts in memory)",
                  "raw_encode_batch_fast": "HF tokenizers encode_batch_fast (texts in memory)",
                  "ours_pack": "lmpipe pack (read + encode + EOS + write per-domain files)",
                  "ours_stage": "lmpipe whole tokenize stage (tokenizer reused)"}
        rows = {labels[k]: {"tokens_per_s": rate(tokens_total, v, 0)} for k, v in times.items()}
        corpus = {"docs": docs_total, "text_bytes": text_bytes, "tokens_incl_eos": tokens_total,
                  "max_mb_flag": args.max_mb, "source": "shared/data: gsm8k + sympy + wikitext-2 + tinyshakespeare"}
        settings = {"vocab_size": args.vocab, "batch_docs": args.batch, "threads": args.threads}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_result(
        "tokenize_pack",
        input={**corpus, **settings},
        tables=[table("byte-level BPE encoding, 1 process", "tokens_per_s", rows,
                      ours=[labels["ours_pack"], labels["ours_stage"]],
                      peers=[labels["raw_encode_batch"], labels["raw_encode_batch_fast"]])],
        checks={"every_path_same_token_count": True,
                "first_stage_run_s_incl_bpe_training": round(first_stage_s, 2)},
        notes=["The peers only encode texts already in memory; lmpipe's rows also read Parquet and write the "
               "token files (and the whole stage: split plan, index, manifests)."],
    )


if __name__ == "__main__":
    main()
