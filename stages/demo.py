"""Stage `demo`: generate the embedded demo corpus (raw files in several formats) and its QA set."""

from __future__ import annotations

import typer

from lmpipe.config import load_params
from lmpipe.demo import generate
from lmpipe.stage import Timer, write_metrics


def main(
    raw: str = typer.Option("data/raw", help="directory for the raw corpus files"),
    eval_dir: str = typer.Option("data/eval", "--eval", help="directory for the closed-book QA set"),
    params: str = typer.Option("params.yaml", help="params file"),
    metrics: str = typer.Option("metrics/demo.json", help="DVC metrics file"),
) -> None:
    p = load_params(params)
    with Timer() as t:
        summary = generate(p.demo, p.run.seed, raw, eval_dir)
    write_metrics(metrics, summary, t.seconds)
    typer.echo(f"demo corpus: {summary['docs']} docs, {summary['qa_questions']} QA questions")


if __name__ == "__main__":
    typer.run(main)
