"""Stage ``sft``: supervised fine-tuning with TRL's ``SFTTrainer`` on chats, loss on assistant tokens only.

Data: ``posttrain.data.sft`` sources → checks (:mod:`lmpipe.posttrain.data`) → decontamination against every
evaluation set → chat template → ``input_ids`` + ``assistant_masks``; over-length chats are quarantined here
(TRL would silently truncate them). We hand TRL the tokenized rows, so its ``labels`` are exactly our masks.

Packing: TRL's best-fit-decreasing packing with ``padding_free`` puts several chats in one row with
``position_ids`` restarting at 0 per chat and no attention mask. On flash-attention kernels that becomes varlen
attention; on CPU (sdpa / eager) transformers' mask builder turns restarting ``position_ids`` into a
block-diagonal causal mask, so attention does not cross chats either (a test compares packed and unpacked
losses), and TRL masks the first label of each chat so no loss crosses a boundary.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmpipe.posttrain.chat import tokenize_chat
from lmpipe.posttrain.config import PosttrainConfig, PosttrainDataConfig
from lmpipe.posttrain.data import Chat, Quarantined, Split, read_sources, write_jsonl
from lmpipe.posttrain.decontam import clean
from lmpipe.posttrain.trainer import (
    curve_summary,
    data_hash,
    fit,
    model_hash,
    open_model,
    stage_seed,
    trainer_args,
)
from lmpipe.posttrain.varlen import packed_attention_callback

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.executors import Executor


def tokenize_chats(chats: list[Chat], tok: Any, max_length: int) -> tuple[list[dict], list[Quarantined]]:
    rows, rejected = [], []
    for c in chats:
        ids, mask = tokenize_chat(tok, c.messages)
        if len(ids) > max_length:
            rejected.append(
                Quarantined(
                    c.id, c.source, "over_length", f"{len(ids)} tokens > {max_length}", str(c.messages)
                )
            )
        else:
            rows.append({"id": c.id, "input_ids": ids, "assistant_masks": mask})
    return rows, rejected


def prepare(cfg: PosttrainDataConfig, tok: Any, out_dir: str | Path | None = None) -> tuple[list[dict], dict]:
    """Tokenized SFT rows and the data metrics (``in = kept + rejected`` checked); writes kept/rejected files."""
    read, per_file = read_sources(cfg.sft)
    bad = [r for r in read.kept if not isinstance(r, Chat)]
    if bad:
        raise ValueError(
            f"posttrain.data.sft takes chat formats (messages, alpaca, alpaca_seed); got {type(bad[0])}"
        )
    decontaminated, contam = clean(read, cfg)
    rows, too_long = tokenize_chats(decontaminated.kept, tok, cfg.max_length)
    trained = {x["id"] for x in rows}
    final = Split([r for r in decontaminated.kept if r.id in trained], decontaminated.rejected + too_long)
    counts = final.counts()
    if counts["in"] != read.counts()["in"] or not rows:
        raise RuntimeError(
            f"SFT data: {counts} (read {read.counts()['in']}); nothing to train on or counts lost"
        )
    if out_dir is not None:
        write_jsonl(Path(out_dir) / "train.jsonl", final.kept)
        write_jsonl(Path(out_dir) / "rejected.jsonl", final.rejected)
    return rows, {
        **counts,
        "files": per_file,
        "decontamination": contam,
        "tokens": sum(len(r["input_ids"]) for r in rows),
        "assistant_tokens": sum(sum(r["assistant_masks"]) for r in rows),
    }


def make_trainer(
    model: Any,
    tok: Any,
    rows: list[dict],
    post: PosttrainConfig,
    ckpt_dir: str | Path,
    seed: int,
    packing: bool | None = None,
    callbacks: list | None = None,
) -> Any:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    cfg = post.sft
    packing = cfg.packing if packing is None else packing
    args = trainer_args(
        SFTConfig,
        cfg.train,
        ckpt_dir,
        seed,
        packing=packing,
        packing_strategy="bfd",
        max_length=post.data.max_length,
        dataset_num_proc=None,
    )
    data = Dataset.from_list(
        [{"input_ids": r["input_ids"], "assistant_masks": r["assistant_masks"]} for r in rows]
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=data, processing_class=tok, callbacks=callbacks
    )
    # packed rows: per-chat attention, not an N×N block-diagonal mask (lmpipe.posttrain.varlen)
    if trainer.padding_free:
        trainer.add_callback(packed_attention_callback())
    return trainer


def train_sft(
    post: PosttrainConfig,
    model_dir: str | Path,
    out_dir: str | Path,
    ckpt_dir: str | Path,
    data_dir: str | Path,
    live_dir: str | Path,
    seed: int,
    callbacks: list | None = None,
    stage: str = "sft",
) -> dict[str, Any]:
    model, tok, added = open_model(model_dir, post.sft.train, post.data.max_length, post.sft.chat_template)
    rows, data_stats = prepare(post.data, tok, data_dir)
    fingerprint = {
        "stage": stage,
        "params": post.sft.model_dump(),
        "max_length": post.data.max_length,
        "model": model_hash(model_dir),
        "data": data_hash([r["input_ids"] for r in rows]),
        "seed": seed,
    }
    build = lambda: make_trainer(model, tok, rows, post, ckpt_dir, seed, callbacks=callbacks)  # noqa: E731
    f = fit(fingerprint, build, tok, out_dir, ckpt_dir, live_dir)
    tokens = [v for _, v in f.curves.get("num_tokens", [])]
    trained_tokens = (tokens[-1] - (tokens[0] if f.resume else 0)) if tokens else 0
    return {
        **f.stats(model_dir),
        "chat_template_added": added,
        "train_loss": round(float(f.result.training_loss), 5),
        **curve_summary(f.curves, "loss", "mean_token_accuracy"),
        "packing": post.sft.packing,
        "tokens_per_s": round(trained_tokens / f.train_s, 1) if f.train_s > 0 else None,
        "data": data_stats,
    }


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``sft``: ``posttrain.sft.init_from`` → ``io.out``; checkpoints in ``io.ckpt``, the checked data
    and its quarantine in ``io.data``, curves in ``io.live``."""
    cfg = p.posttrain.sft
    return train_sft(
        p.posttrain, cfg.init_from, io.out, io.ckpt, io.data, io.live, stage_seed(cfg.train, p.run.seed)
    )


def run_base(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``sft_base``: the same SFT (``posttrain.sft``, same data) on ``posttrain.residual.base``: the instruct
    model whose difference from that base is the instruction residual (:mod:`lmpipe.posttrain.residual`)."""
    cfg = p.posttrain.sft
    seed = stage_seed(cfg.train, p.run.seed)
    return train_sft(
        p.posttrain, p.posttrain.residual.base, io.out, io.ckpt, io.data, io.live, seed, stage="sft_base"
    )
