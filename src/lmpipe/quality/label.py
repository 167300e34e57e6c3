"""The ``label`` stage: an LLM rates a seeded per-domain sample of documents 0–5 on each rubric dimension.

It reads ``score``'s input (the ingested documents), not ``dedup``'s output: the rater must exist before
``score`` tags every document, and it must see the raw distribution, bad pages included, to learn where
the bottom of the scale is (FineWeb-Edu labels raw web pages for the same reason).

The sample is the ``per_domain`` documents of each domain with the smallest seeded hash of their id, so it
does not depend on sharding and grows by adding documents. Work runs in units of ``docs_per_unit``
sampled documents through ``lmpipe.sharded.run_stage`` (a killed run resumes per unit), every request goes
through the persistent response cache (a redone unit re-sends nothing already answered), and requests are greedy and seeded, so
a rerun is byte-identical. The client plumbing (one backend per process, usage snapshots) is ``augment``'s.

Output: the labelled documents with ``meta["labels"] = {dimension: 0..5}``; the quarantine holds every
document whose request failed (``llm_<reason>``, raw payload kept) or whose reply is not a usable rating
(``no_json``, ``missing_dimension``, ... with the reply in ``detail``). Label cost is in the metrics.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmpipe.documents import Document, Rejected, iter_batches, iter_documents, read_manifest
from lmpipe.llm.config import LLMConfig
from lmpipe.llm.types import USAGE_KEYS, GenFailure, GenRequest
from lmpipe.quality.config import LabelConfig
from lmpipe.quality.rubric import RubricError, load_prompt, parse_rating, response_format
from lmpipe.sections import Section
from lmpipe.sharded import run_stage
from lmpipe.synth.augment import backend_for, close_backends, usage_since, usage_snapshot
from lmpipe.synth.entigraph import derive_seed
from lmpipe.synth.prompts import fill

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.executors import Executor

CHUNK_DOCS = 64  # at most this many documents' requests go out as one batch (bounded memory)


class LabelJob(Section):
    """Everything a shard's labels depend on; its JSON is the resume fingerprint."""

    llm: LLMConfig
    label: LabelConfig
    seed: int


def sample_ids(docs_dir: str | Path, cfg: LabelConfig, seed: int) -> set[str]:
    """The ``per_domain`` ids of each (selected) domain with the smallest seeded hash: reads ids/domains only."""
    ranked: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for batch in iter_batches(docs_dir, ["id", "domain"]):
        for doc_id, domain in zip(
            batch.column("id").to_pylist(), batch.column("domain").to_pylist(), strict=True
        ):
            if not cfg.domains or domain in cfg.domains:
                ranked[domain].append((derive_seed(seed, "label", doc_id), doc_id))
    return {doc_id for items in ranked.values() for _, doc_id in sorted(items)[: cfg.per_domain]}


Unit = tuple[tuple[str, tuple[str, ...]], ...]  # ((shard path, sampled ids in it), ...)


