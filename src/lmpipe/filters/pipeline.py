"""Drivers of the two stages: ``score_dataset`` (stage ``score``) and ``select_dataset`` (stage ``filter``)."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from lmpipe.config import C4ScoreConfig, FilterScoreConfig, FilterSelectConfig
from lmpipe.documents import iter_batches
from lmpipe.executors import Executor
from lmpipe.filters import plots
from lmpipe.filters.score import build_models, score_unit
from lmpipe.filters.select import SelectJob, select_unit
from lmpipe.sharded import dataset_units, run_stage


def score_dataset(cfg: FilterScoreConfig, docs: str | Path, out: str | Path, rejected: str | Path,
                  model_dir: str | Path, executor: Executor) -> dict[str, Any]:
    job, info = build_models(cfg, docs, model_dir)
    stats = run_stage(score_unit, dataset_units(docs), job, out, rejected, executor, cfg.docs_per_shard, desc="score")
    return {**stats, "models": info}


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
    sample, ppl, total = scan_scores(scored, cfg.plot_sample)
    cutoffs = perplexity_cutoffs(cfg, ppl)
    job = SelectJob(cfg=cfg, c4_lines=c4_lines, ppl_cutoffs=cutoffs)
    state = Path(out).parent / ".state" / Path(out).name
    stats = run_stage(select_unit, dataset_units(scored), job, out, rejected, executor, cfg.docs_per_shard,
                      desc="filter", state_dir=state)
    hits: Counter[str] = Counter()
    scrubbed: Counter[str] = Counter()
    for marker in sorted(state.glob("*.json")):
        m = json.loads(marker.read_text())
        hits.update(m.get("rule_hits", {}))
        scrubbed.update(m.get("pii_scrubbed", {}))
    written = plots.histograms(sample, cfg, plots_dir)
    sweep = plots.toxicity_sweep(sample, cfg.toxicity_sweep, plots_dir, total)
    return {
        **stats,
        "drop_fraction": round(stats["rejected"] / max(stats["in"], 1), 4),
        "rule_hits": dict(sorted(hits.items())),
        "pii_scrubbed": dict(sorted(scrubbed.items())),
        "perplexity_cutoffs": cutoffs,
        "toxicity_sweep": sweep,
        "plots": len(written) + 1,
    }
