"""Stage ``refine`` (ProX-style): an LLM writes an edit program per document, :mod:`lmpipe.refine.program`
parses and executes it. Between ``dedup`` and ``tokenize``; off by default.

Off, documents pass through unchanged as hard links of the input shards (counted, nothing re-encoded). On,
work runs shard by shard through ``lmpipe.sharded.run_stage`` (a killed run resumes per shard) and every
request goes through the LLM layer's response cache (:func:`lmpipe.synth.augment.backend_for`), so a rerun
sends nothing twice; requests are greedy by default and seeded per document, hence reruns are identical.
Each selected document ends up kept (unchanged), edited (``meta["refine"]``: the program and the original's
SHA-256), dropped by its program (``refine_drop``), or quarantined (``refine_invalid`` with the parser's
reason, ``llm_<reason>`` when the LLM failed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmpipe.documents import Document, Rejected, ShardInfo, iter_documents, read_manifest, write_manifest
from lmpipe.llm.config import LLMConfig
from lmpipe.llm.types import GenFailure, GenRequest
from lmpipe.refine.config import RefineConfig
from lmpipe.refine.program import ProgramError, run_program
from lmpipe.sections import Section

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.executors import Executor

PROMPTS = Path(__file__).parent / "prompts"
CHUNK_DOCS = 32  # documents whose requests go to the backend as one batch


class RefineJob(Section):
    """Everything a shard's output depends on; its JSON is the resume fingerprint."""

    llm: LLMConfig
    refine: RefineConfig
    seed: int
    template: str  # the prompt text itself, so editing it reruns the stage


def show(text: str, cfg: RefineConfig) -> str:
    """The document as the model sees it: its first ``max_lines`` lines, numbered from 1, each cut short."""
    lines = text.split("\n")[: cfg.max_lines]
    return "\n".join(f"[{i}] {line[: cfg.line_chars]}" for i, line in enumerate(lines, 1))


def selected(doc: Document, cfg: RefineConfig) -> bool:
    return not cfg.domains or doc.domain in cfg.domains


def plan_units(docs_dir: str | Path, cfg: RefineConfig) -> list[tuple[str, tuple[str, int | None]]]:
    """One unit per input shard with how many selected docs it may refine, so ``max_docs`` means the first
    N in dataset order whatever the sharding."""
    import pyarrow.parquet as pq

    docs_dir, left = Path(docs_dir), cfg.max_docs
    units = []
    for shard in read_manifest(docs_dir)["shards"]:
        path = docs_dir / shard["path"]
        quota: int | None = None
        if left is not None:
            domains = pq.read_table(path, columns=["domain"]).column("domain").to_pylist()
            quota = min(left, sum(not cfg.domains or d in cfg.domains for d in domains))
            left -= quota
        units.append((f"{shard['sha256']}:{quota}", (str(path), quota)))
    return units


