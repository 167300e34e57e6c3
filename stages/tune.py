"""Stage `tune`: Optuna search over the mixture weights (and optionally the LR) by short training runs.

Runs until the study holds ``tune.n_trials`` COMPLETE trials; a killed run resumes from the study database
(``tune.storage``; a Postgres/MySQL URL lets several workers share one study: run this command on each).
Writes ``--out``/trials.csv and ``--out``/best_mixture.yaml (with the ``dvc exp run -S ...`` line that applies
it), plots under ``--plots`` and ``metrics/tune.json``. Inspect the study with
``optuna trials --storage sqlite:///data/tune/optuna.db --study-name <metrics study_name>`` or
``optuna-dashboard sqlite:///data/tune/optuna.db`` (if installed).
"""

from __future__ import annotations

import logging

import typer

from lmpipe.config import load_params
from lmpipe.stage import Timer, write_metrics


def main(
    tokens: str = typer.Option("data/tokens", help="token directory with index.json (tokenize stage)"),
    heldout: str = typer.Option("data/heldout/docs", help="held-out documents scored per domain"),
    tokenizer: str = typer.Option("models/tokenizer", help="HF tokenizer dir (tokenize stage)"),
    out: str = typer.Option("data/tune", help="output: trials.csv, best_mixture.yaml (and the default SQLite DB)"),
    plots: str = typer.Option("plots/tune", help="output: PNG plots"),
    storage: str = typer.Option(None, help="override tune.storage (any Optuna RDB URL)"),
    params: str = typer.Option("params.yaml", help="params file"),
    metrics: str = typer.Option("metrics/tune.json", help="DVC metrics file"),
) -> None:
    p = load_params(params)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # per-trial Trainer banners drown the log
    from lmpipe.tuning import (
        MixtureObjective,
        current_params,
        data_fingerprint,
        make_storage,
        run_study,
        study_fingerprint,
        write_outputs,
    )

    cfg = p.tune.model_copy(update={"storage": storage}) if storage else p.tune
    seed = cfg.seed if cfg.seed is not None else p.run.seed
    name = f"{cfg.study_name}-{study_fingerprint(cfg, p.model, seed, data_fingerprint(tokens, heldout))}"
    objective = MixtureObjective(cfg, p.model, tokens, heldout, tokenizer, seed)  # trial models: system temp dir
    baseline = current_params(cfg, p.mixture) if cfg.enqueue_current else None
    with Timer() as t:
        study = run_study(cfg, objective, seed=seed, study_name=name, baseline=baseline,
                          storage=make_storage(cfg.storage, cfg.heartbeat_s))
    stats = write_outputs(study, cfg, out, plots)
    stats["inspect"] = f"optuna trials --storage {cfg.storage} --study-name {name}"
    write_metrics(metrics, stats, t.seconds)
    typer.echo(f"tune: study {name}: {stats['trials']} best={stats.get('best_value', float('nan')):.4f} "
               f"weights={stats.get('best_weights')}\n  apply: {stats.get('apply')}")


if __name__ == "__main__":
    typer.run(main)
