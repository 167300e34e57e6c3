"""Stage `tokenize`: documents → HF tokenizer + per-domain packed token files + a held-out document set.

Trains a byte-level BPE on the train split (or reuses ``tokenize.tokenizer_path``), splits documents
train / held-out by a hash of their id, and packs each domain into ``<tokens>/<split>/<domain>/*.bin`` with
``<tokens>/index.json`` (read it with ``lmpipe.mixture.TokenIndex``).
"""

from __future__ import annotations

import typer

from lmpipe.config import load_params
from lmpipe.stage import Timer, executor_from, write_metrics
from lmpipe.tokenization import tokenize_corpus


def main(
    docs: str = typer.Option("data/dedup/docs", help="input document dataset"),
    tokens: str = typer.Option("data/tokens", help="output: token files + index.json"),
    tokenizer: str = typer.Option("models/tokenizer", help="output: HF tokenizer directory"),
    heldout: str = typer.Option("data/heldout/docs", help="output: held-out documents (lmpipe dataset)"),
    params: str = typer.Option("params.yaml", help="params file"),
    metrics: str = typer.Option("metrics/tokenize.json", help="DVC metrics file"),
) -> None:
    p = load_params(params)
    with Timer() as t, executor_from(p.run.executor) as ex:
        stats = tokenize_corpus(p.tokenize, docs, tokens, tokenizer, heldout, ex)
    stats["tokens_per_s"] = round(stats["tokens"] / max(t.seconds, 1e-9))
    write_metrics(metrics, stats, t.seconds)
    per_domain = {d: v["tokens"] for d, v in stats["train"].items()}
    typer.echo(
        f"tokenize: vocab={stats['tokenizer']['vocab_size']} train={stats['train_tokens']} "
        f"val={stats['val_tokens']} tokens {per_domain} in {t.seconds:.1f}s"
    )


if __name__ == "__main__":
    typer.run(main)
