"""Stage ``rlvr``: reinforcement learning with verifiable rewards through TRL's ``GRPOTrainer``.

Prompts: ``posttrain.data.prompts`` (decontaminated), each with a gold answer and a kind; the reward is
:func:`lmpipe.posttrain.rewards.verifiable_reward` (``math-verify`` for math, normalised exact match for
fictional QA, exact match for format tasks). GRPO samples ``num_generations`` completions per prompt (the group),
normalises rewards within the group, and penalises KL to the starting policy with ``beta``. TRL logs reward,
KL and completion length per step; they become the stage's curves.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmpipe.posttrain.chat import encode
from lmpipe.posttrain.config import PosttrainConfig
from lmpipe.posttrain.data import Prompt, Quarantined, Split, read_sources, write_jsonl
from lmpipe.posttrain.decontam import clean
from lmpipe.posttrain.preference import prompt_text
from lmpipe.posttrain.rewards import verifiable_reward
from lmpipe.posttrain.trainer import (
    curve_summary,
    data_hash,
    fit,
    model_hash,
    open_model,
    stage_seed,
    trainer_args,
)

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.executors import Executor


def prompt_rows(post: PosttrainConfig, tok: Any, seed: int, data_dir: Path | None) -> tuple[list[dict], dict]:
    cfg = post.rlvr
    read, per_file = read_sources(post.data.prompts)
    cleaned, contam = clean(read, post.data)
    prompts = [r for r in cleaned.kept if isinstance(r, Prompt)]
    rows, too_long = [], []
    for p in prompts:
        text = prompt_text(tok, p.prompt)
        n = len(encode(tok, text)) + cfg.max_new_tokens
        if n > post.data.max_length:
            too_long.append(
                Quarantined(p.id, p.source, "over_length", f"{n} tokens > {post.data.max_length}", text)
            )
        else:
            rows.append({"id": p.id, "prompt": text, "answer": p.answer, "kind": p.kind})
    final = Split(rows, cleaned.rejected + too_long)
    counts = final.counts()
    random.Random(seed).shuffle(rows)
    used = rows[: cfg.max_prompts]
    if data_dir:
        write_jsonl(data_dir / "prompts.jsonl", used)
        write_jsonl(data_dir / "rejected.jsonl", final.rejected)
    if not used:
        raise RuntimeError(f"RLVR: no usable prompts ({counts})")
    return used, {**counts, "prompts_used": len(used), "files": per_file, "decontamination": contam}


def make_trainer(
    model: Any,
    tok: Any,
    rows: list[dict],
    post: PosttrainConfig,
    ckpt_dir: str | Path,
    seed: int,
    callbacks: list | None = None,
) -> Any:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    cfg = post.rlvr
    if (cfg.train.batch_size * cfg.train.grad_accum) % cfg.num_generations:
        raise ValueError(
            f"posttrain.rlvr: train.batch_size x grad_accum ({cfg.train.batch_size * cfg.train.grad_accum})"
            f" must be a multiple of num_generations ({cfg.num_generations})"
        )
    args = trainer_args(
        GRPOConfig,
        cfg.train,
        ckpt_dir,
        seed,
        num_generations=cfg.num_generations,
        beta=cfg.beta,
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=0,
        log_completions=False,
    )
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "answer", "kind")} for r in rows])
    return GRPOTrainer(
        model=model,
        reward_funcs=verifiable_reward,
        args=args,
        train_dataset=data,
        processing_class=tok,
        callbacks=callbacks,
    )


def train_rlvr(
    post: PosttrainConfig,
    model_dir: str | Path,
    out_dir: str | Path,
    ckpt_dir: str | Path,
    data_dir: str | Path,
    live_dir: str | Path,
    seed: int,
    callbacks: list | None = None,
) -> dict[str, Any]:
    model, tok, added = open_model(model_dir, post.rlvr.train, post.data.max_length)
    rows, data_stats = prompt_rows(post, tok, seed, Path(data_dir))
    fingerprint = {
        "stage": "rlvr",
        "params": post.rlvr.model_dump(),
        "model": model_hash(model_dir),
        "data": data_hash(rows),
        "seed": seed,
    }
    build = lambda: make_trainer(model, tok, rows, post, ckpt_dir, seed, callbacks)  # noqa: E731
    f = fit(fingerprint, build, tok, out_dir, ckpt_dir, live_dir)
    rollouts = f.steps_done * post.rlvr.train.batch_size * post.rlvr.train.grad_accum
    return {
        **f.stats(model_dir),
        "num_generations": post.rlvr.num_generations,
        "beta": post.rlvr.beta,
        **curve_summary(f.curves, "reward", "kl", "completions/mean_length", "loss"),
        "rollouts_per_s": round(rollouts / f.train_s, 2) if f.train_s > 0 and rollouts else None,
        "chat_template_added": added,
        "data": data_stats,
    }


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``rlvr``: ``posttrain.rlvr.init_from`` → ``io.out``; checkpoints in ``io.ckpt``, the checked data
    and its quarantine in ``io.data``, curves in ``io.live``."""
    cfg = p.posttrain.rlvr
    return train_rlvr(
        p.posttrain, cfg.init_from, io.out, io.ckpt, io.data, io.live, stage_seed(cfg.train, p.run.seed)
    )
