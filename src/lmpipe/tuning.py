"""Optuna search over the training mixture: many short training runs, one held-out number each.

Search space (``tune.weights``): one raw float per domain in its ``[low, high]`` range, divided by their sum,
so every proposal is a point on the simplex (ranges bound the raw values; ``[x, x]`` fixes a domain and
``[0, 0]`` leaves it out). Optionally the peak LR, log-uniform in ``tune.lr = [low, high]``.

Objective (:class:`MixtureObjective`): train the ``model`` section's architecture for ``tune.steps`` steps with
:func:`lmpipe.training.trainer.train` on that mixture (no logger, one checkpoint in a scratch dir), export it, and score
it with :func:`lmpipe.evaluation.heldout_metrics`: the value is the mean bits/byte over ``tune.targets``.
Training is seeded, so a trial's value is a function of its params, the seed and the data.

``tune.method: surrogate`` replaces the TPE study by a RegMix-style regression over proxy runs
(:mod:`lmpipe.surrogate`), in the same storage and with the same outputs; ``tune.method: pareto`` searches
target-domain loss against old-domain loss with two objectives (:mod:`lmpipe.mixing.pareto`).

Study (:func:`run_study`): RDB storage (SQLite file by default; a Postgres/MySQL URL lets several workers share
one study), ``load_if_exists`` so a rerun continues, and trials are added until the study holds ``n_trials``
COMPLETE ones. The TPE sampler is re-seeded before each trial from ``seed + trials so far``, so an interrupted
and resumed study proposes the same trials an uninterrupted one would. The study name carries a fingerprint of
everything that defines the objective (data, model, steps, targets, ranges), so changing any of them starts a
fresh study in the same database instead of mixing incomparable values; old studies stay inspectable.

Kept as one module past ~400 lines on purpose: the objective, the re-seeded trial loop and the study
fingerprint together define what a stored trial value means; the alternatives to TPE live in their own modules.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from lmpipe.mixing.config import MixtureConfig, TuneConfig
from lmpipe.training.config import ModelConfig, ScheduleConfig, TrainConfig

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.executors import Executor

WEIGHT_PREFIX = "w_"  # Optuna param name of a domain's raw weight
ObjectiveFn = Callable[[dict[str, float], float], dict[str, Any]]  # (normalised weights, lr) -> {"value", ...}
log = logging.getLogger(__name__)
# the trial being run, for an objective that reports intermediate values (pruning) without a changed signature
CURRENT_TRIAL: ContextVar[optuna.Trial | None] = ContextVar("CURRENT_TRIAL", default=None)


# ------------------------------------------------------------------------------------------ space
def searched_domains(cfg: TuneConfig) -> list[str]:
    """Domains that can get weight (upper bound > 0), sorted."""
    return sorted(d for d, (_, hi) in cfg.weights.items() if hi > 0)


def normalise(raw: dict[str, float]) -> dict[str, float]:
    total = sum(raw.values())
    if not total > 0:
        raise ValueError(f"all raw weights are zero: {raw}")
    return {d: raw[d] / total for d in sorted(raw)}


def suggest(trial: optuna.Trial, cfg: TuneConfig) -> tuple[dict[str, float], float]:
    """Draw one point of the search space: (normalised weights, lr)."""
    raw = {d: trial.suggest_float(WEIGHT_PREFIX + d, *cfg.weights[d]) for d in searched_domains(cfg)}
    lr = trial.suggest_float("lr", *cfg.lr, log=True) if isinstance(cfg.lr, tuple) else float(cfg.lr)
    if not sum(raw.values()) > 0:
        raise optuna.TrialPruned("every sampled weight is zero: no mixture to train on")
    return normalise(raw), lr


def weights_of(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """A finished trial's normalised weights, recomputed from its raw params."""
    return normalise({k[len(WEIGHT_PREFIX) :]: v for k, v in trial.params.items() if k.startswith(WEIGHT_PREFIX)})


