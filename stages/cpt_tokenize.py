"""Stage `cpt_tokenize`: synthetic documents → token files packed with the EXISTING tokenizer (never retrained).

Writes ``<tokens>/<split>/synthetic/*.bin`` + ``<tokens>/index.json`` in the layout of stage `tokenize`, a copy
of the reused tokenizer in ``<tokens>/tokenizer`` and held-out synthetic documents in ``<tokens>/heldout``.
Stage `cpt` reads it together with ``data/tokens`` (replay). Knobs: ``tokenize`` (EOS, batching) and
``cpt.val_fraction``.
"""

from __future__ import annotations

import typer

from lmpipe.config import load_params
from lmpipe.continual import tokenize_new_domains
from lmpipe.stage import Timer, executor_from, write_metrics


def main(
    docs: str = typer.Option("data/augment/docs", help="input: new documents (the synthetic domain)"),
    tokenizer: str = typer.Option("models/tokenizer", help="the parent's HF tokenizer dir (reused as is)"),
    tokens: str = typer.Option("data/tokens-cpt", help="output: token files + index.json"),
    params: str = typer.Option("params.yaml", help="params file"),
    metrics: str = typer.Option("metrics/cpt_tokenize.json", help="DVC metrics file"),
) -> None:
    p = load_params(params)
    with Timer() as t, executor_from(p.run.executor) as ex:
        stats = tokenize_new_domains(p.tokenize, p.cpt.val_fraction, docs, tokens, tokenizer, ex)
    write_metrics(metrics, stats, t.seconds)
    per_domain = {d: v["tokens"] for d, v in stats["train"].items()}
    typer.echo(f"cpt_tokenize: train={stats['train_tokens']} val={stats['val_tokens']} tokens {per_domain} "
               f"in {t.seconds:.1f}s -> {tokens}")


if __name__ == "__main__":
    typer.run(main)
