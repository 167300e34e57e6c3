"""Ingest throughput: lmpipe's ingest stage vs plain pyarrow and HF `datasets` on the same text, same run.

Input: ../shared/data/wikitext-2/*.txt, one document per non-blank line (the unit all three can agree on).
Output: bench/results/ingest.json with docs/s and MB/s for each (median and spread of interleaved repeats).

    python bench/ingest.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, rate, require_shared, table, write_result  # noqa: E402


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lmpipe.executors import LocalExecutor
    from lmpipe.ingest import ingest
    from lmpipe.ingest_config import IngestConfig

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

    paths = {"lmpipe ingest, 1 worker": ours(1), "lmpipe ingest, 2 workers": ours(2),
             "pyarrow (split lines -> parquet)": plain_pyarrow, "HF datasets (text loader -> filter -> parquet)":
             hf_datasets}
    secs, docs = alternate(paths, warmup=True)
    shutil.rmtree(tmp, ignore_errors=True)
    n = docs["pyarrow (split lines -> parquet)"]
    rows = {k: {"docs_per_s": rate(n, v), "mb_per_s": rate(mb, v, 2)} for k, v in secs.items()}
    write_result(
        "ingest",
        input={"source": "wikitext-2 valid+test, one doc per non-blank line", "files": len(files),
               "mb": round(mb, 2), "docs": n},
        tables=[table("text files -> Parquet documents", "docs_per_s", rows,
                      ours=["lmpipe ingest, 1 worker", "lmpipe ingest, 2 workers"],
                      peers=["pyarrow (split lines -> parquet)", "HF datasets (text loader -> filter -> parquet)"])],
        checks={"docs_per_path": docs},
        notes=["lmpipe also validates UTF-8 per record, assigns ids, writes a manifest with SHA-256 per shard and "
               "records resume markers; the peers only convert. The input is 2 files, so a second worker has "
               "little to split."],
    )


if __name__ == "__main__":
    main()
