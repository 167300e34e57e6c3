"""Multi-objective mixture search on a synthetic two-objective problem whose Pareto front is known in closed form.

Weights w on the simplex over (a, b, c); f1 = |w - e_a|^2, f2 = |w - e_b|^2. Projecting w onto the line through
e_a and e_b, (a + c/2, b + c/2, 0), shortens both distances by the same c-dependent amount, so the Pareto set is
the edge c = 0 and the front is f1 = 2 (1 - a)^2, f2 = 2 a^2, i.e. sqrt(f1 / 2) + sqrt(f2 / 2) = 1; every
dominated point has a sum above 1.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from lmpipe.mixing.config import TuneConfig
from lmpipe.mixing.pareto import balanced, front, plot_front, run_pareto
from tests.test_tuning import tiny_corpus  # noqa: F401 - the shared module fixture


def objective(w: dict[str, float], lr: float) -> dict:
    a, b, c = w["a"], w["b"], w["c"]
    return {"values": ((1 - a) ** 2 + b**2 + c**2, a**2 + (1 - b) ** 2 + c**2)}


def gap(values: tuple[float, float]) -> float:
    """Distance above the true front in the sqrt-scaled sum (0 on the front)."""
    return math.sqrt(values[0] / 2) + math.sqrt(values[1] / 2) - 1


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_front_matches_the_known_one(tmp_path: Path, sampler: str) -> None:
    cfg = TuneConfig(
        storage=f"sqlite:///{tmp_path / 'o.db'}",
        n_trials=80,
        n_startup_trials=10,
        heartbeat_s=None,
        weights={"a": (0.0, 1.0), "b": (0.0, 1.0), "c": (0.0, 1.0)},
        targets=["a"],
        pareto={"old": ["b"], "sampler": sampler, "population": 10},
    )
    storage = optuna.storages.InMemoryStorage()  # the RDB path is the single-objective study's (test_tuning)
    study = run_pareto(cfg, objective, seed=0, storage=storage)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 80
    pts = front(study)
    # the front found lies close to the true one and spans it from end to end
    assert max(gap(t.values) for t in pts) < 0.15
    assert sum(gap(t.values) for t in pts) / len(pts) < 0.05
    assert min(t.values[0] for t in pts) < 0.15 and min(t.values[1] for t in pts) < 0.15
    # its members are not dominated by any trial (independently of Optuna's bookkeeping)
    for t in pts:
        assert not any(
            u.values[0] <= t.values[0] and u.values[1] <= t.values[1] and u.values != t.values for u in done
        )
    # the search does better than its own random start: later trials sit closer to the front
    first, last = [gap(t.values) for t in done[:10]], [gap(t.values) for t in done[-20:]]
    assert sorted(last)[10] < sorted(first)[5]
    pick = balanced(study)
    assert pick in pts and gap(pick.values) < 0.15
    assert Path(plot_front(study, tmp_path / "p.png")).stat().st_size > 1000
    # resumable: asking for more continues the same study
    more = run_pareto(cfg.model_copy(update={"n_trials": 82}), objective, seed=0, storage=storage)
    assert len(more.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 82
    assert [t.params for t in more.get_trials()[:80]] == [t.params for t in done]


def test_tune_stage_pareto_method_writes_front_and_winner(tiny_corpus: Path, tmp_path: Path) -> None:  # noqa: F811
    """The tune stage with method pareto on real proxy runs: the front CSV, its plot, and the balanced winner as
    best_mixture.yaml (what pretrain reads with mixture.from_tune)."""
    import csv

    import yaml

    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.tuning import run

    p = Params.model_validate(
        {
            "ingest": {"sources": [{"uri": "x", "domain": "x"}]},
            "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 64},
            "tune": {
                "method": "pareto",
                "storage": f"sqlite:///{tmp_path / 'o.db'}",
                "heartbeat_s": None,
                "n_trials": 4,
                "n_startup_trials": 2,
                "weights": {"alpha": [0, 1], "beta": [0, 1]},
                "targets": ["alpha"],
                "pareto": {"old": ["beta"]},
                "steps": 8,
                "batch_size": 4,
                "seq_len": 32,
                "warmup_steps": 2,
                "lr": 1e-2,
                "heldout": {"max_docs_per_domain": 4, "max_tokens_per_domain": 800},
            },
        }
    )
    io = StageIO(
        "tune",
        {
            "tokens": str(tiny_corpus / "tokens"),
            "heldout": str(tiny_corpus / "heldout"),
            "tokenizer": str(tiny_corpus / "tokenizer"),
            "out": str(tmp_path / "tune"),
            "plots": str(tmp_path / "plots"),
        },
    )
    stats = run(p, io, None)
    assert stats["method"] == "pareto" and stats["trials"] == 4 and 1 <= stats["front_size"] <= 4
    rows = list(csv.DictReader((tmp_path / "tune" / "pareto_front.csv").open()))
    assert len(rows) == stats["front_size"]
    pairs = [(float(r["target_bpb"]), float(r["old_bpb"])) for r in rows]
    for a in pairs:  # no front row dominates another
        assert not any(b[0] <= a[0] and b[1] <= a[1] and b != a for b in pairs)
    pick = min(pairs, key=lambda v: sum(v))
    assert stats["balanced_values"] == {"target_bpb": pick[0], "old_bpb": pick[1]}
    frag = yaml.safe_load((tmp_path / "tune" / "best_mixture.yaml").read_text())
    assert set(frag["mixture"]["weights"]) == {"alpha", "beta"}
    assert sum(frag["mixture"]["weights"].values()) == pytest.approx(1.0, abs=1e-3)
    assert (tmp_path / "plots" / "pareto.png").stat().st_size > 1000
