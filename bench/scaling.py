"""Scaling of the data stages with 1 and 2 workers, on the local process pool and on Dask.

Stages: ``score`` + ``filter`` end to end and ``dedup`` (``bench/_stages.py``, the same code and input form as
``bench/filter_dedup.py``). Executors: ``LocalExecutor(n)`` (a fresh process pool per stage pass, so every
pass pays start-up and model loading) and ``DaskExecutor(n)`` (a ``LocalCluster`` started once, outside the
timing; its workers keep loaded models between passes). The peer: datatrove's MinHash dedup with its
``LocalPipelineExecutor`` at 1 and 2 workers (its four steps, as in ``filter_dedup.py``). Efficiency with n workers = T(1) / (n * T(n)), from the
median times. Outputs are checked byte-identical across executors. Writes ``bench/results/scaling.json``.

    python bench/scaling.py [--per-source 20] [--dedup-docs 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stages as S  # noqa: E402
import dedup_part  # noqa: E402
from _common import alternate, rate, require_shared, table, write_result  # noqa: E402
from filter_dedup import load_texts  # noqa: E402


def digest(directory: Path) -> str:
    """SHA-256 over the kept/rejected shard bytes of a stage output (by relative path)."""
    h = hashlib.sha256()
    for f in sorted(
        p for p in directory.rglob("*.parquet") if "state" not in p.parts and "work" not in p.parts
    ):
        h.update(str(f.relative_to(directory)).encode() + f.read_bytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--per-source", type=int, default=20, help="documents from each of the 4 sources (filter)"
    )
    ap.add_argument("--dedup-docs", type=int, default=2000, help="documents before 5 %% planted near copies")
    ap.add_argument("--work", default="/tmp/lmpipe-bench-scaling", help="scratch directory")
    args = ap.parse_args()
    from lmpipe.executors import DaskExecutor, LocalExecutor
    from lmpipe.filters.score import build_models

    data = require_shared()
    work = Path(args.work)
    texts = [t for v in load_texts(args.per_source).values() for t in v]
    dtexts = dedup_part.shared_texts(args.dedup_docs)
    f_in, _ = S.write_inputs(texts, work / "filter-in", shards=4)
    d_in, d_peer = S.write_inputs(dtexts, work / "dedup-in", shards=4)
    mb = {
        "score + filter": sum(len(t.encode()) for t in texts) / 1e6,
        "dedup": sum(len(t.encode()) for t in dtexts) / 1e6,
    }
    job, _ = build_models(S.score_config(data), f_in, work / "models")
    executors = {
        "local 1": LocalExecutor(1),
        "local 2": LocalExecutor(2),
        "dask 1": DaskExecutor(1),
        "dask 2": DaskExecutor(2),
    }
    try:
        paths = {}
        for name, ex in executors.items():
            tag = name.replace(" ", "")
            paths[f"score + filter | {name}"] = lambda ex=ex, tag=tag: (
                S.ours_score_filter(f_in, work / f"f-{tag}", job, ex) and digest(work / f"f-{tag}")
            )
            paths[f"dedup | {name}"] = lambda ex=ex, tag=tag: (
                S.ours_dedup(d_in, work / f"d-{tag}", ex) is not None and digest(work / f"d-{tag}")
            )
        for n in (1, 2):
            paths[f"dedup | datatrove {n}"] = lambda n=n: len(S.datatrove_dedup(d_peer, work / f"dt-{n}", n))
        secs, outs = alternate(paths)
    finally:
        for ex in executors.values():
            ex.close()
    rows, eff, identical = {}, {}, {}
    for stage in mb:
        for kind in ("local", "dask") if stage != "dedup" else ("local", "dask", "datatrove"):
            t1 = sorted(secs[f"{stage} | {kind} 1"])[1]
            t2 = sorted(secs[f"{stage} | {kind} 2"])[1]
            eff[f"{stage} | {kind}"] = {
                "speedup_2_vs_1": round(t1 / t2, 2),
                "efficiency_2": round(t1 / (2 * t2), 2),
            }
        for name in [*executors, *(["datatrove 1", "datatrove 2"] if stage == "dedup" else [])]:
            rows[f"{stage} | {name}"] = {"mb_per_s": rate(mb[stage], secs[f"{stage} | {name}"], 3)}
        identical[stage] = len({outs[f"{stage} | {n}"] for n in executors}) == 1
    write_result(
        "scaling",
        input={
            "filter_docs": len(texts),
            "dedup_docs": len(dtexts),
            "mb": {k: round(v, 3) for k, v in mb.items()},
            "shards": 4,
        },
        tables=[
            table(
                "data stages by executor and workers (wall time)",
                "mb_per_s",
                rows,
                ours=[r for r in rows if "datatrove" not in r],
                peers=[r for r in rows if "datatrove" in r],
            )
        ],
        checks={"efficiency": eff, "outputs_identical_across_executors": identical},
        notes=[
            "2 cores shared with other work: efficiency 1.0 is the ceiling; local pools start per stage pass "
            "(start-up and model loading in every pass), Dask workers stay up between passes."
        ],
    )


if __name__ == "__main__":
    main()
