"""The ``augment`` stage's logic: select documents, run EntiGraph and thought augmentation, check quality.

Work is split by shards of the input dataset and run through ``lmpipe.sharded.run_stage``, so a killed run
resumes shard by shard; inside a shard every LLM call goes through the persistent response cache, so
redoing an interrupted shard re-sends nothing that was already answered. All randomness (entity sampling,
per-request sampling seeds) derives from (run seed, document id), hence a rerun is byte-identical.

Outputs: ``synthetic``-domain documents with provenance in ``meta`` (method, source id, entities, model,
seed); the quarantine holds every generation that failed (LLM error with the raw payload, or a quality
reason) and every selected document that could not be augmented, so each selected document ends up
augmented or quarantined. Accounting (requests, cache hits, tokens, entity paths) is kept per shard.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from lmpipe.config import AugmentConfig, LLMConfig, Section, SelectConfig
from lmpipe.documents import Document, Rejected, iter_documents, read_manifest
from lmpipe.executors import Executor
from lmpipe.llm import GenFailure, GenRequest, GenResult, Outcome, Usage, make_backend
from lmpipe.llm.types import Backend
from lmpipe.sharded import run_stage
from lmpipe.synth import thoughts
from lmpipe.synth.entigraph import (
    Extraction,
    derive_seed,
    format_entities,
    heuristic_entities,
    parse_entities,
    plan_relations,
)
from lmpipe.synth.prompts import fill, load_template
from lmpipe.synth.quality import check, text_key

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO

SYNTHETIC = "synthetic"
CHUNK_DOCS = 64  # selected documents whose requests are sent as one batch (bounded memory, full batches)


class AugmentJob(Section):
    """Everything a shard's output depends on; its JSON is the resume fingerprint."""

    llm: LLMConfig
    augment: AugmentConfig
    seed: int
    prompts_dir: str | None = None


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


def plan_units(docs_dir: str | Path, cfg: AugmentConfig) -> list[tuple[str, tuple[str, int, int]]]:
    """One unit per input shard with how many selected docs it may augment per method, so a global
    ``max_docs`` means the first N in dataset order whatever the sharding. Reads ids/domains/meta only."""
    docs_dir = Path(docs_dir)
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
        cols = ["domain", "meta"] if need_meta else ["domain"]
        table = pq.read_table(path, columns=cols).to_pylist()
        for k, sel in sels.items():
            if left[k] == 0:
                quota[k] = 0
                continue
            n = sum(
                selected(r["domain"], json.loads(r["meta"] or "{}") if need_meta else {}, sel) for r in table
            )
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


# --------------------------------------------------------------------------------------- per shard
@dataclass
class _Work:
    """One selected document and what happened to it."""

    doc: Document
    entigraph: bool
    thought: bool
    extraction: Extraction | None = None
    failure: GenFailure | None = None  # entity step failed at the LLM


