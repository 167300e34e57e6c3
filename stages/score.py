"""Stage `score`: measure every document once (Gopher, C4, FineWeb, language, toxicity, perplexity, PII,
decontamination) and store the values in ``meta["scores"]``; thresholds are applied by stage `filter`."""

from __future__ import annotations

import typer

from lmpipe.config import load_params
from lmpipe.filters.pipeline import score_dataset
from lmpipe.stage import Timer, executor_from, write_metrics


def main(
    docs: str = typer.Option("data/ingest/docs", help="input dataset directory"),
    out: str = typer.Option("data/scored/docs", help="scored dataset directory"),
    rejected: str = typer.Option("data/scored/rejected", help="documents that could not be scored"),
    models: str = typer.Option("models/filter", help="reference models built for scoring"),
    params: str = typer.Option("params.yaml", help="params file (section filter.score)"),
    metrics: str = typer.Option("metrics/score.json", help="DVC metrics file"),
) -> None:
    p = load_params(params)
    with Timer() as t, executor_from(p.run.executor) as ex:
        stats = score_dataset(p.filter.score, docs, out, rejected, models, ex)
    write_metrics(metrics, stats, t.seconds)
    typer.echo(f"score: {stats['in']} docs scored in {t.seconds:.1f}s; models {stats['models']}")


if __name__ == "__main__":
    typer.run(main)
