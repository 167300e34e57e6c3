"""Optuna search over the training mixture: many short training runs, one held-out number each.

Search space (``tune.weights``): one raw float per domain in its ``[low, high]`` range, divided by their sum,
so every proposal is a point on the simplex (ranges bound the raw values; ``[x, x]`` fixes a domain and
``[0, 0]`` leaves it out). Optionally the peak LR, log-uniform in ``tune.lr = [low, high]``.

Objective (:class:`MixtureObjective`): train the ``model`` section's architecture for ``tune.steps`` steps with
:func:`lmpipe.training.train` on that mixture (no logger, one checkpoint in a scratch dir), export it, and score
it with :func:`lmpipe.evaluation.heldout_metrics`: the value is the mean bits/byte over ``tune.targets``.
Training is seeded, so a trial's value is a function of its params, the seed and the data.

Study (:func:`run_study`): RDB storage (SQLite file by default; a Postgres/MySQL URL lets several workers share
one study), ``load_if_exists`` so a rerun continues, and trials are added until the study holds ``n_trials``
COMPLETE ones. The TPE sampler is re-seeded before each trial from ``seed + trials so far``, so an interrupted
and resumed study proposes the same trials an uninterrupted one would. The study name carries a fingerprint of
everything that defines the objective (data, model, steps, targets, ranges), so changing any of them starts a
fresh study in the same database instead of mixing incomparable values; old studies stay inspectable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from lmpipe.config import MixtureConfig, ModelConfig, ScheduleConfig, TrainConfig, TuneConfig

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.executors import Executor

WEIGHT_PREFIX = "w_"  # Optuna param name of a domain's raw weight
ObjectiveFn = Callable[[dict[str, float], float], dict[str, Any]]  # (normalised weights, lr) -> {"value", ...}
log = logging.getLogger(__name__)


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
        from lmpipe.training import vocab_and_special_ids

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
        from lmpipe.evaluation import LM, heldout_metrics
        from lmpipe.training import mixture_samplers, train

        cfg, targets = self.cfg, set(self.cfg.targets)
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
        return optuna.storages.RDBStorage(url, **kw)


def count(study: optuna.Study, state: optuna.trial.TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=(state,)))


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

    def wrapped(trial: optuna.Trial) -> float:
        weights, lr = suggest(trial, cfg)
        for d, w in weights.items():
            trial.set_user_attr(f"weight_{d}", round(w, 6))
        try:
            result = objective(weights, lr)
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
            raise
        for k, v in result.items():
            if k != "value":
                trial.set_user_attr(k, v)
        value = float(result["value"])
        if not math.isfinite(value):
            raise ValueError(f"objective is not finite: {value}")
        return value

    failed = 0
    while True:
        study = optuna.create_study(
            storage=storage, study_name=name, direction="minimize", load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.n_startup_trials),
        )
        trials = study.get_trials(deepcopy=False)
        if not trials and baseline is not None:
            study.enqueue_trial(baseline, user_attrs={"baseline": True})
        if count(study, optuna.trial.TrialState.COMPLETE) >= cfg.n_trials:
            return study
        # seed from the history length: a resumed study draws what an uninterrupted one would have
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(trials), n_startup_trials=cfg.n_startup_trials)
        study.optimize(wrapped, n_trials=1, catch=(Exception,))
        last = study.get_trials(deepcopy=False)[-1]
        if last.state == optuna.trial.TrialState.FAIL:
            failed += 1
            log.warning("trial %d failed: %s", last.number, last.user_attrs.get("error", "?"))
            if failed > cfg.max_failed:
                raise RuntimeError(f"{failed} trials failed in this run (tune.max_failed={cfg.max_failed}); "
                                   f"last: {last.user_attrs.get('error', '?')}")


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
                  f"{stats['best_value']:.4f}\n# apply with:\n#   {cmd}\n")
        (out_dir / "best_mixture.yaml").write_text(header + yaml.safe_dump(frag, sort_keys=True))
        stats["apply"] = cmd
        stats["plots"] = plot_study(study, plots_dir)
    return stats


def plot_study(study: optuna.Study, plots_dir: str | Path) -> list[str]:
    """optimisation history, parameter importances (when estimable) and weight-vs-objective scatter (Agg PNGs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(plots_dir / name, dpi=100)
        plt.close(fig)
        written.append(str(plots_dir / name))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        save(ovm.plot_optimization_history(study).figure, "history.png")
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        varying = {k for t in done for k in t.params if len({u.params.get(k) for u in done}) > 1}
        if len(done) >= 3 and len(varying) >= 2:
            try:
                save(ovm.plot_param_importances(study).figure, "importances.png")
            except (RuntimeError, ValueError) as err:  # too few distinct trials for the estimator
                log.info("no importance plot: %s", err)
    save(_weights_scatter(done, plt), "weights.png")
    return written


def _weights_scatter(trials: Iterable[optuna.trial.FrozenTrial], plt: Any) -> Any:
    """One panel per domain: normalised weight (x) against the objective (y); the best trial is starred."""
    trials = list(trials)
    domains = sorted({d for t in trials for d in weights_of(t)})
    fig, axes = plt.subplots(1, max(len(domains), 1), figsize=(3 * max(len(domains), 1), 3), sharey=True, squeeze=False)
    best = min(trials, key=lambda t: t.value) if trials else None
    for ax, d in zip(axes[0], domains, strict=False):
        ax.scatter([weights_of(t).get(d, 0.0) for t in trials], [t.value for t in trials], s=18)
        if best is not None:
            ax.scatter([weights_of(best).get(d, 0.0)], [best.value], marker="*", s=120, color="tab:red")
        ax.set_xlabel(f"weight {d}")
        ax.set_xlim(-0.02, 1.02)
    axes[0][0].set_ylabel("mean bits/byte (targets)")
    return fig


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``tune``: the Optuna study over mixture weights (resumed if its storage holds it); best → ``io.out``."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # per-trial Trainer banners drown the log
    cfg = p.tune
    seed = cfg.seed if cfg.seed is not None else p.run.seed
    name = f"{cfg.study_name}-{study_fingerprint(cfg, p.model, seed, data_fingerprint(io.tokens, io.heldout))}"
    objective = MixtureObjective(cfg, p.model, io.tokens, io.heldout, io.tokenizer, seed)
    baseline = current_params(cfg, p.mixture) if cfg.enqueue_current else None
    study = run_study(cfg, objective, seed=seed, study_name=name, baseline=baseline,
                      storage=make_storage(cfg.storage, cfg.heartbeat_s))
    stats = write_outputs(study, cfg, io.out, io.plots)
    stats["inspect"] = f"optuna trials --storage {cfg.storage} --study-name {name}"
    return stats
