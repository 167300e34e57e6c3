"""Stage `cpt`: continual pretraining of the pretrained model on the synthetic domain with replay.

Starts from ``cpt.train.init_from`` (``models/pretrain``), samples ``cpt.mixture`` over the new token dir
(``data/tokens-cpt``) merged with the base one (``data/tokens``, replayed in place), re-warms and re-decays the
LR (``cpt.train.schedule``), resumes from ``<ckpt>/latest.ckpt`` after a crash, logs to DVCLive and exports an
HF model dir. Stage `evaluate` compares it with its parent (forgetting, closed-book QA).
"""

from __future__ import annotations

import typer

from lmpipe.config import load_params
from lmpipe.stage import Timer, write_metrics


def main(
    tokens: list[str] = typer.Option(
        ["data/tokens", "data/tokens-cpt"], help="token dirs merged into one mixture (replay + new domains)"
    ),
    tokenizer: str = typer.Option("models/tokenizer", help="HF tokenizer dir, copied into the exported model"),
    out: str = typer.Option("models/cpt", help="output: HF model directory"),
    ckpt: str = typer.Option("models/checkpoints/cpt", help="resumable checkpoints (kept across runs)"),
    live: str = typer.Option("dvclive/cpt", help="DVCLive metrics and plots"),
    params: str = typer.Option("params.yaml", help="params file"),
    metrics: str = typer.Option("metrics/cpt.json", help="DVC metrics file"),
    progress: bool = typer.Option(True, help="show Lightning's progress bar"),
) -> None:
    p = load_params(params)
    from lmpipe.continual import continue_pretraining

    seed = p.cpt.train.seed if p.cpt.train.seed is not None else p.run.seed
    with Timer() as t:
        stats = continue_pretraining(
            p.model, p.cpt, tokens, tokenizer, seed=seed, ckpt_dir=ckpt, log_dir=live, export_dir=out,
            progress=progress,
        )
    write_metrics(metrics, stats, t.seconds)
    typer.echo(
        f"cpt: {stats['steps']} steps from {stats['parent']} ({stats['tokens']} tokens) "
        f"val_loss={stats['val_loss']:.3f} {stats['tokens_per_s']} tokens/s -> {out}"
    )


if __name__ == "__main__":
    typer.run(main)
