"""Continual pretraining (CPT): a trained model keeps learning from new documents while replaying the old ones.

This closes the EntiGraph loop: the synthetic ``augment`` documents about the fictional entities are packed
with the parent's own tokenizer, and the parent model continues training on a mixture of that new domain and
the original domains of ``data/tokens`` (replay against forgetting), with the LR re-warmed and re-decayed
(``schedule.start_ratio``, :mod:`lmpipe.schedules`).

Data layout: only the new documents are tokenized (:func:`tokenize_new_domains` → ``data/tokens-cpt``); replay
reads the base token files in place through :meth:`lmpipe.mixture.TokenIndex.merge`, so nothing is packed twice
and the replayed tokens are exactly the ones the parent saw. Training itself is :func:`lmpipe.training.trainer.train`
with ``train.init_from``; this module adds the inputs that make a CPT run reproducible: the parent's weights
are part of the checkpoint fingerprint, so a retrained parent never resumes a stale CPT checkpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmpipe.documents import sha256_file
from lmpipe.executors import Executor
from lmpipe.mixture import TokenIndex, normalize_weights
from lmpipe.tokenization import tokenize_corpus
from lmpipe.tokenization_config import TokenizeConfig
from lmpipe.training.config import CptConfig, ModelConfig

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO

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
    **outputs: Any,
) -> dict[str, Any]:
    """Train ``cfg.train.init_from`` further on ``cfg.mixture`` over the merged ``token_dirs``; returns metrics.
    ``outputs`` (``ckpt_dir``, ``log_dir``, ``export_dir``, ``progress``) are those of ``train_on_tokens``."""
    from lmpipe.pretrain import train_on_tokens

    assert cfg.train.init_from  # CptConfig guarantees it
    weights = normalize_weights(cfg.mixture.weights, replay_index(token_dirs).domains("train"), cfg.mixture.missing)
    stats = train_on_tokens(model_cfg, cfg.train, cfg.mixture, token_dirs, tokenizer_dir, seed=seed,
                            fingerprint={"parent": model_fingerprint(cfg.train.init_from)}, **outputs)
    return {**stats, "parent": str(cfg.train.init_from), "mixture": {d: round(w, 6) for d, w in weights.items()}}


def tokenize(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``cpt_tokenize``: the new documents ``io.docs`` packed with the parent's tokenizer."""
    return tokenize_new_domains(p.tokenize, p.cpt.val_fraction, io.docs, io.tokens, io.tokenizer, ex)


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``cpt``: the parent (``cpt.train.init_from``) trained on replay (``io.tokens``) + new (``io.new_tokens``);
    with ``cpt.replay_from_cmr`` the old domains' share is the cmr stage's suggested ratio."""
    seed = p.cpt.train.seed if p.cpt.train.seed is not None else p.run.seed
    cfg = p.cpt
    if cfg.replay_from_cmr:  # the cmr stage's critical ratio
        from lmpipe.mixing.cmrgrid import cpt_mixture

        if "replay" not in io:  # DVC would not rerun cpt when the advice changes: refuse rather than go stale
            raise ValueError("cpt.replay_from_cmr is true but dvc.yaml does not make the cmr advice a dependency "
                             "of cpt: run `python -m stages.registry --write` after flipping the flag")

        new_domains = TokenIndex.load(io.new_tokens).domains("train")
        cfg = cfg.model_copy(update={"mixture": cpt_mixture(cfg.mixture, new_domains, io.replay)})
    stats = continue_pretraining(p.model, cfg, [io.tokens, io.new_tokens], io.tokenizer, seed=seed,
                                 ckpt_dir=io.ckpt, log_dir=io.live, export_dir=io.out)
    return {**stats, "replay_from_cmr": cfg.replay_from_cmr}
