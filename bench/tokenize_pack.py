"""Tokenize + pack throughput of the `tokenize` stage code vs raw HF ``tokenizers`` batch encoding.

Same text, same trained tokenizer, same batch size and thread setting, in the same run, alternating:

- raw ``Tokenizer.encode_batch`` (the reference the target is set against) and ``encode_batch_fast``,
  on texts already in memory: pure encoding, nothing read or written;
- ours: ``lmpipe.tokenization.pack_unit`` over every shard (read Parquet, split by id hash, encode,
  append EOS, write the per-domain token files and the held-out dataset), in-process;
- ours, whole stage: ``tokenize_corpus`` with the tokenizer reused (split plan, index, manifests too).

Corpus: the real text in ``../shared/data`` (GSM8K, sympy, WikiText-2, Tiny Shakespeare), ~12 MB.

    python bench/tokenize_pack.py [--threads 1] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from lmpipe.config import TokenizeConfig  # noqa: E402
from lmpipe.docsplit import split_plan  # noqa: E402
from lmpipe.documents import Document, ShardWriter, iter_batches, write_manifest  # noqa: E402
from lmpipe.executors import LocalExecutor  # noqa: E402
from lmpipe.tokenization import PackTask, pack_unit, tokenize_corpus  # noqa: E402
from lmpipe.tokenizer import Encoder  # noqa: E402


def build_corpus(shared: Path, out: Path, per_shard: int) -> Path:
    docs: list[Document] = []
    for i, line in enumerate((shared / "domains/math/gsm8k_train.jsonl").open()):
        docs.append(Document(f"math-{i}", json.loads(line)["text"], "math", "gsm8k"))
    for i, line in enumerate((shared / "domains/code/sympy_python.jsonl").open()):
        docs.append(Document(f"code-{i}", json.loads(line)["text"], "code", "sympy"))
    prose = [p for f in ("valid.txt", "test.txt") for p in (shared / "wikitext-2" / f).read_text().split("\n \n")]
    prose += (shared / "tinyshakespeare/input.txt").read_text().split("\n\n")
    docs += [Document(f"prose-{i}", p, "prose", "wiki+shakespeare") for i, p in enumerate(prose) if p.strip()]
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
    ap.add_argument("--shared", default=os.environ.get("LMPIPE_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--threads", type=int, default=1, help="encode threads for both paths (0 = all cores)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--out", default=str(ROOT / "bench/results/tokenize_pack.json"))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_tok_"))
    try:
        docs_dir = build_corpus(Path(args.shared), tmp / "docs", per_shard=2000)
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
        for rep in range(args.reps):
            for name, fn in runs.items():  # alternate, so contention hits every path alike
                t = time.perf_counter()
                n = fn(rep)
                times[name].append(time.perf_counter() - t)
                assert n == tokens_total, (name, n, tokens_total)  # every path produced the same tokens (+EOS)
        tps = {k: round(tokens_total / statistics.median(v)) for k, v in times.items()}
        result = {
            "bench": "tokenize_pack",
            "corpus": {"docs": docs_total, "text_bytes": text_bytes, "tokens_incl_eos": tokens_total,
                       "source": "shared/data: gsm8k + sympy + wikitext-2 + tinyshakespeare"},
            "settings": {"vocab_size": args.vocab, "batch_docs": args.batch, "threads": args.threads,
                         "reps": args.reps, "cpu_count": os.cpu_count(), "statistic": "median"},
            "tokens_per_s": tps,
            "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "ratio_ours_pack_vs_raw_encode_batch": round(tps["ours_pack"] / tps["raw_encode_batch"], 3),
            "ratio_ours_pack_vs_raw_encode_batch_fast": round(tps["ours_pack"] / tps["raw_encode_batch_fast"], 3),
            "ratio_ours_stage_vs_raw_encode_batch": round(tps["ours_stage"] / tps["raw_encode_batch"], 3),
            "target": ">= 0.9 x raw encode_batch",
            "first_stage_run_s_incl_bpe_training": round(first_stage_s, 2),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