def _seed(seed: int, doc_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\0refine\0{doc_id}".encode()).digest()[:4], "big")


def refine_unit(unit: tuple[str, int | None], job: RefineJob) -> Iterator[Document | Rejected]:
    """``run_stage`` process function: one shard → kept / edited docs, dropped and quarantined ones."""
    from lmpipe.synth.augment import backend_for, usage_since, usage_snapshot
    from lmpipe.synth.prompts import fill

    path, quota = unit
    cfg = job.refine
    backend = backend_for(job.llm)
    usage0 = usage_snapshot(backend)
    counts: Counter[str] = Counter()
    n_in = 0
    chunk: list[Document] = []

    def flush() -> Iterator[Document | Rejected]:
        reqs = [
            GenRequest(
                messages=(("user", fill(job.template, document=show(d.text, cfg))),),
                max_tokens=cfg.max_tokens,
                temperature=cfg.temperature,
                seed=_seed(job.seed, d.id),
            )
            for d in chunk
        ]
        for doc, out in zip(chunk, backend.generate(reqs), strict=True):
            yield _apply(doc, out, cfg, counts)
        chunk.clear()

    t0 = time.perf_counter()
    left = quota
    for doc in iter_documents(path):
        n_in += 1
        if not selected(doc, cfg) or left == 0:
            counts["passed_through"] += 1
            yield doc
            continue
        if left is not None:
            left -= 1
        chunk.append(doc)
        if len(chunk) >= CHUNK_DOCS:
            yield from flush()
    if chunk:
        yield from flush()
    return {
        "in": n_in,
        "llm": usage_since(usage0, backend),
        "refine": dict(counts),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _apply(doc: Document, out: Any, cfg: RefineConfig, counts: Counter[str]) -> Document | Rejected:
    if isinstance(out, GenFailure):
        counts["llm_failed"] += 1
        return Rejected(doc, f"llm_{out.reason}", out.detail, out.raw)
    program = out.text.strip()
    try:
        res = run_program(program, doc.text, editable_lines=cfg.max_lines)
    except ProgramError as e:
        counts["invalid"] += 1
        return Rejected(
            Document(doc.id, doc.text, doc.domain, doc.source, {**doc.meta, "refine_program": program}),
            "refine_invalid",
            str(e),
        )
    counts.update({f"op_{k}": v for k, v in res.counts.items()})
    counts["chars_removed"] += res.chars_removed
    if res.text is None:
        counts["dropped"] += 1
        return Rejected(
            Document(doc.id, doc.text, doc.domain, doc.source, {**doc.meta, "refine_program": program}),
            "refine_drop",
            "the edit program dropped the document",
        )
    if res.text == doc.text:
        counts["unchanged"] += 1
        return doc
    if not res.text.strip():
        counts["emptied"] += 1
        return Rejected(
            Document(doc.id, doc.text, doc.domain, doc.source, {**doc.meta, "refine_program": program}),
            "refine_empty",
            "the edits removed every character but whitespace",
        )
    counts["edited"] += 1
    sha = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
    meta = {
        **doc.meta,
        "refine": {"program": program, "original_sha256": sha, "chars_removed": res.chars_removed},
    }
    return Document(doc.id, res.text, doc.domain, doc.source, meta)


# ------------------------------------------------------------------------------------------- stage
def pass_through(docs_dir: str | Path, out_dir: str | Path, rejected_dir: str | Path) -> dict[str, Any]:
    """Off: the input shards hard-linked (copied across file systems) under the same names, counted."""
    docs_dir, out_dir, rejected_dir = Path(docs_dir), Path(out_dir), Path(rejected_dir)
    manifest = read_manifest(docs_dir)
    for d in (out_dir, rejected_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    shutil.rmtree(out_dir.parent / ".state" / out_dir.name, ignore_errors=True)  # markers of an enabled run
    for s in manifest["shards"]:
        try:
            os.link(docs_dir / s["path"], out_dir / s["path"])
        except OSError:
            shutil.copy2(docs_dir / s["path"], out_dir / s["path"])
    write_manifest(out_dir, [ShardInfo(**s) for s in manifest["shards"]])
    write_manifest(rejected_dir, [])
    n = int(manifest["docs"])
    return {"enabled": False, "in": n, "kept": n, "rejected": 0, "passed_through": n}


def refine(
    job: RefineJob, docs_dir: str | Path, out_dir: str | Path, rejected_dir: str | Path, executor: Executor
) -> dict[str, Any]:
    from lmpipe.sharded import run_stage
    from lmpipe.synth.augment import close_backends

    try:
        stats = run_stage(
            refine_unit,
            plan_units(docs_dir, job.refine),
            job,
            out_dir,
            rejected_dir,
            executor,
            job.refine.docs_per_shard,
            desc="refine",
            extras=("llm", "refine"),
        )
    finally:
        close_backends()
    counts = stats.pop("refine")
    stats.pop("refine_this_run")
    edits = {k.removeprefix("op_"): v for k, v in counts.items() if k.startswith("op_")}
    docs = {k: v for k, v in counts.items() if not k.startswith("op_") and k != "chars_removed"}
    stats.update(
        enabled=True,
        edits=dict(sorted(edits.items())),
        docs=dict(sorted(docs.items())),
        chars_removed=counts.get("chars_removed", 0),
        model=f"{job.llm.backend}:{job.llm.model}",
    )
    return stats


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``refine``: edit programs for the selected documents of ``io.docs`` (or a pass-through when off)."""
    from lmpipe.contract import LazyExecutor
    from lmpipe.synth.prompts import load_template

    cfg = p.refine
    if not cfg.enabled:
        return pass_through(io.docs, io.out, io.rejected)
    override = cfg.prompts_dir and (Path(cfg.prompts_dir) / "refine.txt").exists()
    job = RefineJob(
        llm=p.llm,
        refine=cfg,
        seed=p.run.seed,
        template=load_template("refine", cfg.prompts_dir if override else PROMPTS),
    )
    llm_ex = LazyExecutor(p.run.executor.model_copy(update={"workers": cfg.workers}))
    try:
        return refine(job, io.docs, io.out, io.rejected, llm_ex)
    finally:
        llm_ex.close()
