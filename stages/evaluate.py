"""Stage `evaluate`: every model in ``params.evaluate.models`` → per-domain bits/byte, closed-book QA,
toxicity of generations, forgetting vs parent, sample generations.

Writes ``metrics/evaluate.json`` (DVC metrics), ``reports/samples.jsonl`` and ``plots/evaluate/*.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lmpipe.config import load_params
from lmpipe.stage import Timer, write_metrics


def main(
    heldout: str = typer.Option("data/heldout/docs", help="held-out document dataset (domains from each doc)"),
    qa: str = typer.Option("data/eval/fiction_qa.jsonl", help="closed-book QA file (simple or QuALITY-style JSONL)"),
    params: str = typer.Option("params.yaml", help="params file"),
    metrics: str = typer.Option("metrics/evaluate.json", help="DVC metrics file"),
    samples: str = typer.Option("reports/samples.jsonl", help="sample generations, one JSON object per line"),
    plots: str = typer.Option("plots/evaluate", help="directory for DVC plot series"),
) -> None:
    from lmpipe.evaluation.run import evaluate_models, plot_rows

    p = load_params(params)
    with Timer() as t:
        results, rows = evaluate_models(p.evaluate, heldout, qa, p.run.seed, log=typer.echo)
    write_metrics(metrics, results, t.seconds)
    out = Path(samples)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    Path(plots).mkdir(parents=True, exist_ok=True)
    for stem, series in plot_rows(results).items():
        (Path(plots) / f"{stem}.json").write_text(json.dumps(series, indent=1) + "\n")
    typer.echo(f"evaluate: {len(results['models'])} model(s) in {t.seconds:.1f}s -> {metrics}, {samples}")


if __name__ == "__main__":
    typer.run(main)