def current_params(cfg: TuneConfig, mixture: MixtureConfig) -> dict[str, float] | None:
    """The current ``mixture.weights`` as raw params (normalised; the objective is scale-free), or None when
    they are not a point of the search space (a domain unsearched or a weight outside its range)."""
    try:
        w = normalise({d: float(v) for d, v in mixture.weights.items() if v > 0})
    except ValueError:
        return None
    space = searched_domains(cfg)
    params = {WEIGHT_PREFIX + d: w.get(d, 0.0) for d in space}
    if set(w) - set(space) or any(
        not cfg.weights[d][0] <= params[WEIGHT_PREFIX + d] <= cfg.weights[d][1] for d in space
    ):
        return None
    return params


# ------------------------------------------------------------------------------------------ objective
def data_fingerprint(tokens_dir: str | Path, heldout_dir: str | Path) -> str:
    h = hashlib.sha256()
    for f in (Path(tokens_dir) / "index.json", Path(heldout_dir) / "manifest.json"):
        h.update(f.read_bytes() if f.exists() else b"")
    return h.hexdigest()[:16]


def study_fingerprint(cfg: TuneConfig, model: ModelConfig, seed: int, data: str) -> str:
    """Hash of everything that defines the objective and the space (not n_trials, storage or sampler knobs)."""
    keep = {"weights", "lr", "targets", "steps", "batch_size", "seq_len", "warmup_steps", "heldout"}
    if cfg.method != "tpe":  # another method's trials are another study (TPE study names stay as they were)
        keep |= {"method", "surrogate", "pareto"}
    blob = json.dumps([cfg.model_dump(include=keep), model.model_dump(), seed, data], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def trial_train_config(cfg: TuneConfig, lr: float) -> TrainConfig:
    """The short run of one trial: validation and checkpoints only at the end (val_every/ckpt_every > steps)."""
    return TrainConfig(
        seq_len=cfg.seq_len,
        batch_size=cfg.batch_size,
        max_steps=cfg.steps,
        lr=lr,
        schedule=ScheduleConfig(warmup_steps=min(cfg.warmup_steps, cfg.steps)),
        val_every=cfg.steps + 1,
        ckpt_every=cfg.steps + 1,
        val_batches=1,
        threads=cfg.threads,
        peak_tflops=1.0,  # MFU is not reported here: skip the throughput callback's CPU GEMM measurement
    )


class MixtureObjective:
    """Short training run on a mixture → mean held-out bits/byte over the target domains (lower is better)."""

    def __init__(
        self,
        cfg: TuneConfig,
        model: ModelConfig,
        tokens_dir: str | Path,
        heldout_dir: str | Path,
        tokenizer_dir: str | Path,
        seed: int,
        work_dir: str | Path | None = None,
    ) -> None:
        from lmpipe.mixture import TokenIndex
        from lmpipe.training.data import vocab_and_special_ids

        self.cfg, self.model, self.seed = cfg, model, seed
        self.tokens_dir, self.heldout_dir, self.tokenizer_dir = Path(tokens_dir), Path(heldout_dir), Path(tokenizer_dir)
        self.work_dir = Path(work_dir) if work_dir else None
        index = TokenIndex.load(tokens_dir)
        absent = sorted(set(searched_domains(cfg)) - set(index.domains("train")))
        if absent:
            raise ValueError(f"tune.weights names domain(s) {absent} absent from {tokens_dir}; "
                             f"available: {', '.join(index.domains('train'))}")
        self.vocab_size, self.special_ids = vocab_and_special_ids(index, tokenizer_dir)

    def __call__(self, weights: dict[str, float], lr: float) -> dict[str, Any]:
        from lmpipe.documents import iter_documents
        from lmpipe.evaluation.heldout import heldout_metrics
        from lmpipe.evaluation.lm import LM
        from lmpipe.training.data import mixture_samplers
        from lmpipe.training.trainer import train

        cfg, targets = self.cfg, set(self.cfg.targets)
        callbacks = []
        trial = CURRENT_TRIAL.get()
        if cfg.pruning.enabled and trial is not None:
            from lmpipe.pruning import ReportTargetLoss, target_batches

            batches = target_batches(self.tokens_dir, cfg.targets, cfg.seq_len, cfg.batch_size,
                                     cfg.pruning.val_batches, self.seed)
            callbacks.append(ReportTargetLoss(trial, batches, cfg.pruning.every))
        if self.work_dir:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="trial-", dir=self.work_dir))
        try:
            mixture = MixtureConfig(weights={d: w for d, w in weights.items() if w > 0})
            stats = train(
                self.model,
                trial_train_config(cfg, lr),
                mixture_samplers(self.tokens_dir, mixture, cfg.seq_len, self.seed),
                vocab_size=self.vocab_size,
                ckpt_dir=scratch / "ckpt",
                log_dir=None,
                export_dir=scratch / "model",
                tokenizer_dir=self.tokenizer_dir,
                special_ids=self.special_ids,
                seed=self.seed,
                progress=False,
                callbacks=callbacks,
            )
            lm = LM.load(scratch / "model", seq_len=cfg.heldout.seq_len)
            docs = (d for d in iter_documents(self.heldout_dir) if d.domain in targets)
            scores = heldout_metrics(lm, docs, cfg.heldout, cfg.batch_tokens)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        missing = sorted(targets - set(scores))
        if missing:
            raise ValueError(f"target domain(s) {missing} have no held-out documents in {self.heldout_dir}")
        bpb = {d: float(scores[d]["bits_per_byte"]) for d in sorted(targets)}
        return {"value": sum(bpb.values()) / len(bpb), "bpb": bpb,
                "train_loss": stats["train_loss"], "val_loss": stats["val_loss"]}


