"""Run-report sections for evaluation (``metrics/evaluate.json``): per-domain held-out loss, closed-book QA,
post-training metrics, forgetting, toxicity, lm-eval tasks, the pre-filter held-out sample and the kept steps.
:mod:`lmpipe.report` assembles them with the data and training sections."""

from __future__ import annotations

from lmpipe.report_parts import Section, Table, fmt, grouped_bars, plt_agg, png


def heldout_section(ev: dict | None) -> Section:
    sec = Section(
        "heldout",
        "Held-out bits per byte",
        "Sum of token negative log-likelihood / (ln 2 × UTF-8 bytes), per domain: tokenizer-independent, "
        "lower is better.",
    )
    models = {n: r["heldout"] for n, r in (ev or {}).get("models", {}).items() if "heldout" in r}
    if not models:
        sec.missing = "No held-out results yet (metrics/evaluate.json is missing or has no heldout section)."
        return sec
    domains = sorted({d for h in models.values() for d in h})
    series = {
        n: [h.get(d, {}).get("bits_per_byte", float("nan")) for d in domains] for n, h in models.items()
    }
    sec.figures.append(grouped_bars(domains, series, "bits / byte", "Held-out bits per byte by domain"))
    rows = [
        [n, d, m["docs"], m["tokens"], fmt(m["loss"]), fmt(m["perplexity"]), fmt(m["bits_per_byte"])]
        for n, h in models.items()
        for d, m in h.items()
    ]
    sec.tables.append(
        Table(["model", "domain", "docs", "tokens", "loss (nats/token)", "perplexity", "bits/byte"], rows)
    )
    return sec


def qa_section(ev: dict | None) -> Section:
    sec = Section(
        "qa",
        "Closed-book QA (fictional knowledge)",
        "Questions about invented organisations; the prompt holds at most the title, never the article. "
        "MC: highest length-normalised log-likelihood among the options. EM: greedy answer, normalised.",
    )
    models = {n: r["qa"] for n, r in (ev or {}).get("models", {}).items() if "qa" in r}
    if not models:
        sec.missing = "No QA results yet (metrics/evaluate.json is missing or has no qa section)."
        return sec
    keys = [
        k
        for k in ("mc_accuracy", "mc_accuracy_unnormalised", "exact_match")
        if any(k in q for q in models.values())
    ]
    labels = {
        "mc_accuracy": "MC accuracy",
        "mc_accuracy_unnormalised": "MC (unnormalised)",
        "exact_match": "exact match",
    }
    sec.tables.append(
        Table(
            ["metric", *models],
            [[labels[k], *(fmt(q.get(k)) for q in models.values())] for k in keys]
            + [["questions", *(q.get("questions") for q in models.values())]],
            caption="models side by side",
        )
    )
    plot_keys = [k for k in ("mc_accuracy", "exact_match") if k in keys]
    series = {labels[k]: [q.get(k, float("nan")) for q in models.values()] for k in plot_keys}
    cov = {n: q["coverage"] for n, q in models.items() if "coverage" in q}
    if cov:  # covered = the entity is mentioned by the synthetic (augment) documents
        rows = [
            [
                n,
                f"{c['entities_covered']} / {c['entities']}",
                *(f"{fmt(c[k]['mc_accuracy'])} ({c[k]['questions']} q)" for k in ("covered", "not_covered")),
            ]
            for n, c in cov.items()
        ]
        sec.tables.append(
            Table(
                ["model", "entities covered", "MC covered", "MC not covered"],
                rows,
                caption="MC accuracy split by entity coverage of the synthetic documents",
            )
        )
        for k in ("covered", "not_covered"):
            series[f"MC {k.replace('_', ' ')}"] = [
                (q.get("coverage", {}).get(k, {}).get("mc_accuracy") or float("nan")) for q in models.values()
            ]
    sec.figures.append(grouped_bars(list(models), series, "accuracy", "Closed-book QA accuracy by model"))
    return sec


POSTTRAIN_LABELS = {
    "qa_exact_match": "held-out QA exact match",
    "pref_accuracy": "preference accuracy (held-out pairs)",
    "pref_margin": "preference margin (log-prob/token)",
    "response_chars_mean": "response length (characters)",
    "format": "prompt format",
}


