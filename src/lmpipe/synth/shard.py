"""One shard's augmentation: EntiGraph entity extraction, then one batch of every generation request, then checks.

Step 1 (EntiGraph only) extracts each document's entities, retrying broken JSON and falling back to a
heuristic. Step 2 plans a :class:`Generation` per EntiGraph relation and per thought and sends them all as one
batch, so the embedded model sees full batches whatever the mix of methods. Each answer then passes the
quality checks (shared by both methods, as is the duplicate check across the shard) and becomes a synthetic
document or a quarantined one. Both methods live here because they share that batch and those checks; the
method-specific pieces are :mod:`lmpipe.synth.entigraph` and :mod:`lmpipe.synth.thoughts`.

``entigraph.mode`` swaps EntiGraph for one of the baselines of its paper on the same selected documents:
``rephrase`` (LLM paraphrases of the whole document, no entity step) or ``raw`` (the document itself, no LLM).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lmpipe.documents import Document, Rejected
from lmpipe.llm.types import Backend, GenFailure, GenRequest, GenResult, Outcome
from lmpipe.synth import thoughts
from lmpipe.synth.config import AugmentConfig
from lmpipe.synth.entigraph import (
    Extraction,
    derive_seed,
    entity_format,
    format_entities,
    heuristic_entities,
    parse_entities,
    plan_relations,
)
from lmpipe.synth.prompts import fill, load_template
from lmpipe.synth.quality import check, text_key

SYNTHETIC = "synthetic"


@dataclass
class Work:
    """One selected document and what happened to it."""

    doc: Document
    entigraph: bool
    thought: bool
    extraction: Extraction | None = None
    failure: GenFailure | None = None  # entity step failed at the LLM


@dataclass(frozen=True)
class Generation:
    """One planned LLM call and the synthetic document its answer becomes."""

    work: Work
    method: str  # "entigraph" or the thoughts mode: ``meta["method"]`` and the stats key
    doc_id: str
    meta: dict[str, Any]  # provenance and the method's own fields, before the answer's
    request: GenRequest
    thought: bool  # an accepted thought is rendered around its document


class ShardAugmenter:
    def __init__(self, cfg: AugmentConfig, seed: int, prompts_dir: str | None, backend: Backend) -> None:
        self.cfg, self.seed, self.backend = cfg, seed, backend
        self.model_id = backend.model_id
        self.tpl = {
            "entities": load_template("entities", prompts_dir),
            "relation": load_template("relation", prompts_dir),
            "thought": load_template(thoughts.TEMPLATE[cfg.thoughts.mode], prompts_dir),
            "rephrase": load_template("rephrase", prompts_dir),
        }
        self.seen_texts: set[str] = set()
        self.stats: Counter[str] = Counter()

    def _request(
        self, prompt: str, max_tokens: int, *seed_parts: object, response_format: str = ""
    ) -> GenRequest:
        c = self.cfg
        return GenRequest(
            messages=(("user", prompt),),
            max_tokens=max_tokens,
            temperature=c.temperature,
            top_p=c.top_p,
            repetition_penalty=c.repetition_penalty,
            seed=derive_seed(self.seed, *seed_parts),
            response_format=response_format,
        )

    # ---------------------------------------------------------------------------- step 1: entities
    def extract(self, works: list[Work]) -> None:
        eg = self.cfg.entigraph
        todo = [w for w in works if w.entigraph and eg.mode == "entigraph"]
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
                    response_format=entity_format(eg),
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
    def _plan_rephrases(self, w: Work) -> list[Generation]:
        eg = self.cfg.entigraph
        prompt = fill(self.tpl["rephrase"], document=w.doc.text[: eg.doc_chars])
        return [
            Generation(w, "rephrase", f"{w.doc.id}/rephrase/{k:02d}", {**self._provenance(w, "rephrase"), "copy": k},
                       self._request(prompt, eg.rephrase_tokens, w.doc.id, "rephrase", k), thought=False)
            for k in range(eg.rephrases)
        ]

    def _plan_entigraph(self, w: Work) -> list[Generation]:
        eg = self.cfg.entigraph
        if w.entigraph and eg.mode == "rephrase":
            return self._plan_rephrases(w)
        if not (w.entigraph and w.failure is None and w.extraction is not None):
            return []
        out = []
        for rel in plan_relations(w.extraction.entities, w.doc.id, self.seed, eg):
            prompt = fill(
                self.tpl["relation"],
                document=w.doc.text[: eg.doc_chars],
                entities=format_entities(rel.entities),
            )
            req = self._request(prompt, rel.max_tokens, w.doc.id, "relation", rel.entities)
            meta = {**self._provenance(w, "entigraph"), "entities": list(rel.entities), "relation": rel.kind}
            out.append(
                Generation(w, "entigraph", f"{w.doc.id}/entigraph/{rel.index:02d}", meta, req, thought=False)
            )
        return out

    def _plan_thought(self, w: Work) -> list[Generation]:
        th = self.cfg.thoughts
        if not w.thought:
            return []
        prompt = fill(self.tpl["thought"], document=w.doc.text[: th.doc_chars])
        req = self._request(prompt, th.max_tokens, w.doc.id, th.mode)
        return [
            Generation(w, th.mode, f"{w.doc.id}/{th.mode}", self._provenance(w, th.mode), req, thought=True)
        ]

    def generate(self, works: list[Work]) -> Iterator[Document | Rejected]:
        plans = [g for w in works for g in (*self._plan_entigraph(w), *self._plan_thought(w))]
        outs = self.backend.generate([g.request for g in plans]) if plans else []
        results: dict[str, list[tuple[Generation, Outcome]]] = {}
        for g, out in zip(plans, outs, strict=True):
            results.setdefault(g.work.doc.id, []).append((g, out))
        for w in works:  # document order, then plan order: deterministic output
            done = results.get(w.doc.id, [])
            if w.entigraph and self.cfg.entigraph.mode == "raw":
                self.stats["kept_raw"] += 1
                yield Document(f"{w.doc.id}/raw", w.doc.text, SYNTHETIC, w.doc.source, self._provenance(w, "raw"))
            elif w.entigraph and self.cfg.entigraph.mode == "rephrase":
                yield from (self._item(g, out) for g, out in done if not g.thought)
            elif w.entigraph:
                yield from self._entigraph_items(w, [(g, out) for g, out in done if not g.thought])
            if w.thought:
                yield from (self._item(g, out) for g, out in done if g.thought)

    def _entigraph_items(
        self, w: Work, results: list[tuple[Generation, Outcome]]
    ) -> Iterator[Document | Rejected]:
        """The relation texts, or one quarantined record when extraction failed or found too few entities."""
        base = self._provenance(w, "entigraph")
        if w.failure is not None:
            yield Rejected(
                Document(f"{w.doc.id}/entigraph", "", SYNTHETIC, w.doc.source, base),
                f"llm_{w.failure.reason}",
                f"entity extraction: {w.failure.detail}",
                w.failure.raw,
            )
            return
        if not results:
            yield Rejected(
                Document(f"{w.doc.id}/entigraph", "", SYNTHETIC, w.doc.source, base),
                "too_few_entities",
                f"{len(w.extraction.entities) if w.extraction else 0} entities",
            )
            return
        for g, out in results:
            yield self._item(g, out)

    def _provenance(self, w: Work, method: str) -> dict[str, Any]:
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

    def _item(self, g: Generation, out: Outcome) -> Document | Rejected:
        w, meta = g.work, {**g.meta, "seed": g.request.seed}
        if isinstance(out, GenFailure):
            self.stats[f"rejected_{g.method}"] += 1
            return Rejected(
                Document(g.doc_id, "", SYNTHETIC, w.doc.source, meta),
                f"llm_{out.reason}",
                out.detail,
                out.raw,
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
        if g.thought and verdict.reason is None:
            text = thoughts.render(w.doc.text, text, self.cfg.thoughts)
        doc = Document(g.doc_id, text, SYNTHETIC, w.doc.source, meta)
        if verdict.reason is not None:
            self.stats[f"rejected_{g.method}"] += 1
            return Rejected(doc, verdict.reason, verdict.detail)
        self.stats[f"kept_{g.method}"] += 1
        return doc
