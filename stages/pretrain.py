"""Stage `pretrain`: packed tokens + tokenizer → a Hugging Face causal LM trained with Lightning.

Resumes exactly from ``<ckpt>/latest.ckpt`` after a crash (the checkpoint dir is a persistent DVC out) as long
as params and data are unchanged; logs to DVCLive (``dvc plots show``, ``dvc exp show``); exports safetensors +
config + tokenizer to ``--out`` (``AutoModelForCausalLM.from_pretrained(out)``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import typer

from lmpipe.config import load_params
from lmpipe.stage import Timer, write_metrics


def main(
    tokens: str = typer.Option("data/tokens", help="token directory with index.json (tokenize stage)"),
    tokenizer: str = typer.Option(
        "models/tokenizer", help="HF tokenizer dir, copied into the exported model"
    ),
    out: str = typer.Option("models/pretrain", help="output: HF model directory"),
    ckpt: str = typer.Option("models/checkpoints/pretrain", help="resumable checkpoints (kept across runs)"),
    live: str = typer.Option("dvclive/pretrain", help="DVCLive metrics and plots"),
    params: str = typer.Option("params.yaml", help="params file"),
    metrics: str = typer.Option("metrics/pretrain.json", help="DVC metrics file"),
    progress: bool = typer.Option(True, help="show Lightning's progress bar"),
) -> None:
    p = load_params(params)
    from lmpipe.mixture import TokenIndex
    from lmpipe.training import mixture_samplers, train, vocab_and_special_ids

    index = TokenIndex.load(tokens)
    vocab_size, special_ids = vocab_and_special_ids(index, tokenizer)
    seed = p.train.seed if p.train.seed is not None else p.run.seed
    data_id = hashlib.sha256((Path(tokens) / "index.json").read_bytes()).hexdigest()
    with Timer() as t:
        stats = train(
            p.model,
            p.train,
            mixture_samplers(index, p.mixture, p.train.seq_len, seed),
            vocab_size=vocab_size,
            ckpt_dir=ckpt,
            log_dir=live,
            export_dir=out,
            tokenizer_dir=tokenizer,
            special_ids=special_ids,
            seed=seed,
            fingerprint={"data": data_id, "mixture": p.mixture.model_dump()},
            progress=progress,
        )
    write_metrics(metrics, stats, t.seconds)
    typer.echo(
        f"pretrain: {stats['steps']} steps ({stats['tokens']} tokens) val_loss={stats['val_loss']:.3f} "
        f"{stats['tokens_per_s']} tokens/s, params={stats['params']} -> {out}"
    )


if __name__ == "__main__":
    typer.run(main)
