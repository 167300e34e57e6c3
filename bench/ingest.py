"""Ingest throughput: lmpipe's ingest stage vs plain pyarrow and HF `datasets` on the same text, same run.

Input: ../shared/data/wikitext-2/*.txt, one document per non-blank line (the unit all three can agree on).
Output: bench/results/ingest.json with docs/s and MB/s for each, and lmpipe's ratio to the faster peer.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, require_shared, write_result  # noqa: E402


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lmpipe.config import IngestConfig
    from lmpipe.executors import LocalExecutor
    from lmpipe.ingest import ingest

    files = sorted((require_shared() / "wikitext-2").glob("*.txt"))
    mb = sum(f.stat().st_size for f in files) / 1e6
    tmp = Path(tempfile.mkdtemp())

    def ours(workers: int):
        def run():
            out = tmp / f"ours{workers}"
            shutil.rmtree(out, ignore_errors=True)
            cfg = IngestConfig(sources=[{"uri": str(f), "domain": "prose", "split": "line"} for f in files])
            return ingest(cfg, out / "docs", out / "rej", LocalExecutor(workers))["kept"]
        return run

    def plain_pyarrow():
        lines = [ln for f in files for ln in f.read_text(encoding="utf-8").split("\n") if ln.strip()]
        pq.write_table(pa.table({"text": lines}), tmp / "pa.parquet", compression="zstd")
        return len(lines)

    def hf_datasets():
        from datasets import load_dataset

        ds = load_dataset("text", data_files=[str(f) for f in files], split="train",
                          cache_dir=str(tmp / "hf"), keep_in_memory=True)
        ds = ds.filter(lambda b: [bool(t.strip()) for t in b["text"]], batched=True)
        ds.to_parquet(str(tmp / "hf.parquet"))
        shutil.rmtree(tmp / "hf", ignore_errors=True)
        return len(ds)

    results = {}
    for name, fn in [("lmpipe_1_worker", ours(1)), ("lmpipe_2_workers", ours(2)),
                     ("pyarrow", plain_pyarrow), ("datasets", hf_datasets)]:
        seconds, docs = best_of(fn)
        results[name] = {"docs": docs, "seconds": round(seconds, 3), "docs_per_s": round(docs / seconds),
                         "mb_per_s": round(mb / seconds, 2)}
    shutil.rmtree(tmp, ignore_errors=True)
    peer = max(results["pyarrow"]["docs_per_s"], results["datasets"]["docs_per_s"])
    write_result("ingest", {
        "input": "wikitext-2 valid+test, one doc per non-blank line", "input_mb": round(mb, 2), "results": results,
        "note": "lmpipe also validates UTF-8 per record, assigns ids, writes a manifest with SHA-256 per shard, "
                "and records resume markers; the peers only convert.",
        "ratio_vs_best_peer": {k: round(results[k]["docs_per_s"] / peer, 2)
                               for k in ("lmpipe_1_worker", "lmpipe_2_workers")},
    })


if __name__ == "__main__":
    main()
