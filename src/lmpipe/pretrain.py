"""Stage ``pretrain``: packed tokens + tokenizer → a Hugging Face causal LM trained with Lightning.

:func:`train_on_tokens` is the one assembly of a training run from token directories (index, vocab, special
ids, mixture samplers, resume fingerprint); ``cpt`` calls it with the replayed and the new token dirs. A run
resumes exactly from ``<ckpt>/latest.ckpt`` after a crash while params and data are unchanged, logs to
DVCLive, and exports safetensors + config + tokenizer (``AutoModelForCausalLM.from_pretrained(out)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmpipe.conditioning.config import MetaConfig
from lmpipe.documents import sha256_file
from lmpipe.mixing.config import MixtureConfig
from lmpipe.mixture import INDEX, TokenIndex, tuned_mixture
from lmpipe.training.config import ModelConfig, TrainConfig

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.executors import Executor


def train_on_tokens(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    mixture: MixtureConfig,
    token_dirs: list[str | Path],
    tokenizer_dir: str | Path,
    *,
    seed: int,
    ckpt_dir: str | Path,
    log_dir: str | Path | None,
    export_dir: str | Path | None,
    fingerprint: dict[str, Any] | None = None,
    progress: bool = True,
    meco: MetaConfig | None = None,
) -> dict[str, Any]:
    """Train on ``mixture`` over the token dirs (merged when several: replay reads them in place); with
    ``mixture.reweight.enabled`` the weights are updated online (:mod:`lmpipe.mixing.reweight`); with
    ``meco``, on the metadata-prefixed documents for its fraction of the tokens, then on plain ones."""
    from lmpipe.mixture import normalize_weights
    from lmpipe.training.data import mixture_samplers, vocab_and_special_ids
    from lmpipe.training.trainer import train

    index = TokenIndex.merge([TokenIndex.load(d) for d in token_dirs]) if len(token_dirs) > 1 \
        else TokenIndex.load(token_dirs[0])
    vocab_size, special_ids = vocab_and_special_ids(index, tokenizer_dir)
    run_id = {
        "data": [sha256_file(Path(d) / INDEX) for d in token_dirs],
        "mixture": mixture.model_dump(),
        **(fingerprint or {}),
    }
    if meco is not None and (mixture.reweight.enabled or mixture.sampler != "weighted"):
        raise ValueError("condition.meco needs mixture.sampler: weighted and mixture.reweight off: MeCo trains "
                         "from two weighted samplers in turn, which reweighting and RS2 do not drive yet")
    callbacks = []
    if mixture.reweight.enabled:
        from lmpipe.mixing import reweight

        weights = normalize_weights(mixture.weights, index.domains("train"), mixture.missing)
        callbacks.append(reweight.build(mixture.reweight, index, weights, train_cfg.seq_len, train_cfg.batch_size,
                                        seed))
    meco_windows = None
    if meco is not None:
        from lmpipe.conditioning.meco import boundary_windows

        if not isinstance(train_cfg.devices, int):
            raise ValueError("condition.meco needs train.devices as a number (the cooldown boundary counts windows "
                             "of all devices)")
        meco_windows = boundary_windows(meco.fraction, train_cfg.max_steps, train_cfg.batch_size,
                                        train_cfg.grad_accum, train_cfg.devices * train_cfg.num_nodes)
        run_id["meco"] = {**meco.model_dump(), "windows": meco_windows}
    stats = train(
        model_cfg,
        train_cfg,
        mixture_samplers(index, mixture, train_cfg.seq_len, seed, meco_windows),
        vocab_size=vocab_size,
        ckpt_dir=ckpt_dir,
        log_dir=log_dir,
        export_dir=export_dir,
        tokenizer_dir=tokenizer_dir,
        special_ids=special_ids,
        seed=seed,
        fingerprint=run_id,
        progress=progress,
        callbacks=callbacks,
    )
    if callbacks:
        stats["reweight"] = callbacks[0].summary()
        if log_dir is not None:
            stats["reweight"]["plot"] = reweight.plot_weights(callbacks[0].history,
                                                              Path(log_dir) / "plots" / "mixture_weights.png")
    return stats


def stage_mixture(mixture: MixtureConfig, io: StageIO) -> MixtureConfig:
    """The mixture the stage trains on: ``mixture.weights``, or the tune stage's winner with ``from_tune``.

    The stage always depends on the winner's file (``io.tuned``), so the graph does not change with the flag;
    with the flag off the file is not read, and a new winner reruns the stage only to find its finished
    checkpoint (the run fingerprint holds the mixture actually trained), so it just re-exports."""
    return tuned_mixture(mixture, io.tuned) if mixture.from_tune else mixture


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    seed = p.train.seed if p.train.seed is not None else p.run.seed
    mixture = stage_mixture(p.mixture, io)
    meco = p.condition.meco if p.condition.meco.enabled else None
    stats = train_on_tokens(p.model, p.train, mixture, [io.tokens], io.tokenizer, seed=seed,
                            ckpt_dir=io.ckpt, log_dir=io.live, export_dir=io.out, meco=meco)
    if meco is not None:
        # the prefix is gone from this optimizer step on (lmpipe.conditioning.meco.boundary_windows)
        stats["meco"] = {"fraction": meco.fraction, "template": meco.template,
                         "cooldown_from_step": round(meco.fraction * p.train.max_steps)}
    return {**stats, "mixture": {d: round(w, 6) for d, w in sorted(mixture.weights.items())},
            "mixture_from_tune": mixture.from_tune}
