"""Histograms of each score with the thresholds of every domain marked, and the toxicity trade-off curve."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from lmpipe.config import FilterSelectConfig, RuleSet

# score key -> (rule family, attribute of that family's rules holding its threshold)
THRESHOLDS: dict[str, tuple[str, str]] = {
    "gq_words": ("gopher_quality", "min_words"),
    "gq_mean_word_len": ("gopher_quality", "min_mean_word_len"),
    "gq_hash_ratio": ("gopher_quality", "max_symbol_word_ratio"),
    "gq_ellipsis_ratio": ("gopher_quality", "max_symbol_word_ratio"),
    "gq_bullet_lines": ("gopher_quality", "max_bullet_lines"),
    "gq_ellipsis_lines": ("gopher_quality", "max_ellipsis_lines"),
    "gq_alpha_words": ("gopher_quality", "min_alpha_words"),
    "gq_stop_words": ("gopher_quality", "min_stop_words"),
    "gr_dup_para_frac": ("gopher_repetition", "max_dup_para_frac"),
    "gr_dup_para_char_frac": ("gopher_repetition", "max_dup_para_char_frac"),
    "gr_dup_line_frac": ("gopher_repetition", "max_dup_line_frac"),
    "gr_dup_line_char_frac": ("gopher_repetition", "max_dup_line_char_frac"),
    "c4_sentences": ("c4", "min_sentences"),
    "fw_line_punct_ratio": ("fineweb", "min_line_punct_ratio"),
    "fw_short_line_ratio": ("fineweb", "max_short_line_ratio"),
    "fw_char_dup_ratio": ("fineweb", "max_char_dup_ratio"),
    "fw_list_ratio": ("fineweb", "max_list_ratio"),
    "lang_score": ("language", "min_score"),
    "tox_word_frac": ("toxicity", "max_word_frac"),
    "tox_classifier": ("toxicity", "max_classifier"),
    "tox_hf": ("toxicity", "max_hf"),
    "mojibake": ("encoding", "max_mojibake"),
    "perplexity": ("perplexity", "max_perplexity"),
}


def threshold(rules: RuleSet, key: str) -> float | None:
    if key.startswith(("gr_top_", "gr_dup_")) and key.endswith("gram_frac"):
        r = rules.gopher_repetition
        if r is None:
            return None
        n = int(key.split("_")[2].removesuffix("gram"))
        table = r.max_top_ngram_frac if key.startswith("gr_top_") else r.max_dup_ngram_frac
        return table.get(n)
    fam, attr = THRESHOLDS.get(key, (None, None))
    family = getattr(rules, fam, None) if fam else None
    return getattr(family, attr, None) if family is not None else None


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
        if key not in THRESHOLDS and not key.startswith("gr_"):
            continue  # flags, counts and ids: nothing to threshold
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
