"""Whole stages, ours and datatrove's, on the same input: shared by ``filter_dedup.py`` and ``scaling.py``.

Ours: ``score`` + ``filter`` (read Parquet shards → every rule family, language id and toxicity included →
select → write kept and rejected shards) and ``dedup`` (sign → LSH buckets → union-find clusters → write),
through ``lmpipe.sharded.run_stage`` and an executor. Datatrove: ``LocalPipelineExecutor`` pipelines on the
same documents as JSONL files (one file per shard): reader → its Gopher repetition, Gopher quality, C4 and
FineWeb filters (each with an exclusion writer, as ours writes its rejects) → writer; and its MinHash dedup
in its four documented steps (signatures → buckets → clusters → filter). Writers uncompressed (its fastest).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

from lmpipe.dedup.config import DedupConfig
from lmpipe.documents import Document, ShardWriter, iter_batches, write_manifest
from lmpipe.filters.config import EvalFile, FilterScoreConfig, FilterSelectConfig, LabelledFile


def write_inputs(texts: list[str], root: Path, shards: int, domain: str = "web") -> tuple[Path, Path]:
    """The same documents as an lmpipe dataset (``root/lmpipe``) and as JSONL files (``root/jsonl``)."""
    ours, peer = root / "lmpipe", root / "jsonl"
    for d in (ours, peer):
        shutil.rmtree(d, ignore_errors=True)
    peer.mkdir(parents=True)
    per = -(-len(texts) // shards)
    docs = [Document(id=f"d{i:06d}", text=t, domain=domain, source="bench") for i, t in enumerate(texts)]
    with ShardWriter(ours, "part", docs_per_shard=per) as w:
        w.write_all(docs)
    write_manifest(ours, w.shards)
    for k in range(0, len(docs), per):
        with open(peer / f"part-{k // per:04d}.jsonl", "w") as f:
            for d in docs[k : k + per]:
                f.write(json.dumps({"id": d.id, "text": d.text}) + "\n")
    return ours, peer


def score_config(data: Path) -> FilterScoreConfig:
    """Every family on: toxicity word list + classifier (HH-RLHF pairs), Kneser-Ney perplexity (reference:
    the input itself), decontamination against the Alpaca seed tasks."""
    return FilterScoreConfig(
        toxicity={
            "train_files": [
                LabelledFile(
                    path=str(data / "hh-rlhf" / "harmless-base-test.jsonl.gz"), format="pairs", max_rows=1000
                )
            ],
            "epochs": 20,
        },
        perplexity={"reference_domain": "web", "max_train_docs": 500},
        decontam={
            "eval_files": [
                EvalFile(path=str(data / "alpaca" / "seed_tasks.jsonl"), text_fields=["instruction"])
            ]
        },
    )


def select_config() -> FilterSelectConfig:
    """Every published rule set for every document; the classifier is scored but not thresholded (trained on
    HH-RLHF dialogue pairs, it flags most prose: the work is measured, the keep/drop stays meaningful)."""
    return FilterSelectConfig(default={"toxicity": {"max_classifier": None}})


def ours_score_filter(docs: Path, out: Path, job: Any, executor: Any) -> dict[str, int]:
    """Stage ``score`` then stage ``filter`` (models already built: ``job``), both through ``executor``."""
    from lmpipe.filters.score import score_unit
    from lmpipe.filters.select import SelectJob, perplexity_cutoffs, scan_scores, select_unit
    from lmpipe.sharded import dataset_units, run_stage

    shutil.rmtree(out, ignore_errors=True)
    run_stage(
        score_unit,
        dataset_units(docs),
        job,
        out / "scored",
        out / "score_rej",
        executor,
        desc="score",
        state_dir=out / "state-score",
    )
    sel = select_config()
    _, ppl, _ = scan_scores(out / "scored", sel.plot_sample)
    sjob = SelectJob(cfg=sel, c4_lines=job.cfg.c4, ppl_cutoffs=perplexity_cutoffs(sel, ppl))
    stats = run_stage(
        select_unit,
        dataset_units(out / "scored"),
        sjob,
        out / "kept",
        out / "rejected",
        executor,
        desc="filter",
        state_dir=out / "state-filter",
        extras=("rule_hits", "pii_scrubbed"),
    )
    return {"in": stats["in"], "kept": stats["kept"], "rejected": stats["rejected"]}


def datatrove_filter(jsonl: Path, out: Path, workers: int) -> dict[str, int]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    shutil.rmtree(out, ignore_errors=True)
    files = len(list(jsonl.glob("*.jsonl")))

    def rej(name: str) -> JsonlWriter:
        return JsonlWriter(str(out / "rejected" / name), compression=None)

    LocalPipelineExecutor(
        pipeline=[
            JsonlReader(str(jsonl)),
            GopherRepetitionFilter(exclusion_writer=rej("gopher_rep")),
            GopherQualityFilter(exclusion_writer=rej("gopher_qual")),
            C4QualityFilter(filter_no_terminal_punct=True, exclusion_writer=rej("c4")),
            FineWebQualityFilter(exclusion_writer=rej("fineweb")),
            JsonlWriter(str(out / "kept"), compression=None),
        ],
        tasks=files,
        workers=workers,
        logging_dir=str(out / "logs"),
    ).run()
    kept = len(read_ids(out / "kept"))
    rejected = len(read_ids(out / "rejected"))
    return {"in": kept + rejected, "kept": kept, "rejected": rejected}


def read_ids(directory: Path) -> set[str]:
    """Document ids of every JSONL(.gz) file under ``directory`` (datatrove's outputs)."""
    out: set[str] = set()
    for f in sorted(directory.rglob("*.jsonl*")):
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt") as fh:
            out.update(json.loads(line)["id"] for line in fh if line.strip())
    return out


def dedup_config() -> DedupConfig:
    return DedupConfig(
        shingle_size=5, bands=14, rows=8
    )  # datatrove's MinhashConfig defaults: 5-grams, 14 x 8


def ours_dedup(docs: Path, out: Path, executor: Any) -> set[str]:
    """Stage ``dedup``; returns the ids it removed."""
    from lmpipe.dedup.passes import dedup

    shutil.rmtree(out, ignore_errors=True)
    dedup(dedup_config(), docs, out / "kept", out / "rejected", executor, out / "work")
    return {i for b in iter_batches(out / "rejected", ["id"]) for i in b.column("id").to_pylist()}


def datatrove_dedup(jsonl: Path, out: Path, workers: int) -> set[str]:
    """Datatrove's MinHash dedup, its four steps as four executors (as in its example); returns removed ids."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    shutil.rmtree(out, ignore_errors=True)
    files = len(list(jsonl.glob("*.jsonl")))
    # 5-grams, 14 buckets x 8 hashes, 64-bit; its default xxhash path passes str to xxhash 4, which refuses it
    cfg = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="sha1"))
    steps = [
        ([JsonlReader(str(jsonl)), MinhashDedupSignature(str(out / "sigs"), config=cfg)], files),
        ([MinhashDedupBuckets(str(out / "sigs"), str(out / "buckets"), config=cfg)], cfg.num_buckets),
        ([MinhashDedupCluster(str(out / "buckets"), str(out / "remove"), config=cfg)], 1),
        (
            [
                JsonlReader(str(jsonl)),
                MinhashDedupFilter(
                    str(out / "remove"), exclusion_writer=JsonlWriter(str(out / "removed"), compression=None)
                ),
                JsonlWriter(str(out / "kept"), compression=None),
            ],
            files,
        ),
    ]
    for k, (pipeline, tasks) in enumerate(steps):
        LocalPipelineExecutor(
            pipeline=pipeline, tasks=tasks, workers=min(workers, tasks), logging_dir=str(out / f"logs{k}")
        ).run()
    return read_ids(out / "removed")


def planted_scores(removed: set[str], planted: list[tuple[int, int]], n_docs: int) -> dict[str, Any]:
    """Recall: planted (original, edited copy) pairs with a member removed. Precision: removed documents that
    belong to a planted pair (a removed document outside every pair counts against it, though the real text
    may hold natural near-duplicates: both tools are scored alike)."""
    members = {f"d{i:06d}" for pair in planted for i in pair}
    found = sum(1 for a, b in planted if f"d{a:06d}" in removed or f"d{b:06d}" in removed)
    outside = removed - members
    return {
        "recall": round(found / max(len(planted), 1), 4),
        "precision": round(len(removed & members) / max(len(removed), 1), 4),
        "removed": len(removed),
        "removed_outside_planted_pairs": len(outside),
        "docs": n_docs,
    }
