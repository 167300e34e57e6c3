"""Stage `filter`: apply each domain's thresholds (``filter.select``) to the stored scores; dropped documents
go to a rejected dataset with the rule and measured value, kept ones are PII-scrubbed; per-rule counts are
metrics and each score's histogram (thresholds marked) is a plot."""

from __future__ import annotations

import typer

from lmpipe.config import load_params
from lmpipe.filters.pipeline import select_dataset
from lmpipe.stage import Timer, executor_from, gate_and_write_metrics


def main(
    scored: str = typer.Option("data/scored/docs", help="scored dataset (stage score)"),
    out: str = typer.Option("data/filtered/docs", help="kept documents"),
    rejected: str = typer.Option("data/filtered/rejected", help="dropped documents with reason + detail"),
    plots: str = typer.Option("plots/filter", help="histograms (PNG)"),
    params: str = typer.Option("params.yaml", help="params file (section filter.select)"),
    metrics: str = typer.Option("metrics/filter.json", help="DVC metrics file"),
    report: str = typer.Option("reports/gates/filter", help="directory for the gate report (HTML + JSON)"),
) -> None:
    p = load_params(params)
    with Timer() as t, executor_from(p.run.executor) as ex:
        stats = select_dataset(p.filter.select, p.filter.score.c4, scored, out, rejected, plots, ex)
    gate_and_write_metrics("filter", out, stats, p.gates, report, metrics, t.seconds)
    typer.echo(f"filter: in={stats['in']} kept={stats['kept']} rejected={stats['rejected']} {stats['by_reason']}")


if __name__ == "__main__":
    typer.run(main)
