"""Mixture search: what TPE and the RegMix-style surrogate find with a third of the proxy runs, against a full grid.

Input: a generated three-domain corpus (arithmetic lines, word prose, key = value code-like lines), tokenized by
the project's tokenize path; the objective is the tune stage's (``lmpipe.tuning.MixtureObjective``: a tiny model
trained ``--steps`` steps on the mixture, mean held-out bits/byte over the two target domains, one fixed training
seed, so a mixture's value is a deterministic function of the mixture).

- ``grid`` (the peer: exhaustive search): every mixture of the simplex grid with step 1/``--grid-step``
  (21 points for 5): its best value is the reference.
- ``tpe``: Optuna TPE with a third of the grid's runs (7), ``lmpipe.tuning.run_study``.
- ``surrogate``: ``lmpipe.surrogate.run_surrogate`` with the same budget (6 Dirichlet proxy runs + 1 validation run).
- ``random``: Optuna's random sampler with the same budget (a second peer: search without a model).

Each repeat re-seeds the searches (sampler and Dirichlet draws); the grid is trained once (its runs do not depend
on a search seed). Figures: best value found (lower is better), gap to the grid's best in %, runs used, wall
seconds, and the surrogate's Spearman rank correlation between its predictions (fitted on its 6 proxy runs) and
the real values of all grid mixtures it never saw.

    python bench/mixture.py [--steps 20] [--grid-step 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402
from _common import REPEATS, stat, table, write_result  # noqa: E402

from lmpipe.documents import Document, ShardWriter, write_manifest  # noqa: E402
from lmpipe.executors import LocalExecutor  # noqa: E402
from lmpipe.mixing.config import TuneConfig  # noqa: E402
from lmpipe.tokenization_config import TokenizeConfig  # noqa: E402
from lmpipe.training.config import ModelConfig  # noqa: E402
from lmpipe.tuning import MixtureObjective, run_study, trial_function, weights_of  # noqa: E402

DOMAINS = ["alpha", "beta", "gamma"]
TARGETS = ["alpha", "beta"]
WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "under",
    "mat",
    "hill",
    "river",
    "slowly",
    "quickly",
    "green",
    "old",
    "small",
    "house",
]


def corpus(root: Path) -> Path:
    rng = random.Random(0)
    docs = []
    for i in range(60):
        arith = [f"{rng.randint(1, 99)} + {rng.randint(1, 99)} = {rng.randint(2, 198)}." for _ in range(12)]
        docs.append(Document(f"a{i}", "\n".join(arith), "alpha", "bench"))
        docs.append(Document(f"b{i}", " ".join(rng.choice(WORDS) for _ in range(80)) + ".", "beta", "bench"))
        code = [f"x{rng.randint(0, 9)} = y{rng.randint(0, 9)} * {rng.randint(1, 9)}" for _ in range(14)]
        docs.append(Document(f"g{i}", "\n".join(code), "gamma", "bench"))
    with ShardWriter(root / "docs", "part", docs_per_shard=1000) as w:
        w.write_all(docs)
    write_manifest(root / "docs", w.shards)
    from lmpipe.tokenization import tokenize_corpus

    tokenize_corpus(
        TokenizeConfig(vocab_size=320, val_fraction=0.2),
        root / "docs",
        root / "tokens",
        root / "tokenizer",
        root / "heldout",
        LocalExecutor(1),
    )
    return root


def grid_points(step: int) -> list[dict[str, float]]:
    pts = [c for c in itertools.product(range(step + 1), repeat=len(DOMAINS)) if sum(c) == step]
    return [{d: c[i] / step for i, d in enumerate(DOMAINS)} for c in pts]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per proxy run")
    ap.add_argument("--grid-step", type=int, default=5, help="simplex grid resolution (5: 21 mixtures)")
    ap.add_argument("--repeats", type=int, default=REPEATS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    tmp = Path(tempfile.mkdtemp(prefix="bench-mixture-"))
    root = corpus(tmp)
    cfg = TuneConfig(
        storage="sqlite:///unused.db",
        heartbeat_s=None,
        weights={d: (0.0, 1.0) for d in DOMAINS},
        targets=TARGETS,
        steps=args.steps,
        batch_size=4,
        seq_len=32,
        warmup_steps=3,
        lr=1e-2,
        heldout={"max_docs_per_domain": 6, "max_tokens_per_domain": 2000},
        enqueue_current=False,
    )
    model = ModelConfig(d_model=32, n_layers=1, n_heads=2, max_seq_len=64)
    objective = MixtureObjective(
        cfg, model, root / "tokens", root / "heldout", root / "tokenizer", seed=5, work_dir=tmp / "scratch"
    )

    t0 = time.perf_counter()
    grid = grid_points(args.grid_step)
    grid_values = [objective({d: w for d, w in g.items() if w > 0}, cfg.lr)["value"] for g in grid]
    grid_seconds = time.perf_counter() - t0
    grid_best = min(grid_values)
    budget = max(4, round(len(grid) / 3))
    print(
        f"grid: {len(grid)} runs in {grid_seconds:.0f} s, best {grid_best:.4f}; search budget {budget} runs"
    )

    from scipy.stats import spearmanr

    from lmpipe import surrogate

    res: dict[str, dict[str, list[float]]] = {
        m: {"best": [], "seconds": [], "runs": []} for m in ("tpe", "surrogate", "random")
    }
    rho: list[float] = []
    for rep in range(args.repeats):
        seed = 100 + rep
        t = time.perf_counter()
        study = run_study(
            cfg.model_copy(update={"n_trials": budget, "n_startup_trials": 2}),
            objective,
            seed=seed,
            study_name=f"tpe{rep}",
            storage=optuna.storages.InMemoryStorage(),
        )
        res["tpe"]["seconds"].append(time.perf_counter() - t)
        res["tpe"]["best"].append(study.best_value)
        res["tpe"]["runs"].append(len(study.trials))

        t = time.perf_counter()
        scfg = cfg.model_copy(update={"surrogate": cfg.surrogate.model_copy(update={"n_runs": budget - 1})})
        sstudy = optuna.create_study(
            storage=optuna.storages.InMemoryStorage(),
            direction="minimize",
            sampler=optuna.samplers.RandomSampler(seed=seed),
        )
        surrogate.run_surrogate(scfg, objective, sstudy, seed=seed)
        res["surrogate"]["seconds"].append(time.perf_counter() - t)
        res["surrogate"]["best"].append(sstudy.best_value)
        res["surrogate"]["runs"].append(len(sstudy.trials))
        done = [t for t in sstudy.trials if t.user_attrs.get(surrogate.POINT) != surrogate.VALIDATE]
        x = [[weights_of(t).get(d, 0.0) for d in DOMAINS] for t in done]
        fitted = surrogate.fit(np.array(x), np.array([t.value for t in done]), scfg, seed)
        pred = fitted.predict(np.array([[g[d] for d in DOMAINS] for g in grid]))
        rho.append(float(spearmanr(pred, grid_values).statistic))

        t = time.perf_counter()
        rstudy = optuna.create_study(
            storage=optuna.storages.InMemoryStorage(),
            direction="minimize",
            sampler=optuna.samplers.RandomSampler(seed=seed),
        )
        rstudy.optimize(trial_function(cfg, objective), n_trials=budget)
        res["random"]["seconds"].append(time.perf_counter() - t)
        res["random"]["best"].append(rstudy.best_value)
        res["random"]["runs"].append(len(rstudy.trials))
        print(
            f"repeat {rep}: "
            + ", ".join(f"{m} {v['best'][-1]:.4f}" for m, v in res.items())
            + f", rho {rho[-1]:.3f}"
        )

    gap = lambda v: 100 * (v - grid_best) / grid_best  # noqa: E731
    rows = {
        "grid": {
            "best_bpb": stat([grid_best] * args.repeats),
            "gap_pct": stat([0.0] * args.repeats),
            "runs": stat([len(grid)] * args.repeats, 0),
            "seconds": stat([grid_seconds] * args.repeats, 1),
        }
    }
    for m, v in res.items():
        rows[m] = {
            "best_bpb": stat(v["best"]),
            "gap_pct": stat([gap(b) for b in v["best"]], 2),
            "runs": stat(v["runs"], 0),
            "seconds": stat(v["seconds"], 1),
        }
    within = {m: sum(gap(b) <= 2.0 for b in res[m]["best"]) for m in res}
    write_result(
        "mixture",
        input={
            "domains": DOMAINS,
            "targets": TARGETS,
            "grid_points": len(grid),
            "search_budget_runs": budget,
            "proxy_steps": args.steps,
            "model": model.model_dump(include={"d_model", "n_layers", "n_heads"}),
            "docs_per_domain": 60,
            "objective": "mean held-out bits/byte over the targets",
        },
        tables=[
            table(
                "Best mixture found (mean held-out bits/byte of the targets)",
                "best_bpb",
                rows,
                ours=["tpe", "surrogate"],
                peers=["grid", "random"],
                higher_is_better=False,
                note=f"grid: all {len(grid)} mixtures; the others: {budget} proxy runs each",
            ),
            table(
                "Gap to the grid's best (%)",
                "gap_pct",
                {m: rows[m] for m in ("tpe", "surrogate", "random")},
                ours=["tpe", "surrogate"],
                peers=["random"],
                higher_is_better=False,
                note="target: within 2 %",
            ),
            table(
                "Wall seconds of the search",
                "seconds",
                rows,
                ours=["tpe", "surrogate"],
                peers=["grid", "random"],
                higher_is_better=False,
            ),
            table(
                "Surrogate rank correlation with the grid (Spearman)",
                "rho",
                {"surrogate": {"rho": stat(rho, 3)}},
                ours=["surrogate"],
                peers=[],
                note=f"fitted on its {budget - 1} proxy runs, scored on all {len(grid)} grid mixtures",
            ),
        ],
        checks={
            "grid_best": round(grid_best, 4),
            "grid_best_mixture": grid[grid_values.index(grid_best)],
            "repeats_within_2pct": within,
            "target_within_2pct": {m: within[m] == args.repeats for m in within},
        },
        repeats=args.repeats,
    )


if __name__ == "__main__":
    main()
