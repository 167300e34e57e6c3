"""Continual pretraining (CPT): a trained model keeps learning from new documents while replaying the old ones.

This closes the EntiGraph loop: the synthetic ``augment`` documents about the fictional entities are packed
with the parent's own tokenizer, and the parent model continues training on a mixture of that new domain and
the original domains of ``data/tokens`` (replay against forgetting), with the LR re-warmed and re-decayed
(``schedule.start_ratio``, :mod:`lmpipe.schedules`).

Data layout: only the new documents are tokenized (:func:`tokenize_new_domains` → ``data/tokens-cpt``); replay
reads the base token files in place through :meth:`lmpipe.mixture.TokenIndex.merge`, so nothing is packed twice
and the replayed tokens are exactly the ones the parent saw. Training itself is :func:`lmpipe.training.train`
with ``train.init_from``; this module adds the inputs that make a CPT run reproducible: the parent's weights
are part of the checkpoint fingerprint, so a retrained parent never resumes a stale CPT checkpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from lmpipe.config import CptConfig, ModelConfig, TokenizeConfig
from lmpipe.documents import sha256_file
from lmpipe.executors import Executor
from lmpipe.mixture import INDEX, TokenIndex, normalize_weights
from lmpipe.tokenization import tokenize_corpus

TOKENIZER_SUBDIR = "tokenizer"  # inside the CPT token dir: the copy of the reused tokenizer
HELDOUT_SUBDIR = "heldout"  # inside the CPT token dir: held-out new documents (lmpipe document dataset)


def tokenize_new_domains(
    cfg: TokenizeConfig,
    val_fraction: float,
    docs_dir: str | Path,
    tokens_dir: str | Path,
    tokenizer_dir: str | Path,
    executor: Executor,
) -> dict[str, Any]:
    """Pack ``docs_dir`` with the existing tokenizer at ``tokenizer_dir`` (never retrained) into ``tokens_dir``.

    The base ``tokenize`` settings (EOS, batching, threads) apply, so the new token files are laid out exactly
    like the base ones and :meth:`TokenIndex.merge` can join them."""
    tokens_dir = Path(tokens_dir)
    reuse = cfg.model_copy(update={"tokenizer_path": str(tokenizer_dir), "val_fraction": val_fraction})
    copy = tokens_dir / TOKENIZER_SUBDIR
    stats = tokenize_corpus(reuse, docs_dir, tokens_dir, copy, tokens_dir / HELDOUT_SUBDIR, executor)
    _check_same_vocab(Path(tokenizer_dir), copy)
    return stats


def _check_same_vocab(src: Path, copy: Path) -> None:
    from tokenizers import Tokenizer

    a = Tokenizer.from_file(str(src / "tokenizer.json")).get_vocab(with_added_tokens=True)
    b = Tokenizer.from_file(str(copy / "tokenizer.json")).get_vocab(with_added_tokens=True)
    if a != b:
        raise RuntimeError(f"the tokenizer copied to {copy} differs from {src}: token ids would not match the parent")


def replay_index(token_dirs: list[str | Path]) -> TokenIndex:
    """The new domains and the replayed old ones as one index (checked to share dtype, vocab and EOS)."""
    return TokenIndex.merge([TokenIndex.load(d) for d in token_dirs])


def model_fingerprint(model_dir: str | Path) -> str:
    """A hash of a model directory's weights and config: identifies the parent a CPT run starts from."""
    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.iterdir() if p.suffix in {".safetensors", ".bin"} or p.name == "config.json")
    if not any(p.name == "config.json" for p in files):
        raise FileNotFoundError(f"{model_dir}: no config.json (train.init_from must be an HF model dir)")
    blob = "".join(f"{p.name}:{sha256_file(p)}\n" for p in files)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def continue_pretraining(
    model_cfg: ModelConfig,
    cfg: CptConfig,
    token_dirs: list[str | Path],
    tokenizer_dir: str | Path,
    *,
    seed: int,
    ckpt_dir: str | Path,
    log_dir: str | Path | None,
    export_dir: str | Path | None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``cfg.train.init_from`` further on ``cfg.mixture`` over the merged ``token_dirs``; returns metrics."""
    from lmpipe.training import mixture_samplers, train, vocab_and_special_ids

    assert cfg.train.init_from  # CptConfig guarantees it
    index = replay_index(token_dirs)
    vocab_size, special_ids = vocab_and_special_ids(index, tokenizer_dir)
    weights = normalize_weights(cfg.mixture.weights, index.domains("train"), cfg.mixture.missing)
    fingerprint = {
        "data": [sha256_file(Path(d) / INDEX) for d in token_dirs],
        "mixture": cfg.mixture.model_dump(),
        "parent": model_fingerprint(cfg.train.init_from),
    }
    stats = train(
        model_cfg,
        cfg.train,
        mixture_samplers(index, cfg.mixture, cfg.train.seq_len, seed),
        vocab_size=vocab_size,
        ckpt_dir=ckpt_dir,
        log_dir=log_dir,
        export_dir=export_dir,
        tokenizer_dir=tokenizer_dir,
        special_ids=special_ids,
        seed=seed,
        fingerprint=fingerprint,
        progress=progress,
    )
    return {**stats, "parent": str(cfg.train.init_from), "mixture": {d: round(w, 6) for d, w in weights.items()}}
