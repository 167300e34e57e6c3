"""The ``augment`` stage: select documents, augment them shard by shard (:mod:`lmpipe.synth.shard`), account.

Work is split by shards of the input dataset and run through ``lmpipe.sharded.run_stage``, so a killed run
resumes shard by shard; inside a shard every LLM call goes through the persistent response cache, so
redoing an interrupted shard re-sends nothing that was already answered. All randomness (entity sampling,
per-request sampling seeds) derives from (run seed, document id), hence a rerun is byte-identical.

Outputs: ``synthetic``-domain documents with provenance in ``meta`` (method, source id, entities, model,
seed); the quarantine holds every generation that failed (LLM error with the raw payload, or a quality
reason) and every selected document that could not be augmented, so each selected document ends up
augmented or quarantined. Accounting (requests, cache hits, tokens, entity paths) is kept per shard.

Held-out documents are never augmented: the tokenize stage holds out a keyed-hash split of the same input
documents (:mod:`lmpipe.docsplit`) for evaluation, and a synthetic text restating a held-out article would leak
it into (continual) pretraining. ``augment.exclude_heldout`` recomputes that split here and skips its docs.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from lmpipe.docsplit import SplitPlan, split_plan
from lmpipe.documents import Document, Rejected, iter_documents, read_manifest
from lmpipe.executors import Executor
from lmpipe.llm.backends import make_backend
from lmpipe.llm.config import LLMConfig
from lmpipe.llm.types import USAGE_KEYS, Backend, Usage
from lmpipe.sections import Section
from lmpipe.sharded import run_stage
from lmpipe.synth.config import AugmentConfig, SelectConfig
from lmpipe.synth.shard import ShardAugmenter, Work

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO

CHUNK_DOCS = 64  # selected documents whose requests are sent as one batch (bounded memory, full batches)


class Holdout(Section):
    """The tokenize stage's held-out split of the input documents (a :class:`SplitPlan`), to be skipped."""

    val_fraction: float
    force_val: list[str] = []
    force_train: list[str] = []

    @classmethod
    def of(cls, docs_dir: str | Path, val_fraction: float) -> Holdout:
        plan = split_plan(docs_dir, val_fraction)
        return cls(val_fraction=val_fraction, force_val=sorted(plan.force_val), force_train=sorted(plan.force_train))

    def plan(self) -> SplitPlan:
        return SplitPlan(self.val_fraction, set(self.force_val), set(self.force_train))


class AugmentJob(Section):
    """Everything a shard's output depends on; its JSON is the resume fingerprint."""

    llm: LLMConfig
    augment: AugmentConfig
    seed: int
    prompts_dir: str | None = None
    holdout: Holdout | None = None  # None: every input document may be augmented


# --------------------------------------------------------------------------------------- selection
def selected(domain: str, meta: dict[str, Any], sel: SelectConfig) -> bool:
    if sel.domains and domain not in sel.domains:
        return False
    if sel.score_field is not None:
        score = meta.get(sel.score_field)
        if not isinstance(score, int | float):
            return False
        if sel.min_score is not None and score < sel.min_score:
            return False
        if sel.max_score is not None and score > sel.max_score:
            return False
    return True


def held_out(doc_id: str, plan: SplitPlan | None) -> bool:
    return plan is not None and plan.split_of(doc_id) == "val"


def plan_units(
    docs_dir: str | Path, cfg: AugmentConfig, holdout: Holdout | None = None, skipped: Counter | None = None
) -> list[tuple[str, tuple[str, int, int]]]:
    """One unit per input shard with how many selected docs it may augment per method, so a global
    ``max_docs`` means the first N in dataset order whatever the sharding. Reads ids/domains/meta only.
    Held-out documents (``holdout``) are not selected; ``skipped`` counts them per method."""
    docs_dir = Path(docs_dir)
    plan = holdout.plan() if holdout else None
    left = {
        "eg": cfg.entigraph.select.max_docs if cfg.entigraph.enabled else 0,
        "th": cfg.thoughts.select.max_docs if cfg.thoughts.enabled else 0,
    }
    sels = {"eg": cfg.entigraph.select, "th": cfg.thoughts.select}
    need_meta = any(s.score_field for s in sels.values())
    units = []
    for shard in read_manifest(docs_dir)["shards"]:
        path = docs_dir / shard["path"]
        quota = {}
        if all(v == 0 for v in left.values()):
            break
        cols = ["id", "domain", "meta"] if need_meta else ["id", "domain"]
        table = pq.read_table(path, columns=cols).to_pylist()
        for k, sel in sels.items():
            if left[k] == 0:
                quota[k] = 0
                continue
            hits = [
                held_out(r["id"], plan)
                for r in table
                if selected(r["domain"], json.loads(r["meta"] or "{}") if need_meta else {}, sel)
            ]
            n = hits.count(False)
            if skipped is not None:
                skipped[k] += len(hits) - n
            quota[k] = n if left[k] is None else min(n, left[k])
            if left[k] is not None:
                left[k] -= quota[k]
        if quota["eg"] or quota["th"]:
            units.append(
                (f"{shard['sha256']}:{quota['eg']}:{quota['th']}", (str(path), quota["eg"], quota["th"]))
            )
    return units