class ShardAugmenter:
    def __init__(self, job: AugmentJob, backend: Backend) -> None:
        self.job, self.cfg, self.backend = job, job.augment, backend
        self.model_id = backend.model_id
        d = job.prompts_dir
        self.tpl = {
            "entities": load_template("entities", d),
            "relation": load_template("relation", d),
            "thought": load_template(thoughts.TEMPLATE[self.cfg.thoughts.mode], d),
        }
        self.seen_texts: set[str] = set()
        self.stats: Counter[str] = Counter()

    def _request(self, prompt: str, max_tokens: int, *seed_parts: object) -> GenRequest:
        c = self.cfg
        return GenRequest(
            messages=(("user", prompt),),
            max_tokens=max_tokens,
            temperature=c.temperature,
            top_p=c.top_p,
            repetition_penalty=c.repetition_penalty,
            seed=derive_seed(self.job.seed, *seed_parts),
        )

    # ---------------------------------------------------------------------------- step 1: entities
    def extract(self, works: list[_Work]) -> None:
        eg = self.cfg.entigraph
        todo = [w for w in works if w.entigraph]
        for w in todo:
            w.extraction = Extraction([], source="pending")
        for attempt in range(eg.json_attempts):
            pending = [
                w for w in todo if w.extraction and w.extraction.source == "pending" and w.failure is None
            ]
            if not pending:
                break
            reqs = [
                self._request(
                    fill(self.tpl["entities"], document=w.doc.text[: eg.doc_chars]),
                    eg.entity_tokens,
                    w.doc.id,
                    "entities",
                    attempt,
                )
                for w in pending
            ]
            for w, out in zip(pending, self.backend.generate(reqs), strict=True):
                ex = w.extraction
                assert ex is not None
                ex.attempts += 1
                if isinstance(out, GenFailure):
                    w.failure = out
                    continue
                parsed = parse_entities(out.text, w.doc.text, eg.max_entities)
                if parsed is None:
                    ex.errors.append(f"attempt {attempt}: no usable JSON entities in {out.text[:80]!r}")
                    continue
                ex.entities, ex.summary = parsed[0], parsed[1]
                ex.source = "llm_repaired" if parsed[2] else "llm"
        for w in todo:
            ex = w.extraction
            if w.failure is None and ex is not None and ex.source == "pending":
                ex.entities, ex.source = heuristic_entities(w.doc.text, eg.max_entities), "heuristic"
            if w.failure is None and ex is not None:
                self.stats[f"entities_{ex.source}"] += 1

    # -------------------------------------------------------------------- step 2: texts + thoughts
    def generate(self, works: list[_Work]) -> Iterator[Document | Rejected]:
        eg, th = self.cfg.entigraph, self.cfg.thoughts
        jobs: list[tuple[_Work, Any, GenRequest]] = []  # (work, Relation or 'thought', request)
        for w in works:
            if w.entigraph and w.failure is None and w.extraction is not None:
                for rel in plan_relations(w.extraction.entities, w.doc.id, self.job.seed, eg):
                    prompt = fill(
                        self.tpl["relation"],
                        document=w.doc.text[: eg.doc_chars],
                        entities=format_entities(rel.entities),
                    )
                    jobs.append(
                        (w, rel, self._request(prompt, rel.max_tokens, w.doc.id, "relation", rel.entities))
                    )
            if w.thought:
                prompt = fill(self.tpl["thought"], document=w.doc.text[: th.doc_chars])
                jobs.append((w, "thought", self._request(prompt, th.max_tokens, w.doc.id, th.mode)))
        outs = self.backend.generate([r for _, _, r in jobs]) if jobs else []
        results: dict[str, list[tuple[Any, GenRequest, Outcome]]] = {}
        for (w, what, req), out in zip(jobs, outs, strict=True):
            results.setdefault(w.doc.id, []).append((what, req, out))
        for w in works:  # document order, then plan order: deterministic output
            if w.entigraph:
                yield from self._entigraph_items(w, results.get(w.doc.id, []))
            if w.thought:
                yield from (
                    self._item(w, "thought", req, out)
                    for what, req, out in results.get(w.doc.id, [])
                    if what == "thought"
                )

    def _entigraph_items(
        self, w: _Work, results: list[tuple[Any, GenRequest, Outcome]]
    ) -> Iterator[Document | Rejected]:
        base = self._provenance(w, "entigraph")
        if w.failure is not None:
            yield Rejected(
                Document(f"{w.doc.id}/entigraph", "", SYNTHETIC, w.doc.source, base),
                f"llm_{w.failure.reason}",
                f"entity extraction: {w.failure.detail}",
                w.failure.raw,
            )
            return
        rels = [(what, req, out) for what, req, out in results if what != "thought"]
        if not rels:
            yield Rejected(
                Document(f"{w.doc.id}/entigraph", "", SYNTHETIC, w.doc.source, base),
                "too_few_entities",
                f"{len(w.extraction.entities) if w.extraction else 0} entities",
            )
            return
        for rel, req, out in rels:
            yield self._item(w, rel, req, out)

    def _provenance(self, w: _Work, method: str) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "method": method,
            "source_id": w.doc.id,
            "source_domain": w.doc.domain,
            "model": self.model_id,
        }
        if method == "entigraph" and w.extraction is not None:
            meta.update(
                doc_entities=w.extraction.entities,
                summary=w.extraction.summary,
                entity_source=w.extraction.source,
                entity_attempts=w.extraction.attempts,
            )
        return meta

    def _item(self, w: _Work, what: Any, req: GenRequest, out: Outcome) -> Document | Rejected:
        if what == "thought":
            mode = self.cfg.thoughts.mode
            meta = {**self._provenance(w, mode), "seed": req.seed}
            doc_id = f"{w.doc.id}/{mode}"
        else:
            meta = {
                **self._provenance(w, "entigraph"),
                "entities": list(what.entities),
                "relation": what.kind,
                "seed": req.seed,
            }
            doc_id = f"{w.doc.id}/entigraph/{what.index:02d}"
        if isinstance(out, GenFailure):
            self.stats[f"rejected_{meta['method']}"] += 1
            return Rejected(
                Document(doc_id, "", SYNTHETIC, w.doc.source, meta), f"llm_{out.reason}", out.detail, out.raw
            )
        assert isinstance(out, GenResult)
        meta.update(finish_reason=out.finish_reason, completion_tokens=out.completion_tokens)
        verdict = check(out.text, out.finish_reason, self.cfg.quality)
        meta["trimmed"] = verdict.trimmed
        text = verdict.text
        if verdict.reason is None:
            key = text_key(text)
            if key in self.seen_texts:
                verdict = type(verdict)(text, "duplicate", "same words as an earlier generation")
            self.seen_texts.add(key)
        if what == "thought" and verdict.reason is None:
            text = thoughts.render(w.doc.text, text, self.cfg.thoughts)
        doc = Document(doc_id, text, SYNTHETIC, w.doc.source, meta)
        if verdict.reason is not None:
            self.stats[f"rejected_{meta['method']}"] += 1
            return Rejected(doc, verdict.reason, verdict.detail)
        self.stats[f"kept_{meta['method']}"] += 1
        return doc


