"""Stage `augment`: LLM-written synthetic documents (EntiGraph relation texts, thought-augmented docs)."""

from __future__ import annotations

import typer

from lmpipe.config import load_params
from lmpipe.stage import Timer, executor_from, write_metrics


def main(
    docs: str = typer.Option("data/dedup/docs", help="input dataset (documents to augment)"),
    out: str = typer.Option("data/augment/docs", help="output dataset of synthetic documents"),
    rejected: str = typer.Option(
        "data/augment/rejected", help="quarantine: failed or low-quality generations"
    ),
    params: str = typer.Option("params.yaml", help="params file (sections: run, llm, augment)"),
    metrics: str = typer.Option("metrics/augment.json", help="DVC metrics file"),
    prompts: str = typer.Option(None, help="directory of prompt templates overriding the packaged ones"),
) -> None:
    """Select documents (params augment.*.select), extract entities, write relation texts and thoughts."""
    from lmpipe.synth.augment import AugmentJob, augment

    p = load_params(params)
    job = AugmentJob(llm=p.llm, augment=p.augment, seed=p.run.seed, prompts_dir=prompts)
    ex_cfg = p.run.executor.model_copy(update={"workers": p.augment.workers})
    with Timer() as t, executor_from(ex_cfg) as ex:
        stats = augment(job, docs, out, rejected, ex)
    write_metrics(metrics, stats, t.seconds)
    llm = stats["llm"]
    typer.echo(
        f"augment: generations={stats['in']} kept={stats['kept']} quarantined={stats['rejected']} {stats['by_reason']}; "
        f"requests={llm.get('requests', 0)} cache_hits={llm.get('cache_hits', 0)} "
        f"completion_tokens={llm.get('completion_tokens', 0)}"
    )


if __name__ == "__main__":
    typer.run(main)
