"""Plots of a mixture study (Agg PNGs): optimisation history, parameter importances, weight vs objective."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna

from lmpipe.tuning import weights_of

log = logging.getLogger(__name__)


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

    # optuna's matplotlib plots call plt.style.use("ggplot"), a process-wide change: rc_context undoes it, so
    # figures drawn later in the same process (the run report) keep the default colours
    with warnings.catch_warnings(), matplotlib.rc_context():
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
