"""Histograms of each score with the thresholds of every domain marked, and the toxicity trade-off curve."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from lmpipe.filters.config import FilterSelectConfig, RuleSet
from lmpipe.filters.quality import PREFIX as QUALITY_PREFIX
from lmpipe.filters.rules import Rule
from lmpipe.filters.select import RULES


def bounding_rule(key: str) -> Rule | None:
    """The rule whose bound is drawn on score ``key``'s histogram: the first in the tables, so a score with both
    bounds shows its lower one (Gopher's upper bound of 100,000 words would only stretch the axis)."""
    return next((r for r in RULES if r.bounds_score(key)), None)


def threshold(rules: RuleSet, key: str) -> float | None:
    """The bound drawn on score ``key`` for a domain with ``rules`` (``None``: no line)."""
    rule = bounding_rule(key)
    family = getattr(rules, rule.family) if rule is not None else None
    return rule.limit_for(key, family) if family is not None else None


def histograms(sample: list[tuple[str, dict[str, Any]]], cfg: FilterSelectConfig, out_dir: str | Path) -> list[str]:
    """One PNG per numeric score: stacked per-domain histogram, dashed line at each domain's threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_key: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for domain, s in sample:
        for k, v in s.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                by_key[k][domain].append(float(v))
    written = []
    for key in sorted(by_key):
        if bounding_rule(key) is None and not key.startswith(QUALITY_PREFIX):
            continue  # flags, counts and ids: nothing to threshold (the rater's dimensions are drawn unbounded)
        domains = sorted(by_key[key])
        data = [np.asarray(by_key[key][d]) for d in domains]
        allv = np.concatenate(data)
        log = key in ("perplexity", "gq_words", "chars") and allv.min() > 0
        fig, ax = plt.subplots(figsize=(7, 3.6))
        bins = np.geomspace(allv.min(), allv.max(), 40) if log and allv.max() > allv.min() else 40
        ax.hist(data, bins=bins, stacked=True, label=domains)
        if log:
            ax.set_xscale("log")
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, d in enumerate(domains):
            t = threshold(cfg.rules_for(d), key)
            if t is not None:
                ax.axvline(t, color=colors[i % len(colors)], linestyle="--", linewidth=1.2)
        ax.set_title(f"{key} (dashed: threshold per domain)")
        ax.set_xlabel(key)
        ax.set_ylabel("documents")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{key}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(str(path))
    return written


def toxicity_sweep(sample: list[tuple[str, dict[str, Any]]], thresholds: list[float], out_dir: str | Path,
                   total: int) -> dict[str, dict[str, int]]:
    """How many documents each word-list (and classifier) threshold would remove, per domain; plus a plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = total / max(len(sample), 1)  # the sample may be a subset; report counts for the whole set
    curves: dict[str, dict[str, int]] = {}
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key in ("tox_word_frac", "tox_classifier"):
        if not any(key in s for _, s in sample):
            continue
        removed = {f"{t:g}": round(scale * sum(1 for _, s in sample if s.get(key, 0) > t)) for t in thresholds}
        curves[key] = removed
        ax.plot(thresholds, list(removed.values()), marker="o", label=key)
    ax.set_xlabel("threshold (drop if score > threshold)")
    ax.set_ylabel("documents removed")
    ax.set_title("toxicity threshold trade-off")
    ax.legend()
    fig.tight_layout()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(out_dir) / "toxicity_sweep.png", dpi=80)
    plt.close(fig)
    return curves
