"""The study plots leave the process's matplotlib style as they found it (the run report draws afterwards)."""

from __future__ import annotations

from pathlib import Path

import optuna


def test_study_plots_do_not_restyle_later_figures(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmpipe.tuneplots import plot_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (t.suggest_float("w_a", 0, 1) - 0.3) ** 2 + t.suggest_float("w_b", 0.1, 1), n_trials=5)
    before = dict(plt.rcParams)
    written = plot_study(study, tmp_path)
    assert {Path(w).name for w in written} >= {"history.png", "weights.png"}
    # optuna's plots switch to the ggplot style (C0 = #E24A33) inside; the default blue must survive them
    assert matplotlib.colors.to_hex(plt.rcParams["axes.prop_cycle"].by_key()["color"][0]) == "#1f77b4"
    assert dict(plt.rcParams) == before
