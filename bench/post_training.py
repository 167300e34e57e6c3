"""Post-training throughput: our SFT stage vs TRL's SFTTrainer called directly, DPO with cached vs live
reference log-probs, GRPO rollouts/s.

Same tiny Llama (params.yaml's pipeline size: d_model 128, 4 layers) and the same data for both sides of each
comparison, built fresh per repeat; sides alternate within a round so machine load hits both alike; median and
spread over the rounds.

- SFT: Alpaca seed tasks (../shared/data). Ours = :func:`lmpipe.posttrain.sft.make_trainer` on our pre-tokenized
  chats (assistant masks, BFD packing); peer = ``SFTTrainer`` given the conversations as they are, with
  ``assistant_only_loss`` and ``packing`` (its own fast path: TRL tokenizes, masks via ``{% generation %}``).
  tokens/s = tokens trained / ``trainer.train()`` seconds (TRL's ``num_tokens``); set-up time is reported too.
- DPO: seconds per optimizer step, reference log-probs read from our on-disk cache vs computed by a reference
  model in every step (TRL's default).
- GRPO: completions (rollouts) per second of ``GRPOTrainer.train()`` with our verifiable reward.

    python bench/post_training.py [--rounds 3] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from _common import require_shared, stat, table, write_result  # noqa: E402

from lmpipe.posttrain.config import InstructSource, PosttrainConfig  # noqa: E402
from lmpipe.posttrain.data import Pair, read_source  # noqa: E402
from lmpipe.tiny import build_tiny_model  # noqa: E402

# issue 11: our SFT stage's tokens/s at least 0.95 x SFTTrainer's (the wrapping costs nothing)
SFT_TARGET = 0.95
NOTES = [
    "SFT: both sides train the same model on the same chats with the same ChatML; TRL needs {% generation %} "
    "markers for assistant_only_loss, ours computes masks by prefix rendering, so templates without markers "
    "(SmolLM2) work too.",
    "DPO: the cached side reads reference log-probs from lmpipe's on-disk cache (zero reference forwards); the "
    "peer keeps a reference model and runs it in every step.",
]


def trained_tokens(trainer) -> float:
    return max(r.get("num_tokens", 0) for r in trainer.state.log_history)


def sft_round(model_dir: Path, chats, post: PosttrainConfig, work: Path, steps: int) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from lmpipe.posttrain.sft import make_trainer, tokenize_chats
    from lmpipe.posttrain.trainer import load_model, trainer_args

    out = {}
    for side in ("ours", "trl"):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        if side == "ours":
            model, tok, _ = load_model(model_dir)
            rows, _ = tokenize_chats(chats, tok, post.data.max_length)
            trainer = make_trainer(model, tok, rows, post, work / f"ours-{time.time()}", 0)
        else:
            tok = AutoTokenizer.from_pretrained(model_dir)
            model = AutoModelForCausalLM.from_pretrained(model_dir)
            from lmpipe.posttrain.chat import ensure_chat_template

            # same ChatML and embeddings as ours; TRL's assistant_only_loss needs the template's {% generation %}
            # markers (ours has them; a template without them, e.g. SmolLM2's, is refused by TRL, not by us)
            ensure_chat_template(tok, model)
            data = Dataset.from_list([{"messages": c.messages} for c in chats])
            args = trainer_args(
                SFTConfig,
                post.sft.train,
                work / f"trl-{time.time()}",
                0,
                packing=True,
                max_length=post.data.max_length,
                assistant_only_loss=True,
            )
            trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
        setup = time.perf_counter() - t0
        t1 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t1
        out[side] = {
            "tokens_per_s": trained_tokens(trainer) / train_s,
            "setup_s": setup,
            "train_s": train_s,
            "loss_end": trainer.state.log_history[-2].get("loss"),
        }
    return out


def dpo_round(
    model_dir: Path, pairs: list[Pair], post: PosttrainConfig, work: Path, warm: bool = True
) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from lmpipe.posttrain.dpo import fit_pairs, make_trainer
    from lmpipe.posttrain.trainer import model_hash, trainer_args

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows, _ = fit_pairs(pairs, tok, post.data.max_length)
    out = {}
    for side in ("cached", "live"):
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        if side == "cached":  # the cache was filled by the warm-up call; this one reads it
            trainer = make_trainer(
                model, tok, rows, post, work / f"c-{time.time()}", 0, work / "refcache", model_hash(model_dir)
            )
            assert trainer.ref_forward_batches == 0 or not warm
            forwards = trainer.ref_forward_batches
        else:
            args = trainer_args(
                DPOConfig,
                post.dpo.train,
                work / f"l-{time.time()}",
                0,
                loss_type=["sigmoid"],
                beta=post.dpo.beta,
                max_length=post.data.max_length,
            )
            data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
            trainer = DPOTrainer(
                model=model,
                ref_model=AutoModelForCausalLM.from_pretrained(model_dir),
                args=args,
                train_dataset=data,
                processing_class=tok,
            )
        t = time.perf_counter()
        trainer.train()
        out[side] = {"step_s": (time.perf_counter() - t) / trainer.state.global_step}
    out["cached"]["ref_forward_batches"] = forwards
    return out


def grpo_round(model_dir: Path, rows: list[dict], post: PosttrainConfig, work: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmpipe.posttrain.rlvr import make_trainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    trainer = make_trainer(
        AutoModelForCausalLM.from_pretrained(model_dir), tok, rows, post, work / f"g-{time.time()}", 0
    )
    t = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t
    rollouts = trainer.state.global_step * post.rlvr.train.batch_size
    return {"rollouts_per_s": rollouts / seconds, "step_s": seconds / trainer.state.global_step}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3, help="repeats (at least 3)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    if a.rounds < 3:
        ap.error("--rounds: at least 3 repeats")
    torch.set_num_threads(a.threads)
    shared = require_shared()
    seed = read_source(
        InstructSource(path=str(shared / "alpaca/seed_tasks.jsonl"), format="alpaca_seed")
    ).kept
    hh = read_source(
        InstructSource(
            path=str(shared / "hh-rlhf/harmless-base-test.jsonl.gz"), format="hh_rlhf", max_records=400
        )
    ).kept
    texts = [m["content"] for c in seed for m in c.messages] + [p.chosen for p in hh]
    post = PosttrainConfig.model_validate(
        {
            "data": {"max_length": 256},
            "sft": {"train": {"max_steps": a.steps, "batch_size": 4, "save_steps": 10_000}},
            "dpo": {"train": {"max_steps": a.steps, "batch_size": 8, "save_steps": 10_000}},
            "rlvr": {
                "num_generations": 4,
                "max_new_tokens": 24,
                "train": {"max_steps": max(2, a.steps // 2), "batch_size": 8, "save_steps": 10_000},
            },
        }
    )

    from lmpipe.posttrain.preference import prompt_text

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = build_tiny_model(
            work / "m",
            texts=texts,
            vocab_size=2048,
            hidden=128,
            layers=4,
            heads=4,
            context=256,  # no chat template, like our pipeline tokenizer
        )
        from lmpipe.posttrain.sft import tokenize_chats
        from lmpipe.posttrain.trainer import load_model

        model, tok, _ = load_model(
            model_dir
        )  # + ChatML: the SFT model DPO and GRPO start from in the pipeline
        chat_dir = work / "chat"
        model.save_pretrained(chat_dir)
        tok.save_pretrained(chat_dir)
        rows, _ = tokenize_chats(seed, tok, 256)
        chats = [c for c in seed if c.id in {r["id"] for r in rows}]
        pairs = hh[:200]
        dpo_round(
            chat_dir, pairs, post, work, warm=False
        )  # warm-up: fills the reference cache, loads code paths
        prompts = [
            {
                "id": f"m{i}",
                "prompt": prompt_text(tok, [{"role": "user", "content": f"What is {i} + {i}?"}]),
                "answer": str(2 * i),
                "kind": "math",
            }
            for i in range(64)
        ]
        rounds = []
        for r in range(a.rounds):
            rounds.append(
                {
                    "sft": sft_round(model_dir, chats, post, work, a.steps),
                    "dpo": dpo_round(chat_dir, pairs, post, work),
                    "grpo": grpo_round(chat_dir, prompts, post, work),
                }
            )
            print(f"round {r}: {json.dumps(rounds[-1])}", flush=True)
    write(rounds, len(chats), len(pairs), a.steps, post.rlvr.train.max_steps, a.threads, NOTES)


def write(
    rounds: list[dict],
    n_chats: int,
    n_pairs: int,
    steps: int,
    grpo_steps: int,
    threads: int,
    notes: list[str] | None = None,
) -> None:
    """The JSON of ``bench/results/post_training.json`` from the measured rounds."""
    col = lambda *keys: [_get(x, keys) for x in rounds]  # noqa: E731
    sft = table(
        "SFT training throughput (same model, same chats)",
        "tokens_per_s",
        {
            "lmpipe sft stage (our assistant masks, BFD packing)": {
                "tokens_per_s": stat(col("sft", "ours", "tokens_per_s"), 1),
                "setup_s": stat(col("sft", "ours", "setup_s")),
            },
            "TRL SFTTrainer direct (assistant_only_loss, packing)": {
                "tokens_per_s": stat(col("sft", "trl", "tokens_per_s"), 1),
                "setup_s": stat(col("sft", "trl", "setup_s")),
            },
        },
        ours=["lmpipe sft stage (our assistant masks, BFD packing)"],
        peers=["TRL SFTTrainer direct (assistant_only_loss, packing)"],
    )
    dpo = table(
        "DPO optimizer step",
        "step_s",
        {
            "lmpipe dpo, reference log-probs from the disk cache": {
                "step_s": stat(col("dpo", "cached", "step_s"))
            },
            "TRL DPOTrainer, reference model forward in every step": {
                "step_s": stat(col("dpo", "live", "step_s"))
            },
        },
        ours=["lmpipe dpo, reference log-probs from the disk cache"],
        peers=["TRL DPOTrainer, reference model forward in every step"],
        higher_is_better=False,
    )
    grpo = table(
        "GRPO rollouts",
        "rollouts_per_s",
        {
            "lmpipe rlvr (TRL GRPOTrainer, verifiable reward)": {
                "rollouts_per_s": stat(col("grpo", "rollouts_per_s")),
                "step_s": stat(col("grpo", "step_s")),
            },
        },
        ours=["lmpipe rlvr (TRL GRPOTrainer, verifiable reward)"],
        peers=[],
    )
    loss = {s: round(statistics.median(col("sft", s, "loss_end")), 4) for s in ("ours", "trl")}
    # ratios within each round (both sides ran back to back), so load drift between rounds cancels
    sft_ratio = [
        o / t
        for o, t in zip(col("sft", "ours", "tokens_per_s"), col("sft", "trl", "tokens_per_s"), strict=True)
    ]
    dpo_ratio = [
        v / c for v, c in zip(col("dpo", "live", "step_s"), col("dpo", "cached", "step_s"), strict=True)
    ]
    write_result(
        "post_training",
        repeats=len(rounds),
        tables=[sft, dpo, grpo],
        input={
            "model": "tiny Llama d128 x 4 layers, vocab 2048, context 256 (the pipeline model's shape)",
            "threads": threads,
            "sft": f"{n_chats} Alpaca seed-task chats, {steps} steps x 4 packed rows of 256 tokens",
            "dpo": f"{n_pairs} HH-RLHF pairs, {steps} steps x 8 pairs",
            "grpo": f"64 math prompts, {grpo_steps} steps x 8 completions of <= 24 tokens",
        },
        checks={
            "sft_final_loss_median": loss,
            "sft_tokens_per_s_ours_over_trl": {
                **stat(sft_ratio, 3),
                "target": SFT_TARGET,
                "met": statistics.median(sft_ratio) >= SFT_TARGET,
            },
            "dpo_step_s_live_over_cached": stat(dpo_ratio, 3),
            "dpo_cached_ref_forward_batches": max(col("dpo", "cached", "ref_forward_batches")),
        },
        notes=notes,
    )


def _get(d: dict, keys: tuple) -> float:
    for k in keys:
        d = d[k]
    return float(d)


if __name__ == "__main__":
    main()