def plan_units(docs_dir: str | Path, cfg: LabelConfig, seed: int) -> list[tuple[str, Unit]]:
    """Units of ``docs_per_unit`` sampled documents in dataset order, spanning input shards: a sample spread
    thin over many shards still goes out in full batches. A sample smaller than ``workers`` full units is cut
    into ``workers`` equal units, so every worker gets a share. The key names each shard's content and ids."""
    docs_dir = Path(docs_dir)
    chosen = sample_ids(docs_dir, cfg, seed)
    per_unit = max(1, min(cfg.docs_per_unit, -(-len(chosen) // cfg.workers)))
    units: list[tuple[str, Unit]] = []
    parts: list[tuple[str, tuple[str, ...]]] = []
    keys: list[str] = []
    size = 0

    def close() -> None:
        nonlocal parts, keys, size
        if parts:
            units.append((hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32], tuple(parts)))
        parts, keys, size = [], [], 0

    for shard in read_manifest(docs_dir)["shards"]:
        path = docs_dir / shard["path"]
        ids = [i for b in iter_batches(path, ["id"]) for i in b.column("id").to_pylist() if i in chosen]
        while ids:
            take, ids = ids[: per_unit - size], ids[per_unit - size :]
            parts.append((str(path), tuple(take)))
            keys.append(f"{shard['sha256']}:" + ",".join(take))
            size += len(take)
            if size >= per_unit:
                close()
    close()
    return units


class Labeller:
    """Requests and parsing for one process; the prompt and response format are built once."""

    def __init__(self, job: LabelJob) -> None:
        self.cfg, self.seed = job.label, job.seed
        self.template = load_prompt(self.cfg.dimensions, self.cfg.prompts_dir)
        self.fmt = response_format(self.cfg.dimensions, self.cfg.json_mode)
        self.stats: Counter[str] = Counter()

    def request(self, doc: Document) -> GenRequest:
        return GenRequest(
            messages=(("user", fill(self.template, document=doc.text[: self.cfg.doc_chars])),),
            max_tokens=self.cfg.max_tokens,
            temperature=self.cfg.temperature,
            seed=derive_seed(self.seed, doc.id, "label"),
            response_format=self.fmt,
        )

    def item(self, doc: Document, out: object, model: str) -> Document | Rejected:
        meta = {**doc.meta, "label_model": model}
        if isinstance(out, GenFailure):
            self.stats["llm_failure"] += 1
            return Rejected(
                Document(doc.id, doc.text, doc.domain, doc.source, meta),
                f"llm_{out.reason}",
                out.detail,
                out.raw,
            )
        try:
            labels = parse_rating(out.text, self.cfg.dimensions)
        except RubricError as e:
            self.stats["malformed"] += 1
            return Rejected(
                Document(doc.id, doc.text, doc.domain, doc.source, meta),
                e.reason,
                e.detail,
                out.text.encode(),
            )
        self.stats["labelled"] += 1
        for d, v in labels.items():
            self.stats[f"{d}={v}"] += 1
        meta.update(labels=labels, label_tokens=out.completion_tokens)
        return Document(doc.id, doc.text, doc.domain, doc.source, meta)


def label_unit(unit: Unit, job: LabelJob) -> Iterator[Document | Rejected]:
    """``run_stage`` process: one unit's sampled documents → labelled documents + quarantined replies."""
    backend = backend_for(job.llm)
    before = usage_snapshot(backend)
    lab = Labeller(job)
    t0 = time.perf_counter()
    chunk: list[Document] = []
    n = 0

    def flush() -> Iterator[Document | Rejected]:
        outs = backend.generate([lab.request(d) for d in chunk])
        for doc, out in zip(chunk, outs, strict=True):
            yield lab.item(doc, out, backend.model_id)
        chunk.clear()

    for path, ids in unit:
        wanted = set(ids)
        for doc in iter_documents(path):
            if doc.id in wanted:
                n += 1
                chunk.append(doc)
                if len(chunk) >= CHUNK_DOCS:
                    yield from flush()
    if chunk:
        yield from flush()
    return {
        "in": n,
        "llm": usage_since(before, backend),
        "label": dict(lab.stats),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def label_documents(
    job: LabelJob, docs_dir: str | Path, out_dir: str | Path, rejected_dir: str | Path, executor: Executor
) -> dict[str, Any]:
    """Run the stage; stats with the label distribution and the cost (requests, tokens) of labelling."""
    units = plan_units(docs_dir, job.label, job.seed)
    try:
        stats = run_stage(
            label_unit,
            units,
            job,
            out_dir,
            rejected_dir,
            executor,
            job.label.docs_per_shard,
            desc="label",
            extras=("llm", "label"),
        )
    finally:
        close_backends()
    total, this_run = stats.pop("llm"), stats.pop("llm_this_run")
    counts = stats.pop("label")
    stats.pop("label_this_run")
    labelled = int(counts.get("labelled", 0))
    stats.update(
        llm={**{k: int(total.get(k, 0)) for k in USAGE_KEYS}, "model": f"{job.llm.backend}:{job.llm.model}"},
        llm_this_run={k: int(this_run.get(k, 0)) for k in USAGE_KEYS},
        cost_per_label={
            k: round(total.get(k, 0) / labelled, 2) if labelled else None
            for k in ("prompt_tokens", "completion_tokens")
        },
        labelled=labelled,
        malformed=int(counts.get("malformed", 0)),
        llm_failures=int(counts.get("llm_failure", 0)),
        label_histogram={
            d: {v: int(counts.get(f"{d}={v}", 0)) for v in range(6)} for d in job.label.dimensions
        },
    )
    return stats


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``label``: 0–5 rubric labels from ``llm`` for a per-domain sample of ``io.docs``."""
    from lmpipe.contract import LazyExecutor

    job = LabelJob(llm=p.llm, label=p.quality.label, seed=p.quality.label.seed)
    llm_ex = LazyExecutor(p.run.executor.model_copy(update={"workers": p.quality.label.workers}))
    try:
        return label_documents(job, io.docs, io.out, io.rejected, llm_ex)
    finally:
        llm_ex.close()
