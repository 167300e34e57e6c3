"""RegMix-style mixture search: proxy runs on random mixtures, a regressor over the weights, its argmin checked.

1. ``surrogate.n_runs`` mixtures are drawn from Dirichlet(``alpha``) over the searched domains (seeded, so the
   same list every run) and each is scored by the tune objective (:class:`lmpipe.tuning.MixtureObjective`: a
   short proxy training run → held-out bits/byte). Each run is one Optuna trial with enqueued params in the
   study's RDB storage, tagged with its draw index: a killed search resumes and reruns only what did not finish.
2. A gradient-boosted regressor (scikit-learn) learns weights → value. Its quality is measured first on
   held-out proxy runs (the last ``holdout`` share of the draws, fitted on the rest): Spearman rank correlation
   of predicted vs real values, since the search only needs the order right. Then it is refitted on all runs.
3. ``candidates`` uniform points of the simplex are scored on the surrogate; the mean of the ``top_k`` best
   (RegMix averages them: one point is noisy on a piecewise-constant model) is the proposal.
4. The proposal is trained and scored for real (one more trial, tagged ``validate``): the study's best trial
   (proxy runs and validation together) is the winner that ``best_mixture.yaml`` records.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna

from lmpipe.mixing.config import TuneConfig
from lmpipe.tuning import (
    WEIGHT_PREFIX,
    ObjectiveFn,
    optimize_one,
    searched_domains,
    trial_function,
    weights_of,
)

POINT = "surrogate_point"  # user attr of a trial: the index of its Dirichlet draw, or VALIDATE
VALIDATE = "validate"


def dirichlet_points(domains: list[str], n: int, alpha: float, seed: int) -> np.ndarray:
    """``n`` mixtures (rows sum to 1, columns in ``domains`` order), a pure function of the arguments."""
    return np.random.default_rng(seed).dirichlet([alpha] * len(domains), size=n)


def check_space(cfg: TuneConfig) -> list[str]:
    """The surrogate draws whole simplex points: each searched domain's raw range must admit [0, 1]."""
    domains = searched_domains(cfg)
    narrow = {d: cfg.weights[d] for d in domains if cfg.weights[d][0] > 0 or cfg.weights[d][1] < 1}
    if narrow:
        raise ValueError(f"tune.method=surrogate needs raw ranges [0, >=1] for searched domains; got {narrow} "
                         "(use [0, 0] to leave a domain out, or method tpe for bounded ranges)")
    if isinstance(cfg.lr, tuple):
        raise ValueError("tune.method=surrogate searches weights only: set tune.lr to a number")
    return domains


def run_points(study: optuna.Study, cfg: TuneConfig, objective: ObjectiveFn, points: dict[str, np.ndarray],
               domains: list[str]) -> None:
    """Score each named point once as a trial; points already COMPLETE (or still queued) are not queued again."""
    fn, failed = trial_function(cfg, objective), 0
    for key, w in points.items():
        states = {t.user_attrs.get(POINT): t.state for t in study.get_trials(deepcopy=False)
                  if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING)}
        if states.get(key) == optuna.trial.TrialState.COMPLETE:
            continue
        if key not in states:
            study.enqueue_trial({WEIGHT_PREFIX + d: float(v) for d, v in zip(domains, w, strict=True)},
                                user_attrs={POINT: key})
        while True:  # retry a failed point (up to max_failed in all): the fit needs every draw
            failed = optimize_one(study, fn, cfg, failed)
            last = study.get_trials(deepcopy=False)[-1]
            if last.state == optuna.trial.TrialState.COMPLETE:
                break
            study.enqueue_trial(last.params, user_attrs={POINT: key})


def points_and_values(study: optuna.Study, domains: list[str], keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    done = {t.user_attrs.get(POINT): t for t in study.get_trials(deepcopy=False,
                                                                  states=(optuna.trial.TrialState.COMPLETE,))}
    rows = [weights_of(done[k]) for k in keys]
    return np.array([[r.get(d, 0.0) for d in domains] for r in rows]), np.array([done[k].value for k in keys])


def fit(x: np.ndarray, y: np.ndarray, cfg: TuneConfig, seed: int) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor

    s = cfg.surrogate
    model = GradientBoostingRegressor(n_estimators=s.n_estimators, max_depth=s.max_depth,
                                      learning_rate=s.learning_rate, random_state=seed)
    return model.fit(x, y)


def rank_correlation(x: np.ndarray, y: np.ndarray, cfg: TuneConfig, seed: int) -> tuple[float, int]:
    """Spearman's rho on the last ``holdout`` share of the runs, for a model fitted on the others."""
    from scipy.stats import spearmanr

    n_test = max(2, round(len(y) * cfg.surrogate.holdout))
    if len(y) - n_test < 2:
        raise ValueError(f"surrogate.n_runs={len(y)} leaves too few runs to fit after holding out {n_test}")
    model = fit(x[:-n_test], y[:-n_test], cfg, seed)
    rho = spearmanr(model.predict(x[-n_test:]), y[-n_test:]).statistic
    return (float(rho) if np.isfinite(rho) else 0.0), n_test


def propose(model: Any, n_domains: int, cfg: TuneConfig, seed: int) -> tuple[np.ndarray, float]:
    """The mean of the surrogate's ``top_k`` best uniform simplex points, and the surrogate's value there."""
    cand = dirichlet_points(list(range(n_domains)), cfg.surrogate.candidates, 1.0, seed)
    pred = model.predict(cand)
    best = cand[np.argsort(pred, kind="stable")[: cfg.surrogate.top_k]].mean(axis=0)
    best = best / best.sum()
    return best, float(model.predict(best[None, :])[0])


def run_surrogate(cfg: TuneConfig, objective: ObjectiveFn, study: optuna.Study, *, seed: int) -> dict[str, Any]:
    """Steps 1-4 of the module docstring on ``study`` (resumable); returns the surrogate's figures."""
    domains = check_space(cfg)
    draws = dirichlet_points(domains, cfg.surrogate.n_runs, cfg.surrogate.alpha, seed)
    keys = [str(i) for i in range(len(draws))]
    run_points(study, cfg, objective, dict(zip(keys, draws, strict=True)), domains)
    x, y = points_and_values(study, domains, keys)
    rho, n_test = rank_correlation(x, y, cfg, seed)
    best, predicted = propose(fit(x, y, cfg, seed), len(domains), cfg, seed + 1)
    run_points(study, cfg, objective, {VALIDATE: best}, domains)
    validated = points_and_values(study, domains, [VALIDATE])[1][0]
    return {
        "proxy_runs": len(keys),
        "heldout_runs": n_test,
        "spearman_heldout": round(rho, 4),
        "proposed_weights": {d: round(float(w), 6) for d, w in zip(domains, best, strict=True)},
        "predicted_value": predicted,
        "validated_value": float(validated),
        "best_proxy_value": float(y.min()),
    }
