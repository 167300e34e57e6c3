"""Stage `dedup`: exact + MinHash near-duplicate removal over the filtered corpus, then its quality gate.

Duplicates go to the rejected dataset with reason ``exact_dup`` / ``near_dup`` and the kept document's id.
Exits non-zero (so DVC and the Prefect flow stop) when the gate fails; the gate report says why.
"""

from __future__ import annotations

import typer

from lmpipe.config import load_params
from lmpipe.dedup import dedup
from lmpipe.dedup.pipeline import label_outcomes
from lmpipe.dedup.report import plot_cluster_sizes
from lmpipe.stage import Timer, executor_from, gate_and_write_metrics


def main(
    docs: str = typer.Option("data/filtered/docs", help="input dataset (the filter stage's kept documents)"),
    out: str = typer.Option("data/dedup/docs", help="output dataset: one document per duplicate cluster"),
    rejected: str = typer.Option("data/dedup/rejected", help="duplicates, with the kept document's id"),
    params: str = typer.Option("params.yaml", help="params file (sections: run, dedup, gates)"),
    metrics: str = typer.Option("metrics/dedup.json", help="DVC metrics file"),
    plots: str = typer.Option("plots/dedup", help="directory for the cluster-size plot"),
    report: str = typer.Option("reports/gates/dedup", help="directory for the gate report (HTML + JSON)"),
) -> None:
    p = load_params(params)
    with Timer() as t:
        with executor_from(p.run.executor) as ex:
            stats = dedup(p.dedup, docs, out, rejected, ex)
        stats["planted_noise"] = label_outcomes(out, rejected)
        stats["plot"] = str(plot_cluster_sizes(stats["cluster_sizes"], f"{plots}/cluster_sizes.png"))
    gate_and_write_metrics("dedup", out, stats, p.gates, report, metrics, t.seconds)
    typer.echo(f"dedup: in={stats['in']} kept={stats['kept']} removed={stats['rejected']} {stats['by_reason']} "
               f"clusters={stats['clusters']['total']} gate={stats['gate']['report']}")


if __name__ == "__main__":
    typer.run(main)
