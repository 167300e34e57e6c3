"""One self-contained HTML report per run: training curves, held-out bits/byte at kept steps, per-domain
bits/byte (and on the sample held out before filtering, :mod:`lmpipe.report_eval`), closed-book QA side by
side, forgetting, toxicity, mixture weights, the data funnel, sample generations, and links to the study pages
(``reports/studies/*.html``, written by ``lmpipe study run``) with their claims' verdicts.

Offline by construction: figures are matplotlib (Agg) PNGs embedded as base64, styles are inline, and no
script is loaded from anywhere. Every section reads files the pipeline writes (``metrics/*.json``,
``reports/samples.jsonl``, DVCLive ``*.tsv``); a section whose inputs do not exist yet says so instead.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmpipe.report_config import ReportConfig
from lmpipe.report_eval import (
    forgetting_section,
    heldout_section,
    lm_eval_section,
    posttrain_section,
    prefilter_section,
    qa_section,
    steps_section,
    toxicity_section,
)
from lmpipe.report_parts import Link, Section, Table, fmt, plt_agg, png, read_json

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.executors import Executor

TEMPLATE = "report.html.j2"


@dataclass
class ReportInputs:
    root: Path
    metrics_dir: Path
    evaluate_json: Path
    samples: Path
    mixture: dict[str, float] | None = None


def read_dvclive(root: Path, pattern: str) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """``{stage: {metric path: [(step, value)]}}`` from DVCLive's ``plots/metrics/**.tsv`` files."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for metrics_dir in sorted(root.glob(pattern)):
        stage = metrics_dir.relative_to(root).parts[1] if len(metrics_dir.relative_to(root).parts) > 1 else metrics_dir.name
        for tsv in sorted(metrics_dir.rglob("*.tsv")):
            with tsv.open(newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
            if not rows:
                continue
            name = tsv.relative_to(metrics_dir).with_suffix("").as_posix()
            value_col = next((c for c in rows[0] if c not in ("step", "timestamp")), None)
            if value_col is None:
                continue
            pts = [(float(r.get("step") or i), float(r[value_col])) for i, r in enumerate(rows) if r[value_col] not in ("", None)]
            out.setdefault(stage, {})[name] = pts
    return out


def training_section(inp: ReportInputs, cfg: ReportConfig) -> Section:
    sec = Section("training", "Training curves", "Loss (and other logged metrics) of every training stage, from DVCLive.")
    curves = read_dvclive(inp.root, cfg.dvclive_glob)
    if not curves:
        sec.missing = f"No DVCLive logs yet (looked for {cfg.dvclive_glob}/**/*.tsv): no training stage has run."
        return sec
    plt = plt_agg()
    for stage, metrics in curves.items():
        losses = {k: v for k, v in metrics.items() if "loss" in k} or metrics
        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        for name, pts in losses.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, linewidth=1.4)
        ax.set_xlabel("step")
        ax.set_ylabel("loss" if any("loss" in k for k in losses) else "value")
        ax.set_title(f"{stage}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        sec.figures.append(png(fig, f"{stage}: {', '.join(losses)}"))
        last = [[stage, name, fmt(pts[-1][0]), fmt(pts[-1][1]), len(pts)] for name, pts in metrics.items() if pts]
        sec.tables.append(Table(["stage", "metric", "last step", "last value", "points"], last))
    return sec


def mixture_section(weights: dict[str, float] | None) -> Section:
    sec = Section("mixture", "Training mixture weights",
                  "Domain weights pretrain trained on (normalised): params.yaml, or the tune stage's winner.")
    if not weights:
        sec.missing = "No mixture weights in params.yaml (section `mixture.weights`)."
        return sec
    total = sum(weights.values()) or 1.0
    norm = {k: v / total for k, v in weights.items()}
    plt = plt_agg()
    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    ax.barh(list(norm), list(norm.values()), color=[f"C{i}" for i in range(len(norm))])
    ax.set_xlabel("share of training tokens")
    ax.set_title("Mixture weights")
    sec.figures.append(png(fig, "Mixture weights"))
    sec.tables.append(Table(["domain", "weight", "share"], [[k, fmt(weights[k]), f"{v:.1%}"] for k, v in norm.items()]))
    return sec


def _count(m: dict, *keys: str) -> int | None:
    for k in keys:
        if isinstance(m.get(k), int | float):
            return int(m[k])
    return None


def funnel_section(metrics_dir: Path, stages: list[str]) -> Section:
    sec = Section("funnel", "Data funnel",
                  "Documents after each data stage (from metrics/<stage>.json) and why the others left.")
    found = [(s, m) for s in stages if (m := read_json(metrics_dir / f"{s}.json")) is not None]
    absent = [s for s in stages if s not in {f[0] for f in found}]
    if not found:
        sec.missing = f"No data-stage metrics yet (looked for {', '.join(f'metrics/{s}.json' for s in stages)})."
        return sec
    labels, counts, rows = [], [], []
    first_in = _count(found[0][1], "in")
    if first_in is not None:
        labels.append(f"{found[0][0]} in")
        counts.append(first_in)
    for stage, m in found:
        kept = _count(m, "kept", "out", "docs", "total_docs")
        reasons = m.get("by_reason") or {}
        top = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])[:6])
        rows.append([stage, fmt(_count(m, "in")), fmt(kept), fmt(_count(m, "rejected", "removed", "dropped")),
                     fmt(_count(m, "generated", "synthetic", "added")), top])
        if kept is not None:
            labels.append(stage)
            counts.append(kept)
    if counts:
        plt = plt_agg()
        fig, ax = plt.subplots(figsize=(6.5, 3.2))
        ax.bar(labels, counts, color="C0")
        for i, c in enumerate(counts):
            ax.annotate(str(c), (i, c), ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("documents")
        ax.set_title("Documents through the data stages")
        sec.figures.append(png(fig, "Data funnel"))
    sec.tables.append(Table(["stage", "in", "kept", "removed", "added", "top reasons"], rows))
    if absent:
        sec.intro += f" Not run yet: {', '.join(absent)}."
    return sec


def samples_section(path: Path, max_per_model: int) -> Section:
    sec = Section("samples", "Sample generations", "Greedy continuations of fixed prompts (reports/samples.jsonl).")
    if not path.is_file():
        sec.missing = f"{path.name} not found: the evaluate stage has not run yet."
        return sec
    rows, per_model, answers = [], {}, []
    with path.open(encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r.get("kind", "").startswith("posttrain_"):  # held-out answers of every model, for post-training
                answers.append([r["model"], r["prompt"], r["completion"], r["answer"], "✓" if r["correct"] else ""])
            if r.get("kind") != "sample" or per_model.get(r["model"], 0) >= max_per_model:
                continue
            per_model[r["model"]] = per_model.get(r["model"], 0) + 1
            rows.append([r["model"], r["prompt"], r["completion"]])
    if not rows and not answers:
        sec.missing = "No sample generations (evaluate.samples.prompts is empty)."
        return sec
    if rows:
        sec.tables.append(Table(["model", "prompt", "completion"], rows))
    if answers:
        answers.sort(key=lambda a: a[1])  # one question, every model's answer together (stable: pipeline order)
        sec.tables.append(Table(["model", "held-out question", "answer", "gold", "right"], answers,
                                caption="post-training: the same held-out questions answered by each model"))
    return sec


def stage_times(metrics_dir: Path) -> Table | None:
    rows = []
    for f in sorted(metrics_dir.glob("*.json")):
        m = read_json(f)
        if isinstance(m, dict) and isinstance(m.get("seconds"), int | float):
            rows.append([f.stem, fmt(float(m["seconds"]), 3)])
    return Table(["stage", "seconds"], rows, caption="stage wall time") if rows else None


# -------------------------------------------------------------------------------------------- render
def studies_section(root: Path, page_dir: Path) -> Section | None:
    """One row per claim of every study page under ``reports/studies`` (verdicts from ``studies/results``).

    Study pages come from ``lmpipe study run``, not from a pipeline stage, so they are listed as found when the
    report is built (no section when there are none)."""
    pages = sorted((root / "reports" / "studies").glob("*.html"))
    if not pages:
        return None
    sec = Section("studies", "Studies", "Controlled comparisons (arms × seeds, one DVC experiment each) run with "
                  "`lmpipe study run`; a claim holds when its 95 % interval excludes zero in the expected direction.")
    rows: list[list[Any]] = []
    for page in pages:
        link = Link(page.stem, Path(os.path.relpath(page, page_dir)).as_posix())
        res = read_json(root / "studies" / "results" / f"{page.stem}.json") or {}
        claims = res.get("claims") or []
        if not claims:
            rows.append([link, res.get("title", ""), "", "no results file" if not res else "no claims", "", ""])
        for c in claims:
            ci = c.get("ci") or [None, None]
            rows.append([link, res.get("title", ""), c.get("claim", ""), c.get("verdict", ""), fmt(c.get("effect")),
                         "–" if ci[0] is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"])
    sec.tables.append(Table(["study", "title", "claim", "verdict", "effect (paired Δ)", "95 % CI"], rows))
    return sec


def _ordered(ev: dict | None) -> dict | None:
    """Models in evaluation order (parents first), not the sorted order of the JSON file."""
    if not ev or "models" not in ev:
        return ev
    order = [m for m in ev.get("model_order", []) if m in ev["models"]]
    order += [m for m in ev["models"] if m not in order]
    return {**ev, "models": {m: ev["models"][m] for m in order}}


def build_sections(inp: ReportInputs, cfg: ReportConfig, page_dir: Path | None = None) -> list[Section]:

    ev = _ordered(read_json(inp.evaluate_json))
    steps = steps_section(ev)
    sections = [
        funnel_section(inp.metrics_dir, cfg.funnel_stages),
        mixture_section(inp.mixture),
        training_section(inp, cfg),
        *([steps] if steps else []),
        heldout_section(ev),
        prefilter_section(ev),
        qa_section(ev),
        posttrain_section(ev),
        forgetting_section(ev),
        toxicity_section(ev),
    ]
    extra = lm_eval_section(ev)
    if extra:
        sections.append(extra)
    sections.append(samples_section(inp.samples, cfg.max_samples))
    studies = studies_section(inp.root, page_dir or inp.root / "reports")
    if studies:
        sections.append(studies)
    return sections


def render_html(sections: list[Section], cfg: ReportConfig, times: Table | None = None) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("lmpipe", "templates"), autoescape=select_autoescape(["html", "j2"]))
    return env.get_template(TEMPLATE).render(
        title=cfg.title, generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), sections=sections, times=times
    )


def build_report(inp: ReportInputs, cfg: ReportConfig, out: str | Path) -> dict[str, Any]:
    """Write the HTML report to ``out``; returns counts for ``metrics/report.json``."""
    out = Path(out)
    sections = build_sections(inp, cfg, out.parent)
    html = render_html(sections, cfg, stage_times(inp.metrics_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return {
        "sections": len(sections),
        "sections_missing": sorted(s.id for s in sections if s.missing),
        "figures": sum(len(s.figures) for s in sections),
        "html_bytes": len(html.encode()),
    }


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``report``: one self-contained HTML page (``io.out``) from every stage's metrics."""
    pretrain = Path(io.metrics) / "pretrain.json"  # it records the mixture it used (from_tune: the study's winner)
    used = json.loads(pretrain.read_text()).get("mixture") if pretrain.exists() else None
    inp = ReportInputs(Path("."), io.metrics, io.evaluate, io.samples, used or p.mixture.weights)
    return {**build_report(inp, p.report, io.out), "report": str(io.out)}