def augment_unit(unit: tuple[str, int, int], job: AugmentJob) -> Iterator[Document | Rejected]:
    """``run_stage`` process function: one input shard → synthetic docs + quarantined generations."""
    path, eg_quota, th_quota = unit
    backend = backend_for(job.llm)
    usage0 = _usage_snapshot(backend)
    aug = ShardAugmenter(job, backend)
    n_in = 0
    left = {"eg": eg_quota, "th": th_quota}
    cfg = job.augment
    chunk: list[_Work] = []
    t0 = time.perf_counter()

    def flush() -> Iterator[Document | Rejected]:
        nonlocal n_in
        aug.extract(chunk)
        for item in aug.generate(chunk):
            n_in += 1
            yield item
        chunk.clear()

    for doc in iter_documents(path):
        if not (left["eg"] or left["th"]):
            break
        eg = left["eg"] > 0 and selected(doc.domain, doc.meta, cfg.entigraph.select)
        th = left["th"] > 0 and selected(doc.domain, doc.meta, cfg.thoughts.select)
        if not (eg or th):
            continue
        left["eg"] -= eg
        left["th"] -= th
        aug.stats["docs_entigraph"] += eg
        aug.stats["docs_thoughts"] += th
        chunk.append(_Work(doc, eg, th))
        if len(chunk) >= CHUNK_DOCS:
            yield from flush()
    if chunk:
        yield from flush()
    usage = _usage_snapshot(backend)
    usage_delta = {
        k: usage[k] - usage0[k]
        for k in ("requests", "attempts", "cache_hits", "failures", "prompt_tokens", "completion_tokens")
    }
    return {
        "in": n_in,
        "llm": usage_delta,
        "synth": dict(sorted(aug.stats.items())),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _usage_snapshot(backend: Backend) -> dict[str, int]:
    u = getattr(backend, "usage", None) or Usage()
    return {k: int(v) for k, v in u.to_dict().items() if isinstance(v, int)}


# ------------------------------------------------------------------------------------------- stage
def augment(
    job: AugmentJob, docs_dir: str | Path, out_dir: str | Path, rejected_dir: str | Path, executor: Executor
) -> dict:
    """Run the stage; returns stats with token/request accounting summed over shards."""
    units = plan_units(docs_dir, job.augment)
    try:
        stats = run_stage(augment_unit, units, job, out_dir, rejected_dir, executor, job.augment.docs_per_shard,
                          desc="augment", extras=("llm", "synth"))
    finally:
        close_backends()
    total, this_run = stats.pop("llm"), stats.pop("llm_this_run")
    synth = Counter(stats.pop("synth"))
    stats.pop("synth_this_run")
    kept_eg, kept_th = synth["kept_entigraph"], synth["kept_" + job.augment.thoughts.mode]
    rej_eg, rej_th = synth["rejected_entigraph"], synth["rejected_" + job.augment.thoughts.mode]
    stats.update(
        llm={**{k: total[k] for k in sorted(total)}, "model": f"{job.llm.backend}:{job.llm.model}"},
        llm_this_run={k: this_run[k] for k in sorted(this_run)},
        synth=dict(sorted(synth.items())),
        keep_rate={
            "entigraph": _rate(kept_eg, kept_eg + rej_eg),
            "thoughts": _rate(kept_th, kept_th + rej_th),
        },
        reject_rates={r: _rate(n, stats["in"]) for r, n in stats["by_reason"].items()},
    )
    return stats


def _rate(n: int, d: int) -> float:
    return round(n / d, 4) if d else 0.0


def run(p: Params, io: StageIO, ex: Executor) -> dict:
    """Stage ``augment``: EntiGraph texts and thought trajectories for the selected documents of ``io.docs``."""
    from lmpipe.contract import LazyExecutor

    job = AugmentJob(llm=p.llm, augment=p.augment, seed=p.run.seed, prompts_dir=p.augment.prompts_dir)
    llm_ex = LazyExecutor(p.run.executor.model_copy(update={"workers": p.augment.workers}))
    try:
        return augment(job, io.docs, io.out, io.rejected, llm_ex)
    finally:
        llm_ex.close()
