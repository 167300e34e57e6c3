"""Stage `report`: the run's metrics, curves and samples → one self-contained ``reports/index.html``."""

from __future__ import annotations

from pathlib import Path

import typer

from lmpipe.config import load_params
from lmpipe.stage import Timer, write_metrics


def main(
    out: str = typer.Option("reports/index.html", help="HTML report to write (self-contained, offline)"),
    evaluate: str = typer.Option("metrics/evaluate.json", help="metrics of the evaluate stage"),
    samples: str = typer.Option("reports/samples.jsonl", help="sample generations of the evaluate stage"),
    metrics_dir: str = typer.Option("metrics", help="directory of every stage's metrics/<stage>.json"),
    root: str = typer.Option(".", help="project root (DVCLive folders are globbed from here)"),
    params: str = typer.Option("params.yaml", help="params file"),
    metrics: str = typer.Option("metrics/report.json", help="DVC metrics file"),
) -> None:
    from lmpipe.report import ReportInputs, build_report

    p = load_params(params)
    mixture = getattr(getattr(p, "mixture", None), "weights", None)
    inp = ReportInputs(Path(root), Path(metrics_dir), Path(evaluate), Path(samples), mixture)
    with Timer() as t:
        stats = build_report(inp, p.report, out)
    write_metrics(metrics, {**stats, "report": out}, t.seconds)
    missing = f"; not available yet: {', '.join(stats['sections_missing'])}" if stats["sections_missing"] else ""
    typer.echo(f"report: {Path(out).resolve().as_uri()} ({stats['figures']} figures{missing})")


if __name__ == "__main__":
    typer.run(main)
