"""Run-report sections for the evaluation over the pre-filter held-out sample and over the kept steps
(``heldout_prefilter`` and ``steps`` of ``metrics/evaluate.json``), beside :mod:`lmpipe.report`'s others."""

from __future__ import annotations

from lmpipe.report import Section, Table, _grouped_bars, _plt, _png, fmt


def prefilter_section(ev: dict | None) -> Section:
    sec = Section(
        "heldout-prefilter",
        "Held-out bits per byte, sample drawn before filtering",
        "Documents held out at ingest (ingest.holdout), before any filter or dedup, so every arm of a "
        "filtering study is scored on the same documents: raw = the whole sample, clean = the part the "
        "filter rules keep (scrubbed as the filter does).",
    )
    models = {
        n: r["heldout_prefilter"] for n, r in (ev or {}).get("models", {}).items() if "heldout_prefilter" in r
    }
    if not models:
        sec.missing = (
            "No pre-filter held-out results (ingest.holdout holds nothing out, or evaluate has not run)."
        )
        return sec
    for subset in ("clean", "raw"):
        per = {n: h[subset] for n, h in models.items() if subset in h}
        if not per:
            continue
        domains = sorted({d for h in per.values() for d in h})
        series = {
            n: [h.get(d, {}).get("bits_per_byte", float("nan")) for d in domains] for n, h in per.items()
        }
        sec.figures.append(
            _grouped_bars(domains, series, "bits / byte", f"Pre-filter held-out ({subset}) bits per byte")
        )
    rows = [
        [n, s, d, x["docs"], x["tokens"], fmt(x["loss"]), fmt(x["bits_per_byte"])]
        for n, h in models.items()
        for s, per in sorted(h.items())
        for d, x in per.items()
    ]
    sec.tables.append(
        Table(["model", "subset", "domain", "docs", "tokens", "loss (nats/token)", "bits/byte"], rows)
    )
    return sec


def steps_section(ev: dict | None) -> Section | None:
    """Held-out bits/byte of the models kept at train.keep_steps, one line per domain; None when none were kept."""
    models = {n: r["steps"] for n, r in (ev or {}).get("models", {}).items() if r.get("steps")}
    if not models:
        return None
    sec = Section(
        "kept-steps",
        "Held-out bits per byte over training (kept steps)",
        "Each model kept at train.keep_steps scored on the held-out split like the final model "
        "(metrics/evaluate.json: models.<name>.steps; metrics/evaluate_steps.tsv).",
    )
    plt = _plt()
    rows = []
    for name, curve in models.items():
        steps = sorted(curve, key=int)
        domains = sorted({d for s in steps for d in curve[s]})
        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        for d in domains:
            pts = [(int(s), curve[s][d]["bits_per_byte"]) for s in steps if d in curve[s]]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o",
                label=d,
                linewidth=2.2 if d == "all" else 1.2,
            )
        ax.set_xlabel("step")
        ax.set_ylabel("bits / byte")
        ax.set_title(f"{name}: held-out bits per byte at kept steps")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        sec.figures.append(_png(fig, f"{name}: held-out bits per byte at kept steps"))
        rows += [[name, s, *(fmt(curve[s].get(d, {}).get("bits_per_byte")) for d in domains)] for s in steps]
        sec.tables.append(Table(["model", "step", *domains], rows, caption=f"{name}: bits per byte by step"))
        rows = []
    return sec
