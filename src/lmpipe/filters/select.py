"""Decide later: apply one domain's rule set (thresholds from ``filter.select``) to stored scores.

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

from lmpipe.config import C4ScoreConfig, FilterSelectConfig, RuleSet
from lmpipe.documents import Document, Rejected, iter_batches, iter_documents
from lmpipe.filters import c4, pii
from lmpipe.sharded import dataset_units, run_stage

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.executors import Executor

# Report order: the most specific explanation first (a toxic page is "toxicity", not "fineweb"; a
# three-word page is "too few words" before its n-gram statistics). Entries are families or family/rule.
ORDER = ("decontamination", "encoding", "toxicity", "gopher_quality/words", "gopher_repetition", "gopher_quality",
         "c4", "fineweb", "language", "perplexity")


def _rank(f: Failure) -> int:
    key = f"{f.family}/{f.rule}"
    return ORDER.index(key) if key in ORDER else ORDER.index(f.family)


class Failure(BaseModel):
    family: str
    rule: str
    detail: str


class SelectJob(BaseModel):
    model_config = ConfigDict(frozen=True)
    cfg: FilterSelectConfig
    c4_lines: C4ScoreConfig = C4ScoreConfig()
    ppl_cutoffs: dict[str, dict[str, float]] = {}  # domain -> {"max": x, "head": a, "tail": b}


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _max(fails: list[Failure], family: str, name: str, value: float | None, limit: float | None) -> None:
    if limit is not None and value is not None and value > limit:
        fails.append(Failure(family=family, rule=name, detail=f"{name}={_fmt(value)} > {_fmt(limit)}"))


def _min(fails: list[Failure], family: str, name: str, value: float | None, limit: float | None) -> None:
    if limit is not None and value is not None and value < limit:
        fails.append(Failure(family=family, rule=name, detail=f"{name}={_fmt(value)} < {_fmt(limit)}"))


def check(s: dict[str, Any], rules: RuleSet, ppl_cutoff: float | None = None) -> list[Failure]:
    """Every failing check of ``rules`` on scores ``s``, in :data:`ORDER`."""
    f: list[Failure] = []
    if rules.decontamination and s.get("decontam_hits"):
        f.append(Failure(family="decontamination", rule="eval_ngram",
                         detail=f"shares {s['decontam_hits']} n-gram(s) with eval item {s['decontam_item']}"))
    if (r := rules.encoding) is not None:
        _max(f, "encoding", "mojibake", s.get("mojibake"), r.max_mojibake)
    if (r := rules.toxicity) is not None:
        _max(f, "toxicity", "tox_word_frac", s.get("tox_word_frac"), r.max_word_frac)
        _max(f, "toxicity", "tox_classifier", s.get("tox_classifier"), r.max_classifier)
        _max(f, "toxicity", "tox_hf", s.get("tox_hf"), r.max_hf)
    if (r := rules.gopher_repetition) is not None:
        fam = "gopher_repetition"
        _max(f, fam, "dup_para_frac", s["gr_dup_para_frac"], r.max_dup_para_frac)
        _max(f, fam, "dup_para_char_frac", s["gr_dup_para_char_frac"], r.max_dup_para_char_frac)
        _max(f, fam, "dup_line_frac", s["gr_dup_line_frac"], r.max_dup_line_frac)
        _max(f, fam, "dup_line_char_frac", s["gr_dup_line_char_frac"], r.max_dup_line_char_frac)
        for n, lim in sorted(r.max_top_ngram_frac.items()):
            _max(f, fam, f"top_{n}gram_frac", s.get(f"gr_top_{n}gram_frac"), lim)
        for n, lim in sorted(r.max_dup_ngram_frac.items()):
            _max(f, fam, f"dup_{n}gram_frac", s.get(f"gr_dup_{n}gram_frac"), lim)
    if (r := rules.gopher_quality) is not None:
        fam = "gopher_quality"
        _min(f, fam, "words", s["gq_words"], r.min_words)
        _max(f, fam, "words", s["gq_words"], r.max_words)
        if s["gq_words"]:
            _min(f, fam, "mean_word_len", s["gq_mean_word_len"], r.min_mean_word_len)
            _max(f, fam, "mean_word_len", s["gq_mean_word_len"], r.max_mean_word_len)
        _max(f, fam, "hash_ratio", s["gq_hash_ratio"], r.max_symbol_word_ratio)
        _max(f, fam, "ellipsis_ratio", s["gq_ellipsis_ratio"], r.max_symbol_word_ratio)
        _max(f, fam, "bullet_lines", s["gq_bullet_lines"], r.max_bullet_lines)
        _max(f, fam, "ellipsis_lines", s["gq_ellipsis_lines"], r.max_ellipsis_lines)
        _min(f, fam, "alpha_words", s["gq_alpha_words"], r.min_alpha_words)
        _min(f, fam, "stop_words", s["gq_stop_words"], r.min_stop_words)
    if (r := rules.c4) is not None:
        if r.lorem_ipsum and s["c4_lorem_ipsum"]:
            f.append(Failure(family="c4", rule="lorem_ipsum", detail="a kept line contains 'lorem ipsum'"))
        if r.curly_bracket and s["c4_curly_bracket"]:
            f.append(Failure(family="c4", rule="curly_bracket", detail="a kept line contains '{'"))
        _min(f, "c4", "sentences", s["c4_sentences"], r.min_sentences)
    if (r := rules.fineweb) is not None:
        fam = "fineweb"
        if not s["fw_lines"]:
            f.append(Failure(family=fam, rule="empty", detail="no non-blank line"))
        elif not (r.line_punct_exclude_zero and s["fw_line_punct_ratio"] == 0):
            _min(f, fam, "line_punct_ratio", s["fw_line_punct_ratio"], r.min_line_punct_ratio)
        _max(f, fam, "short_line_ratio", s["fw_short_line_ratio"], r.max_short_line_ratio)
        _max(f, fam, "char_dup_ratio", s["fw_char_dup_ratio"], r.max_char_dup_ratio)
        _max(f, fam, "list_ratio", s["fw_list_ratio"], r.max_list_ratio)
    if (r := rules.language) is not None:
        if s.get("lang") not in r.languages:
            f.append(Failure(family="language", rule="language",
                             detail=f"lang={s.get('lang')} not in {r.languages}"))
        else:
            _min(f, "language", "lang_score", s.get("lang_score"), r.min_score)
    if (r := rules.perplexity) is not None:
        _max(f, "perplexity", "perplexity", s.get("perplexity"), r.max_perplexity)
        _max(f, "perplexity", "perplexity_percentile", s.get("perplexity"), ppl_cutoff)
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
        rules = cfg.rules_for(doc.domain)
        s = doc.meta.get("scores")
        if s is None:
            yield Rejected(doc, "unscored", "no meta['scores']: run the score stage first")
            continue
        cut = job.ppl_cutoffs.get(doc.domain, {})
        fails = check(s, rules, cut.get("max"))
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
def scan_scores(scored: str | Path, sample_size: int, seed: int = 0) -> tuple[list[tuple[str, dict]], dict[str, list[float]], int]:
    """Stream the stored scores: a reservoir sample for plots, every perplexity per domain, the doc count."""
    rng = random.Random(seed)
    sample: list[tuple[str, dict]] = []
    ppl: dict[str, list[float]] = defaultdict(list)
    n = 0
    for batch in iter_batches(scored, ["domain", "meta"]):
        for domain, meta in zip(batch.column("domain").to_pylist(), batch.column("meta").to_pylist(), strict=True):
            s = json.loads(meta).get("scores", {}) if meta else {}
            if "perplexity" in s:
                ppl[domain].append(s["perplexity"])
            item = (domain, s)
            if len(sample) < sample_size:
                sample.append(item)
            elif (j := rng.randrange(n + 1)) < sample_size:
                sample[j] = item
            n += 1
    return sample, ppl, n


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
                   rejected: str | Path, plots_dir: str | Path, executor: Executor) -> dict[str, Any]:
    """Apply ``cfg``'s per-domain rules to the stored scores; kept and rejected datasets, histograms."""
    from lmpipe.filters import plots

    sample, ppl, total = scan_scores(scored, cfg.plot_sample)
    cutoffs = perplexity_cutoffs(cfg, ppl)
    job = SelectJob(cfg=cfg, c4_lines=c4_lines, ppl_cutoffs=cutoffs)
    stats = run_stage(select_unit, dataset_units(scored), job, out, rejected, executor, cfg.docs_per_shard,
                      desc="filter", extras=("rule_hits", "pii_scrubbed"))
    for name in ("rule_hits", "pii_scrubbed"):
        stats.pop(f"{name}_this_run")
    written = plots.histograms(sample, cfg, plots_dir)
    sweep = plots.toxicity_sweep(sample, cfg.toxicity_sweep, plots_dir, total)
    return {
        **stats,
        "drop_fraction": round(stats["rejected"] / max(stats["in"], 1), 4),
        "perplexity_cutoffs": cutoffs,
        "toxicity_sweep": sweep,
        "plots": len(written) + 1,
    }


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``filter``: decide on ``io.scored`` by ``filter.select``; kept → ``io.out``, dropped → ``io.rejected``."""
    return select_dataset(p.filter.select, p.filter.score.c4, io.scored, io.out, io.rejected, io.plots, ex)
