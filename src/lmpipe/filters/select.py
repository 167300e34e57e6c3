"""Decide later: apply one domain's rule set (thresholds from ``filter.select``) to stored scores.

The bounds come from each family's ``RULES`` table (:mod:`lmpipe.filters.rules`), collected in :data:`RULES`.
Every failing check is recorded (``meta["filter_failed"]``), the first one in :data:`ORDER` names the
rejection (``reason``) and its measurement the ``detail`` (``dup_line_frac=0.41 > 0.3``), so each dropped
document says why. Kept documents of domains with ``pii_scrub`` get e-mails, phones and public IPs replaced.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from lmpipe.documents import Document, Rejected, iter_batches, iter_documents
from lmpipe.filters import c4, encoding, fineweb, gopher, language, perplexity, pii, quality, toxicity
from lmpipe.filters.config import C4ScoreConfig, FilterSelectConfig, RuleSet
from lmpipe.filters.rules import Failure, Rule, bound_failure
from lmpipe.sharded import dataset_units, run_stage

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.executors import Executor

# Report order: the most specific explanation first (a toxic page is "toxicity", not "fineweb"; a
# three-word page is "too few words" before its n-gram statistics). Entries are families or family/rule.
ORDER = ("decontamination", "encoding", "toxicity", "gopher_quality/words", "gopher_repetition", "gopher_quality",
         "c4", "fineweb", "language", "perplexity", "quality")


# Every bound, family by family; within a family the table order is the order failures are listed in.
RULES: tuple[Rule, ...] = (*encoding.RULES, *toxicity.RULES, *gopher.RULES, *c4.RULES, *fineweb.RULES,
                           *language.RULES, *perplexity.RULES, *quality.RULES)


def _rank(f: Failure) -> int:
    key = f"{f.family}/{f.rule}"
    return ORDER.index(key) if key in ORDER else ORDER.index(f.family)


class SelectJob(BaseModel):
    model_config = ConfigDict(frozen=True)
    cfg: FilterSelectConfig
    c4_lines: C4ScoreConfig = C4ScoreConfig()
    ppl_cutoffs: dict[str, dict[str, float]] = {}  # domain -> {"max": x, "head": a, "tail": b}
    quality_cutoffs: dict[str, float] = {}  # domain -> lowest combined quality kept by ``top_percent``


def check(s: dict[str, Any], rules: RuleSet, ppl_cutoff: float | None = None,
          quality_cutoff: float | None = None) -> list[Failure]:
    """Every failing check of ``rules`` on scores ``s``, in :data:`ORDER`."""
    f: list[Failure] = []
    # The checks that are not a bound on one score stay here: a switch plus the eval item to name,
    # C4's page flags, FineWeb's page without lines, and language membership (a set, not a bound).
    if rules.decontamination and s.get("decontam_hits"):
        f.append(Failure(family="decontamination", rule="eval_ngram",
                         detail=f"shares {s['decontam_hits']} n-gram(s) with eval item {s['decontam_item']}"))
    if (r := rules.c4) is not None:
        if r.lorem_ipsum and s["c4_lorem_ipsum"]:
            f.append(Failure(family="c4", rule="lorem_ipsum", detail="a kept line contains 'lorem ipsum'"))
        if r.curly_bracket and s["c4_curly_bracket"]:
            f.append(Failure(family="c4", rule="curly_bracket", detail="a kept line contains '{'"))
    if rules.fineweb is not None and not s["fw_lines"]:
        f.append(Failure(family="fineweb", rule="empty", detail="no non-blank line"))
    if (r := rules.language) is not None and s.get("lang") not in r.languages:
        f.append(Failure(family="language", rule="language", detail=f"lang={s.get('lang')} not in {r.languages}"))
    for rule in RULES:
        if (family_rules := getattr(rules, rule.family)) is not None:
            f.extend(rule.failures(s, family_rules))
    # The percentile cutoff is per domain, computed by the stage from all scores: not a knob's value.
    ppl_fail = bound_failure("perplexity", "perplexity_percentile", "max", s.get("perplexity"), ppl_cutoff)
    if rules.perplexity is not None and ppl_fail is not None:
        f.append(ppl_fail)
    q_fail = bound_failure("quality", "quality_top_percent", "min", s.get(quality.SCORE), quality_cutoff)
    if rules.quality is not None and q_fail is not None:
        f.append(q_fail)
    return sorted(f, key=_rank)


def select_unit(unit: str, job: SelectJob) -> Iterator[Document | Rejected]:
    """``run_stage`` process: scored shard in, kept (PII-scrubbed) documents and reasoned rejections out."""
    cfg = job.cfg
    line_rules = c4.C4LineRules(**job.c4_lines.model_dump())
    n = 0
    hits: Counter[str] = Counter()
    scrubbed: Counter[str] = Counter()
    for doc in iter_documents(unit):
        n += 1
        if cfg.bypass:  # a no-filter arm: the document as it is, not even scrubbed
            yield doc
            continue
        rules = cfg.rules_for(doc.domain)
        s = doc.meta.get("scores")
        if s is None:
            yield Rejected(doc, "unscored", "no meta['scores']: run the score stage first")
            continue
        cut = job.ppl_cutoffs.get(doc.domain, {})
        fails = check(s, rules, cut.get("max"), job.quality_cutoffs.get(doc.domain))
        hits.update(f"{x.family}/{x.rule}" for x in fails)
        if fails:
            doc.meta["filter_failed"] = [f"{x.family}/{x.rule}" for x in fails]
            extra = f" (+{len(fails) - 1} more: {', '.join(doc.meta['filter_failed'][1:])})" if len(fails) > 1 else ""
            yield Rejected(doc, fails[0].family, fails[0].detail + extra)
            continue
        if "perplexity" in s and "head" in cut:
            ppl = s["perplexity"]
            doc.meta["ppl_band"] = "head" if ppl <= cut["head"] else "middle" if ppl <= cut["tail"] else "tail"
        if rules.c4 is not None and rules.c4.remove_lines:
            doc.text = "\n".join(c4.clean_lines(doc.text, line_rules)[0])
        if rules.pii_scrub and any(s.get(f"pii_{k}") for k in pii.KINDS):
            doc.text, counts = pii.scrub(doc.text, cfg.pii_replacements)
            if counts:
                doc.meta["pii_scrubbed"] = dict(counts)
                scrubbed.update(counts)
        yield doc
    return {"in": n, "rule_hits": dict(hits), "pii_scrubbed": dict(scrubbed)}


# ------------------------------------------------------------------ the stage driver
def scan_scores(
    scored: str | Path, sample_size: int, seed: int = 0
) -> tuple[list[tuple[str, dict]], dict[str, list[float]], int, dict[str, list[float]]]:
    """Stream the stored scores: a reservoir sample for plots, every perplexity and every combined quality
    score per domain, the doc count."""
    rng = random.Random(seed)
    sample: list[tuple[str, dict]] = []
    ppl: dict[str, list[float]] = defaultdict(list)
    qual: dict[str, list[float]] = defaultdict(list)
    n = 0
    for batch in iter_batches(scored, ["domain", "meta"]):
        for domain, meta in zip(batch.column("domain").to_pylist(), batch.column("meta").to_pylist(), strict=True):
            s = json.loads(meta).get("scores", {}) if meta else {}
            if "perplexity" in s:
                ppl[domain].append(s["perplexity"])
            if quality.SCORE in s:
                qual[domain].append(s[quality.SCORE])
            item = (domain, s)
            if len(sample) < sample_size:
                sample.append(item)
            elif (j := rng.randrange(n + 1)) < sample_size:
                sample[j] = item
            n += 1
    return sample, ppl, n, qual


def perplexity_cutoffs(cfg: FilterSelectConfig, ppl: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """CCNet-style per-domain percentiles: band edges (head/middle/tail) and the optional drop cutoff."""
    out: dict[str, dict[str, float]] = {}
    for domain, values in ppl.items():
        rules = cfg.rules_for(domain).perplexity
        if rules is None or not values:
            continue
        arr = np.asarray(values)
        cut = {"head": float(np.percentile(arr, rules.bands[0])), "tail": float(np.percentile(arr, rules.bands[1]))}
        if rules.max_percentile is not None:
            cut["max"] = float(np.percentile(arr, rules.max_percentile))
        out[domain] = cut
    return out


def select_dataset(cfg: FilterSelectConfig, c4_lines: C4ScoreConfig, scored: str | Path, out: str | Path,
                   rejected: str | Path, plots_dir: str | Path, executor: Executor,
                   heldout: tuple[Path, Path, Path] | None = None) -> dict[str, Any]:
    """Apply ``cfg``'s per-domain rules to the stored scores; kept and rejected datasets, histograms.

    ``heldout``: ``(scored, clean, rejected)`` of the pre-filter held-out sample, judged by the same job (the
    per-domain cutoffs come from ``scored`` alone): its ``clean`` part is what the filter would keep of it."""
    from lmpipe.filters import plots

    sample, ppl, total, qual = scan_scores(scored, cfg.plot_sample)
    cutoffs = perplexity_cutoffs(cfg, ppl)
    q_cutoffs = {d: quality.top_percent_cutoff(v, r.top_percent) for d, v in sorted(qual.items())
                 if v and (r := cfg.rules_for(d).quality) is not None and r.top_percent is not None}
    job = SelectJob(cfg=cfg, c4_lines=c4_lines, ppl_cutoffs=cutoffs, quality_cutoffs=q_cutoffs)
    stats = run_stage(select_unit, dataset_units(scored), job, out, rejected, executor, cfg.docs_per_shard,
                      desc="filter", extras=("rule_hits", "pii_scrubbed"))
    for name in ("rule_hits", "pii_scrubbed"):
        stats.pop(f"{name}_this_run")
    held: dict[str, Any] = {}
    if heldout is not None:
        h_scored, h_clean, h_rejected = heldout
        # judged by the rules even when training bypasses them: the clean part is the same in every such arm
        judge = job.model_copy(update={"cfg": cfg.model_copy(update={"bypass": False})})
        h = run_stage(select_unit, dataset_units(h_scored), judge, h_clean, h_rejected, executor, cfg.docs_per_shard,
                      desc="filter heldout")
        held = {"heldout": {"in": h["in"], "clean": h["kept"], "rejected": h["rejected"],
                            "clean_by_domain": h["kept_by_domain"], "by_reason": h["by_reason"],
                            "conservation": f"in {h['in']} = clean {h['kept']} + rejected {h['rejected']}"}}
    written = plots.histograms(sample, cfg, plots_dir)
    sweep = plots.toxicity_sweep(sample, cfg.toxicity_sweep, plots_dir, total)
    return {
        **stats,
        **held,
        "drop_fraction": round(stats["rejected"] / max(stats["in"], 1), 4),
        "perplexity_cutoffs": cutoffs,
        "quality_cutoffs": q_cutoffs,
        "toxicity_sweep": sweep,
        "plots": len(written) + 1,
    }


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``filter``: decide on ``io.scored`` by ``filter.select``; kept → ``io.out``, dropped → ``io.rejected``;
    the scored pre-filter held-out sample ``io.heldout_scored`` (when given) → ``io.heldout_clean`` + rejected."""
    heldout = (io.heldout_scored, io.heldout_clean, io.heldout_rejected) if "heldout_scored" in io else None
    return select_dataset(p.filter.select, p.filter.score.c4, io.scored, io.out, io.rejected, io.plots, ex, heldout)
