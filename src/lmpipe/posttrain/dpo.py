"""Stage ``dpo``: preference optimisation with TRL (``DPOTrainer`` for sigmoid DPO / IPO, ``CPOTrainer`` for SimPO).

Pairs come from ``posttrain.data.preference`` files when given, else from the verifiable prompts
(:mod:`lmpipe.posttrain.preference`: on-policy samples of the SFT model, off-policy fallback); both are
decontaminated, and pairs longer than ``posttrain.data.max_length`` tokens are quarantined, not truncated.

Reference log-probabilities: TRL's ``precompute_ref_log_probs`` caches them in the ``datasets`` cache file of the
dataset's fingerprint (in-memory datasets have none, and the key holds an in-process hash of the module), so a
fresh process recomputes them. :class:`CachedRefDPOTrainer` keys them on disk by (reference model dir hash,
tokenized data hash) instead: a rerun or a resumed run computes zero reference forward passes.

SimPO is reference-free; TRL 1.16 has it in ``trl.experimental.cpo`` (``loss_type="simpo"``, ``cpo_alpha=0``),
not in ``DPOTrainer``, so that loss type switches trainer.

A DPO set-up whose loss stays at its untrained value (ln 2 for sigmoid, (1/2β)² for IPO: policy = reference)
for the first ``ln2_patience`` steps is broken (no gradient, chosen = rejected, masked completions): the stage
stops with a clear error instead of "training" for hours.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer

from lmpipe.posttrain.chat import encode
from lmpipe.posttrain.config import PosttrainConfig
from lmpipe.posttrain.data import Pair, Prompt, Quarantined, Split, read_sources, write_jsonl
from lmpipe.posttrain.decontam import clean
from lmpipe.posttrain.preference import off_policy_pairs, on_policy_pairs, prompt_text
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


class StuckLossError(RuntimeError):
    pass


class StuckLossGuard(TrainerCallback):
    """Raise if every logged loss of the first ``patience`` steps equals ``value`` (within ``tol``)."""

    def __init__(self, value: float, patience: int, tol: float, what: str) -> None:
        self.value, self.patience, self.tol, self.what = value, patience, tol, what
        self.stuck: list[bool] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
        if not logs or "loss" not in logs or state.global_step > self.patience:
            return
        self.stuck.append(abs(float(logs["loss"]) - self.value) < self.tol)
        if state.global_step == self.patience and all(self.stuck):
            raise StuckLossError(
                f"DPO loss stayed at {self.what} = {self.value:.4f} for the first {self.patience} steps: the policy's "
                "chosen-vs-rejected log-ratio never moved. Check that parameters are trainable and the LR is not 0, "
                "that chosen and rejected differ, and that completions are not fully masked or truncated."
            )


class CachedRefDPOTrainer(DPOTrainer):
    """DPOTrainer whose precomputed reference log-probs live on disk, keyed by (reference model, data)."""

    def __init__(self, *args: Any, ref_cache_dir: str | Path, ref_hash: str, **kwargs: Any) -> None:
        self.ref_cache_dir, self.ref_hash = Path(ref_cache_dir), ref_hash
        self.ref_forward_batches = 0
        self.ref_cache_hits: list[str] = []
        super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        import torch
        from torch.utils.data import DataLoader

        cols = [c for c in ("prompt_ids", "chosen_ids", "rejected_ids") if c in dataset.column_names]
        key = hashlib.sha256(json.dumps([list(dataset[c]) for c in cols]).encode()).hexdigest()[:32]
        path = self.ref_cache_dir / f"ref-{self.ref_hash}-{key}.json"
        if path.is_file():
            cached = json.loads(path.read_text())
            self.ref_cache_hits.append(name)
        else:
            loader = DataLoader(dataset, batch_size=batch_size, collate_fn=self.data_collator, shuffle=False)
            model = self.ref_model or self.model  # before the first step the policy is the reference
            chosen, rejected = [], []
            for batch in loader:
                batch = {
                    k: v.to(self.accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()
                }
                c, r = self.compute_ref_log_probs(model, batch)
                self.ref_forward_batches += 1
                chosen += c.float().cpu().tolist()
                rejected += r.float().cpu().tolist()
            cached = {"ref_chosen_logps": chosen, "ref_rejected_logps": rejected}
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cached))
            tmp.replace(path)
        for col, values in cached.items():
            dataset = dataset.add_column(col, values)
        return dataset


def untrained_loss(loss_type: str, beta: float) -> tuple[float, str] | None:
    """The loss when policy = reference (the ln 2 trap), or None for reference-free losses."""
    return {"sigmoid": (math.log(2), "ln 2"), "ipo": ((1 / (2 * beta)) ** 2, "(1/2β)²")}.get(loss_type)


def fit_pairs(pairs: list[Pair], tok: Any, max_length: int) -> tuple[list[dict], list[Quarantined]]:
    rows, rejected = [], []
    eos = tok.eos_token or ""
    for p in pairs:
        prompt = prompt_text(tok, p.prompt)
        n = len(encode(tok, prompt)) + max(
            len(encode(tok, p.chosen + eos)), len(encode(tok, p.rejected + eos))
        )
        if n > max_length:
            rejected.append(Quarantined(p.id, p.source, "over_length", f"{n} tokens > {max_length}", prompt))
        elif p.chosen.strip() == p.rejected.strip():
            rejected.append(Quarantined(p.id, p.source, "identical_pair", "chosen == rejected", prompt))
        else:
            rows.append({"id": p.id, "prompt": prompt, "chosen": p.chosen, "rejected": p.rejected})
    return rows, rejected


def build_pairs(
    post: PosttrainConfig, model: Any, tok: Any, seed: int, data_dir: Path | None, model_id: str
) -> tuple[list[dict], dict]:
    """Training pairs (decontaminated, length-checked) and their metrics. Sampled pairs are cached in ``data_dir``
    under a key of (``model_id``: the policy's model dir hash, prompts, sampling params, seed)."""
    cfg, data = post.dpo, post.data
    sources = data.preference or data.prompts
    read, per_file = read_sources(sources)
    cleaned, contam = clean(read, data)
    stats: dict[str, Any] = {"files": per_file, "decontamination": contam}
    if data.preference:
        pairs = [r for r in cleaned.kept if isinstance(r, Pair)]
        origin = Counter(fixed=len(pairs))
    else:
        prompts = [r for r in cleaned.kept if isinstance(r, Prompt)]
        random.Random(seed).shuffle(prompts)
        stats["prompts_available"] = len(prompts)
        prompts = prompts[: cfg.max_prompts]
        key = {
            "model": model_id,
            "prompts": data_hash([p.id for p in prompts]),
            "dpo": cfg.model_dump(include={"pairs", "samples_per_prompt", "temperature", "max_new_tokens"}),
            "seed": seed,
        }
        cache = data_dir / "pairs.json" if data_dir else None
        if cache and cache.is_file() and json.loads(cache.read_text())["key"] == key:
            saved = json.loads(cache.read_text())
            pairs, origin = [Pair(**p) for p in saved["pairs"]], Counter(saved["origin"])
            stats.update(saved["sampling"])
        else:
            if cfg.pairs == "on_policy":
                pairs, origin, sampling = on_policy_pairs(
                    model, tok, prompts, cfg.samples_per_prompt, cfg.temperature, cfg.max_new_tokens, seed
                )
            else:
                (pairs, origin), sampling = off_policy_pairs(prompts, seed), {}
            stats.update(sampling)
            if cache:
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(
                    json.dumps(
                        {
                            "key": key,
                            "pairs": [p.__dict__ for p in pairs],
                            "origin": origin,
                            "sampling": sampling,
                        }
                    )
                )
    rows, too_long = fit_pairs(pairs, tok, data.max_length)
    final = Split(rows, cleaned.rejected + too_long)
    if data_dir:
        write_jsonl(data_dir / "pairs.jsonl", rows)
        write_jsonl(data_dir / "rejected.jsonl", final.rejected)
    if not rows:
        raise RuntimeError(f"DPO: no usable preference pairs ({final.counts()})")
    return rows, {**stats, **final.counts(), "pair_origin": dict(origin)}


def make_trainer(
    model: Any,
    tok: Any,
    rows: list[dict],
    post: PosttrainConfig,
    ckpt_dir: str | Path,
    seed: int,
    ref_cache_dir: str | Path,
    ref_hash: str,
    callbacks: list | None = None,
) -> Any:
    from datasets import Dataset

    cfg = post.dpo
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    callbacks = list(callbacks or [])
    if cfg.loss_type == "simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        args = trainer_args(
            CPOConfig,
            cfg.train,
            ckpt_dir,
            seed,
            loss_type="simpo",
            cpo_alpha=0.0,
            beta=cfg.beta,
            simpo_gamma=cfg.simpo_gamma,
            max_length=post.data.max_length,
        )
        return CPOTrainer(
            model=model, args=args, train_dataset=data, processing_class=tok, callbacks=callbacks
        )
    stuck = untrained_loss(cfg.loss_type, cfg.beta)
    if stuck:
        callbacks.append(StuckLossGuard(stuck[0], cfg.ln2_patience, cfg.ln2_tol, stuck[1]))
    args = trainer_args(
        DPOConfig,
        cfg.train,
        ckpt_dir,
        seed,
        loss_type=[cfg.loss_type],
        beta=cfg.beta,
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=32,
        max_length=post.data.max_length,
    )
    return CachedRefDPOTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tok,
        callbacks=callbacks,
        ref_cache_dir=ref_cache_dir,
        ref_hash=ref_hash,
    )


