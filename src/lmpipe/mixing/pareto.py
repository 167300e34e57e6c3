"""Multi-objective mixture search: the new (target) domains' loss against the old domains' loss.

Continual training trades one for the other, so there is no single best mixture but a Pareto front. The study
has two "minimize" directions and Optuna's multi-objective TPE (``TPESampler``) or NSGA-II (``NSGAIISampler``)
proposes weights over the same search space as the single-objective study (:func:`lmpipe.tuning.suggest`).
Like :func:`lmpipe.tuning.run_study` it resumes: trials are added until ``n_trials`` are COMPLETE, and the sampler
is re-seeded from the history length before each trial, so a resumed study proposes what an uninterrupted one
would. The front is plotted; the mixture written to ``best_mixture.yaml`` is the front's *balanced* point
(the lowest mean of the two objectives, both bits/byte); the whole front is in ``pareto_front.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from lmpipe.mixing.config import TuneConfig
from lmpipe.tuning import CURRENT_TRIAL, make_storage, suggest, weights_of

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO

ObjectivesFn = Callable[[dict[str, float], float], dict[str, Any]]  # -> {"values": (target, old), ...}
NAMES = ("target_bpb", "old_bpb")


def make_sampler(cfg: TuneConfig, seed: int) -> optuna.samplers.BaseSampler:
    if cfg.pareto.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=cfg.pareto.population)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.n_startup_trials)


def run_pareto(
    cfg: TuneConfig,
    objective: ObjectivesFn,
    *,
    seed: int,
    study_name: str | None = None,
    storage: optuna.storages.BaseStorage | str | None = None,
) -> optuna.Study:
    """Add trials until the two-objective study holds ``cfg.n_trials`` COMPLETE ones (resumable)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage if storage is not None else make_storage(cfg.storage, cfg.heartbeat_s)

    def trial_fn(trial: optuna.Trial) -> tuple[float, float]:
        weights, lr = suggest(trial, cfg)
        for d, w in weights.items():
            trial.set_user_attr(f"weight_{d}", round(w, 6))
        token = CURRENT_TRIAL.set(trial)
        try:
            result = objective(weights, lr)
        finally:
            CURRENT_TRIAL.reset(token)
        for k, v in result.items():
            if k != "values":
                trial.set_user_attr(k, v)
        values = tuple(float(v) for v in result["values"])
        if len(values) != 2 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"expected two finite objective values, got {result['values']!r}")
        return values  # type: ignore[return-value]

    failed = 0
    while True:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name or cfg.study_name,
            directions=["minimize", "minimize"],
            load_if_exists=True,
            sampler=make_sampler(cfg, seed),
        )
        trials = study.get_trials(deepcopy=False)
        if sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) >= cfg.n_trials:
            return study
        study.sampler = make_sampler(cfg, seed + len(trials))
        study.optimize(trial_fn, n_trials=1, catch=(Exception,))
        if study.get_trials(deepcopy=False)[-1].state == optuna.trial.TrialState.FAIL:
            failed += 1
            if failed > cfg.max_failed:
                raise RuntimeError(f"{failed} trials failed in this run (tune.max_failed={cfg.max_failed})")


def front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The non-dominated COMPLETE trials, by the first objective."""
    return sorted(study.best_trials, key=lambda t: (t.values[0], t.values[1], t.number))


def balanced(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The front point with the lowest mean of the two objectives (ties: the lower trial number)."""
    return min(front(study), key=lambda t: (sum(t.values) / 2, t.number))


def plot_front(study: optuna.Study, path: str | Path, names: tuple[str, str] = NAMES) -> str:
    """Every complete trial (grey), the Pareto front (a staircase) and the balanced point (starred)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    best, pick = front(study), balanced(study)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([t.values[0] for t in done], [t.values[1] for t in done], s=14, color="0.6", label="trials")
    ax.step([t.values[0] for t in best], [t.values[1] for t in best], where="post", color="tab:red")
    ax.scatter(
        [t.values[0] for t in best], [t.values[1] for t in best], s=22, color="tab:red", label="Pareto front"
    )
    ax.scatter([pick.values[0]], [pick.values[1]], marker="*", s=160, color="tab:blue", label="balanced")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def two_objectives(
    base: Callable[[dict[str, float], float], dict[str, Any]], targets: list[str], old: list[str]
) -> ObjectivesFn:
    """Split a tune objective scoring ``targets + old`` (its ``bpb`` per domain) into the two means."""

    def fn(weights: dict[str, float], lr: float) -> dict[str, Any]:
        res = base(weights, lr)
        bpb = res["bpb"]
        return {
            "values": (sum(bpb[d] for d in targets) / len(targets), sum(bpb[d] for d in old) / len(old)),
            "bpb": bpb,
        }

    return fn


def run_stage(p: Params, io: StageIO, cfg: TuneConfig, name: str, seed: int) -> dict[str, Any]:
    """``tune.method: pareto`` inside the tune stage: the study, the front (CSV + plot), the balanced winner."""
    import yaml

    from lmpipe.tuning import MixtureObjective

    overlap = sorted(set(cfg.targets) & set(cfg.pareto.old))
    if overlap:
        raise ValueError(f"tune.pareto.old and tune.targets share {overlap}: the two objectives must differ")
    scoring = cfg.model_copy(update={"targets": [*cfg.targets, *cfg.pareto.old]})
    base = MixtureObjective(scoring, p.model, io.tokens, io.heldout, io.tokenizer, seed)
    study = run_pareto(
        cfg,
        two_objectives(base, cfg.targets, cfg.pareto.old),
        seed=seed,
        study_name=name,
        storage=make_storage(cfg.storage, cfg.heartbeat_s),
    )
    out = Path(io.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "trial": t.number,
            NAMES[0]: t.values[0],
            NAMES[1]: t.values[1],
            **{f"w_{d}": w for d, w in weights_of(t).items()},
        }
        for t in front(study)
    ]
    import csv

    with (out / "pareto_front.csv").open("w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=sorted({k for r in rows for k in r}, key=lambda k: (k[:2] == "w_", k))
        )
        writer.writeheader()
        writer.writerows(rows)
    pick = balanced(study)
    weights = {d: round(w, 4) for d, w in weights_of(pick).items()} | {
        d: 0.0 for d in cfg.weights if d not in weights_of(pick)
    }
    header = (
        f"# balanced point of the Pareto front of study {study.study_name!r} (trial {pick.number}): "
        f"{NAMES[0]} {pick.values[0]:.4f}, {NAMES[1]} {pick.values[1]:.4f}\n"
    )
    frag = {"mixture": {"weights": dict(sorted(weights.items()))}}
    (out / "best_mixture.yaml").write_text(header + yaml.safe_dump(frag, sort_keys=True))
    return {
        "method": "pareto",
        "study_name": study.study_name,
        "front_size": len(rows),
        "trials": len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))),
        "balanced_trial": pick.number,
        "balanced_values": dict(zip(NAMES, pick.values, strict=True)),
        "best_weights": weights,
        "plot": plot_front(study, Path(io.plots) / "pareto.png"),
        "inspect": f"optuna-dashboard {cfg.storage}",
    }
