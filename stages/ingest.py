"""Stage `ingest`: every source in ``params.ingest`` → one sharded document dataset + a quarantine."""

from __future__ import annotations

import typer

from lmpipe.config import load_params
from lmpipe.ingest import ingest
from lmpipe.stage import Timer, executor_from, gate_and_write_metrics


def main(
    out: str = typer.Option("data/ingest/docs", help="output dataset directory"),
    rejected: str = typer.Option("data/ingest/rejected", help="quarantine dataset directory"),
    params: str = typer.Option("params.yaml", help="params file"),
    metrics: str = typer.Option("metrics/ingest.json", help="DVC metrics file"),
    report: str = typer.Option("reports/gates/ingest", help="directory for the gate report (HTML + JSON)"),
) -> None:
    p = load_params(params)
    with Timer() as t, executor_from(p.run.executor) as ex:
        stats = ingest(p.ingest, out, rejected, ex)
    gate_and_write_metrics("ingest", out, stats, p.gates, report, metrics, t.seconds)
    typer.echo(f"ingest: in={stats['in']} kept={stats['kept']} quarantined={stats['rejected']} {stats['by_reason']}")


if __name__ == "__main__":
    typer.run(main)