def posttrain_section(ev: dict | None) -> Section:
    sec = Section(
        "posttrain",
        "Post-training: base → cpt → sft → dpo → rlvr → residual",
        "Held-out items only: fictional questions about entities and in wording never trained on, fresh "
        "math problems scored by math-verify, preference pairs scored by per-token log-probabilities. "
        "Chat models are prompted through their template, the others as 'Question: ... Answer:'. "
        "residual = cpt + (sft_base − pretrain): the instruction residual, no SFT on cpt; compare with sft.",
    )
    models = {n: r["posttrain"] for n, r in (ev or {}).get("models", {}).items() if "posttrain" in r}
    if not models:
        sec.missing = "No post-training metrics yet (evaluate.posttrain disabled or not run)."
        return sec
    keys = [k for k in ("qa_exact_match",) if any(k in m for m in models.values())]
    keys += sorted({k for m in models.values() for k in m if k.startswith("math_accuracy_")})
    keys += [
        k
        for k in ("pref_accuracy", "pref_margin", "response_chars_mean", "format")
        if any(k in m for m in models.values())
    ]
    label = lambda k: POSTTRAIN_LABELS.get(k, k.replace("math_accuracy_", "math accuracy: "))  # noqa: E731
    sec.tables.append(
        Table(
            ["metric", *models],
            [[label(k), *(fmt(m.get(k)) for m in models.values())] for k in keys],
            caption="models side by side, in pipeline order",
        )
    )
    bars = [
        k for k in keys if k == "qa_exact_match" or k.startswith("math_accuracy_") or k == "pref_accuracy"
    ]
    series = {label(k): [m.get(k, float("nan")) for m in models.values()] for k in bars}
    sec.figures.append(grouped_bars(list(models), series, "score", "Post-training metrics by model"))
    return sec


def forgetting_section(ev: dict | None) -> Section:
    sec = Section(
        "forgetting",
        "Forgetting",
        "Change of held-out bits/byte on old domains relative to the parent checkpoint "
        "(positive = worse = forgotten); QA deltas are child minus parent.",
    )
    models = {n: r["forgetting"] for n, r in (ev or {}).get("models", {}).items() if "forgetting" in r}
    if not models:
        sec.missing = (
            "No model has a parent yet (set evaluate.models.<name>.parent once a later stage exists)."
        )
        return sec
    domains = sorted({d for f in models.values() for d in f["domains"]})
    series = {
        f"{n} vs {f['parent']}": [
            f["domains"].get(d, {}).get("bits_per_byte_delta", float("nan")) for d in domains
        ]
        for n, f in models.items()
    }
    sec.figures.append(grouped_bars(domains, series, "Δ bits / byte", "Forgetting: change vs parent"))
    rows = [
        [
            n,
            f["parent"],
            fmt(f.get("mean_bits_per_byte_increase")),
            fmt(f.get("mc_accuracy_delta")),
            fmt(f.get("exact_match_delta")),
            ", ".join(f.get("missing_domains", [])),
        ]
        for n, f in models.items()
    ]
    sec.tables.append(
        Table(
            [
                "model",
                "parent",
                "mean Δ bits/byte (old domains)",
                "Δ MC accuracy",
                "Δ exact match",
                "domains missing",
            ],
            rows,
        )
    )
    return sec


def toxicity_section(ev: dict | None) -> Section:
    sec = Section(
        "toxicity",
        "Toxicity of generations",
        "RealToxicityPrompts-style: k sampled continuations per prompt. Expected maximum toxicity = mean "
        "over prompts of the worst continuation; toxicity probability = share of prompts with at least "
        "one continuation at or above the threshold.",
    )
    models = {n: r["toxicity"] for n, r in (ev or {}).get("models", {}).items() if "toxicity" in r}
    if not models:
        sec.missing = "No toxicity results yet (evaluate.toxicity.prompts empty, or evaluate has not run)."
        return sec
    rows = [
        [
            n,
            fmt(t["expected_max_toxicity"]),
            fmt(t["toxicity_probability"]),
            fmt(t["mean_toxicity"]),
            t["prompts"],
            t["samples_per_prompt"],
            t["scorer"],
        ]
        for n, t in models.items()
    ]
    sec.tables.append(
        Table(
            ["model", "expected max toxicity", "toxicity probability", "mean", "prompts", "k", "scorer"], rows
        )
    )
    return sec


def lm_eval_section(ev: dict | None) -> Section | None:
    models = {n: r["lm_eval"] for n, r in (ev or {}).get("models", {}).items() if "lm_eval" in r}
    if not models:
        return None
    sec = Section("lm-eval", "lm-evaluation-harness tasks")
    rows = []
    for n, res in models.items():
        if "skipped" in res:
            rows.append([n, "—", "—", res["skipped"]])
        else:
            rows += [[n, task, k, fmt(v)] for task, ms in res.items() for k, v in ms.items()]
    sec.tables.append(Table(["model", "task", "metric", "value"], rows))
    return sec


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
            grouped_bars(domains, series, "bits / byte", f"Pre-filter held-out ({subset}) bits per byte")
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
    plt = plt_agg()
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
        sec.figures.append(png(fig, f"{name}: held-out bits per byte at kept steps"))
        rows += [[name, s, *(fmt(curve[s].get(d, {}).get("bits_per_byte")) for d in domains)] for s in steps]
        sec.tables.append(Table(["model", "step", *domains], rows, caption=f"{name}: bits per byte by step"))
        rows = []
    return sec