# ------------------------------------------------------------------------------------------ study
def make_storage(url: str, heartbeat_s: int | None = None) -> optuna.storages.BaseStorage:
    """RDB storage for ``url``; a SQLite file's folder is created. With a heartbeat, a trial whose worker died
    (kill -9, lost node) turns FAIL after 2 missed beats and its params are queued again once."""
    kw: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        kw["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # the heartbeat thread writes too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if heartbeat_s:
            kw |= {"heartbeat_interval": heartbeat_s, "grace_period": 2 * heartbeat_s}
            if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
                kw["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
            else:
                kw["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=1)
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(url, **kw)
            except Exception as err:  # noqa: BLE001 - sqlalchemy's IntegrityError/ProgrammingError, retried below
                # workers starting together on an empty server race to create the schema: the loser sees
                # "already exists"; by the next attempt the tables are there and it just connects
                if attempt == 4 or "already exists" not in str(err):
                    raise
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")


def count(study: optuna.Study, state: optuna.trial.TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=(state,)))


def claimed(study: optuna.Study, number: int) -> int:
    """COMPLETE trials plus RUNNING ones numbered below ``number``: the earliest claims win a shared study."""
    states = optuna.trial.TrialState
    return sum(t.state == states.COMPLETE or (t.state == states.RUNNING and t.number < number)
               for t in study.get_trials(deepcopy=False, states=(states.COMPLETE, states.RUNNING)))


def trial_function(cfg: TuneConfig, objective: ObjectiveFn, limit: int | None = None,
                   sampler: Callable[[int], optuna.samplers.BaseSampler] | None = None
                   ) -> Callable[[optuna.Trial], float]:
    """The Optuna objective: draw (or take the enqueued) weights, run ``objective``, keep its extras as attrs.
    ``limit``: a trial that would exceed this many claimed trials (another worker got there first) stops
    before training, PRUNED with user attr ``surplus``, so concurrent workers finish with exactly ``limit``.
    ``sampler``: built from the trial's number before it draws, so two workers that ask at once (same history
    length) still draw different points, and one worker draws what it always did (number = history length)."""

    def wrapped(trial: optuna.Trial) -> float:
        if limit is not None and claimed(trial.study, trial.number) >= limit:
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("the study already has enough complete or running trials")
        if sampler is not None:
            trial.study.sampler = sampler(trial.number)
        weights, lr = suggest(trial, cfg)
        for d, w in weights.items():
            trial.set_user_attr(f"weight_{d}", round(w, 6))
        token = CURRENT_TRIAL.set(trial)
        try:
            result = objective(weights, lr)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
            raise
        finally:
            CURRENT_TRIAL.reset(token)
        for k, v in result.items():
            if k != "value":
                trial.set_user_attr(k, v)
        value = float(result["value"])
        if not math.isfinite(value):
            raise ValueError(f"objective is not finite: {value}")
        return value

    return wrapped


def optimize_one(study: optuna.Study, fn: Callable[[optuna.Trial], float], cfg: TuneConfig, failed: int) -> int:
    """Run one trial; returns the failures so far, raising once they exceed ``cfg.max_failed``."""
    study.optimize(fn, n_trials=1, catch=(Exception,))
    last = study.get_trials(deepcopy=False)[-1]
    if last.state == optuna.trial.TrialState.FAIL:
        failed += 1
        log.warning("trial %d failed: %s", last.number, last.user_attrs.get("error", "?"))
        if failed > cfg.max_failed:
            raise RuntimeError(f"{failed} trials failed in this run (tune.max_failed={cfg.max_failed}); "
                               f"last: {last.user_attrs.get('error', '?')}")
    return failed


def run_study(
    cfg: TuneConfig,
    objective: ObjectiveFn,
    *,
    seed: int,
    study_name: str | None = None,
    baseline: dict[str, float] | None = None,
    storage: optuna.storages.BaseStorage | str | None = None,
) -> optuna.Study:
    """Add trials to the study until it holds ``cfg.n_trials`` COMPLETE ones (a rerun resumes where it stopped).

    ``baseline``: raw params queued as the study's very first trial (e.g. the current mixture).
    Raises after more than ``cfg.max_failed`` failed trials in this call, with the last error.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage if storage is not None else make_storage(cfg.storage, cfg.heartbeat_s)
    name = study_name or cfg.study_name

    from lmpipe.pruning import make_pruner

    # concurrent workers need the heartbeat: without it a dead worker's RUNNING trial would hold its slot forever
    shared = cfg.heartbeat_s is not None
    def tpe(offset: int) -> optuna.samplers.TPESampler:
        return optuna.samplers.TPESampler(seed=seed + offset, n_startup_trials=cfg.n_startup_trials)

    wrapped = trial_function(cfg, objective, limit=cfg.n_trials if shared else None, sampler=tpe)
    failed = 0
    while True:
        study = optuna.create_study(
            storage=storage, study_name=name, direction="minimize", load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.n_startup_trials),
            pruner=make_pruner(cfg.pruning),
        )
        trials = study.get_trials(deepcopy=False)
        if not trials and baseline is not None:
            study.enqueue_trial(baseline, user_attrs={"baseline": True})
        if count(study, optuna.trial.TrialState.COMPLETE) >= cfg.n_trials:
            return study
        if shared:
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial frees its slot (and is retried)
            if claimed(study, math.inf) >= cfg.n_trials:  # the rest is running elsewhere: wait for it
                time.sleep(min(cfg.heartbeat_s, 2))
                continue
        # seed from the history length: a resumed study draws what an uninterrupted one would have
        study.sampler = tpe(len(trials))
        failed = optimize_one(study, wrapped, cfg, failed)


# ------------------------------------------------------------------------------------------ outputs
def summary(study: optuna.Study) -> dict[str, Any]:
    """Metrics for ``metrics/tune.json``: best trial (raw params, normalised weights), baseline, state counts."""
    states = optuna.trial.TrialState
    out: dict[str, Any] = {
        "study_name": study.study_name,
        "trials": {s.name.lower(): count(study, s) for s in (states.COMPLETE, states.PRUNED, states.FAIL, states.RUNNING)},
    }
    done = study.get_trials(deepcopy=False, states=(states.COMPLETE,))
    if not done:
        return out
    best = study.best_trial
    out |= {
        "best_value": best.value,
        "best_trial": best.number,
        "best_params": dict(best.params),
        "best_weights": {d: round(w, 6) for d, w in weights_of(best).items()},
        "best_bpb": best.user_attrs.get("bpb"),
    }
    base = [t for t in done if t.user_attrs.get("baseline")]
    if base:
        out["baseline_value"] = base[0].value
        out["improvement"] = base[0].value - best.value
    return out


def best_mixture(study: optuna.Study, cfg: TuneConfig) -> tuple[dict[str, Any], str]:
    """The best trial as a params.yaml fragment and the ``dvc exp run -S ...`` line that applies it."""
    best = study.best_trial
    weights = {d: round(w, 4) for d, w in weights_of(best).items()}
    # every domain of the search space is set, zeros included, so no stale weight survives the override
    weights |= {d: 0.0 for d in cfg.weights if d not in weights}
    frag: dict[str, Any] = {"mixture": {"weights": dict(sorted(weights.items()))}}
    sets = [f"-S mixture.weights.{d}={w}" for d, w in sorted(weights.items())]
    if "lr" in best.params:
        frag["train"] = {"lr": float(f"{best.params['lr']:.3g}")}
        sets.append(f"-S train.lr={frag['train']['lr']}")
    return frag, "dvc exp run " + " ".join(sets)


def write_outputs(study: optuna.Study, cfg: TuneConfig, out_dir: str | Path, plots_dir: str | Path) -> dict[str, Any]:
    """trials.csv + best_mixture.yaml in ``out_dir``, PNG plots in ``plots_dir``; returns the summary."""
    import yaml

    out_dir, plots_dir = Path(out_dir), Path(plots_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs", "duration")).to_csv(
        out_dir / "trials.csv", index=False)
    stats = summary(study)
    if "best_value" in stats:
        frag, cmd = best_mixture(study, cfg)
        header = (f"# best of study {study.study_name!r}: trial {stats['best_trial']}, mean bits/byte "
                  f"{stats['best_value']:.4f}\n# pretrain trains on it when mixture.from_tune is true; else apply with:\n"
                  f"#   {cmd}\n")
        (out_dir / "best_mixture.yaml").write_text(header + yaml.safe_dump(frag, sort_keys=True))
        stats["apply"] = cmd
        from lmpipe.tuneplots import plot_study

        stats["plots"] = plot_study(study, plots_dir)
    return stats


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``tune``: the Optuna study over mixture weights (resumed if its storage holds it); best → ``io.out``."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # per-trial Trainer banners drown the log
    cfg = p.tune
    seed = cfg.seed if cfg.seed is not None else p.run.seed
    name = f"{cfg.study_name}-{study_fingerprint(cfg, p.model, seed, data_fingerprint(io.tokens, io.heldout))}"
    if cfg.method == "pareto":  # two objectives: its own study, front and winner
        from lmpipe.mixing.pareto import run_stage

        return run_stage(p, io, cfg, name, seed)
    objective = MixtureObjective(cfg, p.model, io.tokens, io.heldout, io.tokenizer, seed)
    baseline = current_params(cfg, p.mixture) if cfg.enqueue_current else None
    storage = make_storage(cfg.storage, cfg.heartbeat_s)
    extra: dict[str, Any] = {"method": cfg.method}
    if cfg.method == "surrogate":
        from lmpipe.surrogate import run_surrogate

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize", load_if_exists=True,
                                    sampler=optuna.samplers.RandomSampler(seed=seed))  # every trial is enqueued
        extra["surrogate"] = run_surrogate(cfg, objective, study, seed=seed)
    else:
        study = run_study(cfg, objective, seed=seed, study_name=name, baseline=baseline, storage=storage)
    stats = write_outputs(study, cfg, io.out, io.plots) | extra
    stats["inspect"] = f"optuna trials --storage {cfg.storage} --study-name {name}"
    return stats