def train_dpo(
    post: PosttrainConfig,
    model_dir: str | Path,
    out_dir: str | Path,
    ckpt_dir: str | Path,
    data_dir: str | Path,
    live_dir: str | Path,
    cache_dir: str | Path,
    seed: int,
    callbacks: list | None = None,
) -> dict[str, Any]:
    model, tok, added = open_model(model_dir, post.dpo.train, post.data.max_length)
    ref_hash = model_hash(model_dir)
    rows, data_stats = build_pairs(post, model, tok, seed, Path(data_dir), ref_hash)
    fingerprint = {
        "stage": "dpo",
        "params": post.dpo.model_dump(),
        "model": ref_hash,
        "data": data_hash(rows),
        "max_length": post.data.max_length,
        "seed": seed,
    }
    build = lambda: make_trainer(model, tok, rows, post, ckpt_dir, seed, cache_dir, ref_hash, callbacks)  # noqa: E731
    f = fit(fingerprint, build, tok, out_dir, ckpt_dir, live_dir)
    return {
        **f.stats(model_dir),
        "loss_type": post.dpo.loss_type,
        "beta": post.dpo.beta,
        "train_loss": round(float(f.result.training_loss), 5),
        **curve_summary(f.curves, "loss", "rewards/margins", "rewards/accuracies"),
        "ref_logps": {
            "forward_batches": getattr(f.trainer, "ref_forward_batches", 0),
            "cache_hits": getattr(f.trainer, "ref_cache_hits", []),
            "seconds": round(f.setup_s, 2),
        },
        "chat_template_added": added,
        "data": data_stats,
    }


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``dpo``: ``posttrain.dpo.init_from`` → ``io.out``; checkpoints in ``io.ckpt``, the checked data
    and its quarantine in ``io.data``, curves in ``io.live``."""
    cfg = p.posttrain.dpo
    seed = stage_seed(cfg.train, p.run.seed)
    return train_dpo(p.posttrain, cfg.init_from, io.out, io.ckpt, io.data, io.live, io.cache, seed)