# ------------------------------------------------------------------------------------------ backend
_BACKENDS: dict[str, Backend] = {}


def backend_for(cfg: LLMConfig) -> Backend:
    """One backend per process and config: the embedded model loads once for all shards a worker runs."""
    key = cfg.model_dump_json()
    if key not in _BACKENDS:
        _BACKENDS[key] = make_backend(cfg)
    return _BACKENDS[key]


def close_backends() -> None:
    while _BACKENDS:
        _BACKENDS.popitem()[1].close()


def augment_unit(unit: tuple[str, int, int], job: AugmentJob) -> Iterator[Document | Rejected]:
    """``run_stage`` process function: one input shard → synthetic docs + quarantined generations."""
    path, eg_quota, th_quota = unit
    backend = backend_for(job.llm)
    usage0 = usage_snapshot(backend)
    aug = ShardAugmenter(job.augment, job.seed, job.prompts_dir, backend)
    n_in = 0
    left = {"eg": eg_quota, "th": th_quota}
    cfg = job.augment
    chunk: list[Work] = []
    t0 = time.perf_counter()

    def flush() -> Iterator[Document | Rejected]:
        nonlocal n_in
        aug.extract(chunk)
        for item in aug.generate(chunk):
            n_in += 1
            yield item
        chunk.clear()

    plan = job.holdout.plan() if job.holdout else None
    for doc in iter_documents(path):
        if not (left["eg"] or left["th"]):
            break
        if held_out(doc.id, plan):
            continue
        eg = left["eg"] > 0 and selected(doc.domain, doc.meta, cfg.entigraph.select)
        th = left["th"] > 0 and selected(doc.domain, doc.meta, cfg.thoughts.select)
        if not (eg or th):
            continue
        left["eg"] -= eg
        left["th"] -= th
        aug.stats["docs_entigraph"] += eg
        aug.stats["docs_thoughts"] += th
        chunk.append(Work(doc, eg, th))
        if len(chunk) >= CHUNK_DOCS:
            yield from flush()
    if chunk:
        yield from flush()
    return {
        "in": n_in,
        "llm": usage_since(usage0, backend),
        "synth": dict(sorted(aug.stats.items())),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def usage_snapshot(backend: Backend) -> dict[str, int]:
    u = (getattr(backend, "usage", None) or Usage()).to_dict()
    return {k: int(u[k]) for k in USAGE_KEYS}


def usage_since(before: dict[str, int], backend: Backend) -> dict[str, int]:
    """The backend's counters spent since ``before`` (a :func:`usage_snapshot`): one unit's share."""
    now = usage_snapshot(backend)
    return {k: now[k] - before[k] for k in USAGE_KEYS}


# ------------------------------------------------------------------------------------------- stage
def augment(
    job: AugmentJob, docs_dir: str | Path, out_dir: str | Path, rejected_dir: str | Path, executor: Executor
) -> dict:
    """Run the stage; returns stats with token/request accounting summed over shards."""
    skipped: Counter[str] = Counter()
    units = plan_units(docs_dir, job.augment, job.holdout, skipped)
    try:
        stats = run_stage(augment_unit, units, job, out_dir, rejected_dir, executor, job.augment.docs_per_shard,
                          desc="augment", extras=("llm", "synth"))
    finally:
        close_backends()
    total, this_run = stats.pop("llm"), stats.pop("llm_this_run")
    synth = Counter(stats.pop("synth"))
    stats.pop("synth_this_run")
    eg_mode, th_mode = job.augment.entigraph.mode, job.augment.thoughts.mode
    kept_eg, kept_th = synth["kept_" + eg_mode], synth["kept_" + th_mode]
    rej_eg, rej_th = synth["rejected_" + eg_mode], synth["rejected_" + th_mode]
    stats.update(
        llm={**{k: total[k] for k in sorted(total)}, "model": f"{job.llm.backend}:{job.llm.model}"},
        llm_this_run={k: this_run[k] for k in sorted(this_run)},
        synth=dict(sorted(synth.items())),
        keep_rate={
            "entigraph": _rate(kept_eg, kept_eg + rej_eg),
            "thoughts": _rate(kept_th, kept_th + rej_th),
        },
        reject_rates={r: _rate(n, stats["in"]) for r, n in stats["by_reason"].items()},
        heldout_skipped={"entigraph": skipped["eg"], "thoughts": skipped["th"]},
    )
    return stats


def _rate(n: int, d: int) -> float:
    return round(n / d, 4) if d else 0.0


def run(p: Params, io: StageIO, ex: Executor) -> dict:
    """Stage ``augment``: EntiGraph texts and thought trajectories for the selected documents of ``io.docs``."""
    from lmpipe.contract import LazyExecutor

    # io.docs is the tokenize stage's input too, so this is exactly the split it holds out
    holdout = Holdout.of(io.docs, p.tokenize.val_fraction) if p.augment.exclude_heldout else None
    job = AugmentJob(llm=p.llm, augment=p.augment, seed=p.run.seed, prompts_dir=p.augment.prompts_dir,
                     holdout=holdout)
    llm_ex = LazyExecutor(p.run.executor.model_copy(update={"workers": p.augment.workers}))
    try:
        return augment(job, io.docs, io.out, io.rejected, llm_ex)
    finally:
        llm_ex.close()
