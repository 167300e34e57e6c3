"""Optuna mixture tuning: resumable studies, the search space, and a real (tiny) training objective."""

from __future__ import annotations

import random
from pathlib import Path

import optuna
import pytest
import torch

from lmpipe.documents import Document, ShardWriter, write_manifest
from lmpipe.executors import LocalExecutor
from lmpipe.mixing.config import MixtureConfig, TuneConfig
from lmpipe.tokenization import tokenize_corpus
from lmpipe.tokenization_config import TokenizeConfig
from lmpipe.training.config import ModelConfig
from lmpipe.tuning import MixtureObjective, current_params, run_study, write_outputs

torch.set_num_threads(1)
COMPLETE = optuna.trial.TrialState.COMPLETE


def tune_cfg(tmp: Path, **kw) -> TuneConfig:
    base = {"storage": f"sqlite:///{tmp / 'optuna.db'}", "study_name": "t", "n_trials": 3, "n_startup_trials": 2,
            "weights": {"alpha": (0.0, 1.0), "beta": (0.0, 1.0), "gamma": (0.0, 1.0)}, "targets": ["alpha"],
            "heartbeat_s": None}
    return TuneConfig(**(base | kw))


def quadratic(weights: dict[str, float], lr: float) -> dict:
    """Cheap stand-in objective with its minimum at alpha = 0.6, beta = 0.4, gamma = 0."""
    target = {"alpha": 0.6, "beta": 0.4, "gamma": 0.0}
    return {"value": sum((weights.get(d, 0.0) - t) ** 2 for d, t in target.items())}


def history(study: optuna.Study) -> list[tuple[int, dict, float]]:
    return [(t.number, t.params, t.value) for t in study.get_trials(states=(COMPLETE,))]


# ------------------------------------------------------------------------------------------ study
def test_resume_counts_complete_trials_and_keeps_the_first(tmp_path: Path) -> None:
    first = history(run_study(tune_cfg(tmp_path, n_trials=3), quadratic, seed=7))
    assert len(first) == 3
    resumed = run_study(tune_cfg(tmp_path, n_trials=5), quadratic, seed=7)
    assert len(resumed.get_trials(states=(COMPLETE,))) == 5
    assert history(resumed)[:3] == first
    # per-trial reseeding: the resumed study proposes exactly what one uninterrupted run of 5 proposes
    straight = run_study(tune_cfg(tmp_path / "straight", n_trials=5), quadratic, seed=7)
    assert history(straight) == history(resumed)
    # already complete: a rerun adds nothing
    again = run_study(tune_cfg(tmp_path, n_trials=5), quadratic, seed=7)
    assert len(again.get_trials()) == 5


KILLED_WORKER = """
import sys, time
from pathlib import Path
from lmpipe.mixing.config import TuneConfig
from lmpipe.tuning import run_study

tmp = Path(sys.argv[1])

def slow_third(weights, lr):
    if (tmp / "started").exists():
        (tmp / "hang").touch()
        time.sleep(600)  # killed here, mid-trial
    (tmp / "started").touch()
    return {"value": (weights["alpha"] - 0.6) ** 2}

cfg = TuneConfig(storage=f"sqlite:///{tmp / 'optuna.db'}", study_name="t", n_trials=3, heartbeat_s=1,
                 weights={"alpha": (0.0, 1.0), "beta": (0.0, 1.0)}, targets=["alpha"])
run_study(cfg, slow_third, seed=4)
"""


def test_kill_9_mid_trial_then_resume(tmp_path: Path) -> None:
    """A worker killed mid-trial leaves a RUNNING trial; after the heartbeat grace period the rerun marks it FAIL,
    retries its params once, and finishes with exactly n_trials COMPLETE trials, the first unchanged."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", KILLED_WORKER, str(tmp_path)])
    deadline = time.time() + 60
    while not (tmp_path / "hang").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert (tmp_path / "hang").exists()
    db = f"sqlite:///{tmp_path / 'optuna.db'}"
    before = optuna.load_study(study_name="t", storage=db).get_trials()
    assert [t.state for t in before] == [COMPLETE, optuna.trial.TrialState.RUNNING]
    time.sleep(4.0)  # > grace period (2 heartbeats = 2 s) even at SQLite CURRENT_TIMESTAMP's 1 s resolution

    cfg = TuneConfig(storage=db, study_name="t", n_trials=3, heartbeat_s=1,
                     weights={"alpha": (0.0, 1.0), "beta": (0.0, 1.0)}, targets=["alpha"])
    study = run_study(cfg, lambda w, lr: {"value": (w["alpha"] - 0.6) ** 2}, seed=4)
    trials = study.get_trials()
    assert trials[0].params == before[0].params and trials[0].value == before[0].value
    assert trials[1].state == optuna.trial.TrialState.FAIL
    assert trials[2].params == before[1].params  # the killed trial's params, retried
    assert len(study.get_trials(states=(COMPLETE,))) == 3


def test_failed_trials_do_not_count_and_are_capped(tmp_path: Path) -> None:
    calls = {"n": 0}

    def flaky(weights: dict[str, float], lr: float) -> dict:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("boom")
        return quadratic(weights, lr)

    study = run_study(tune_cfg(tmp_path, n_trials=3), flaky, seed=1)
    states = [t.state for t in study.get_trials()]
    assert states.count(COMPLETE) == 3 and states.count(optuna.trial.TrialState.FAIL) == 1
    assert study.get_trials()[1].user_attrs["error"] == "ValueError: boom"

    def broken(weights: dict[str, float], lr: float) -> dict:
        raise RuntimeError("always")

    with pytest.raises(RuntimeError, match="3 trials failed.*always"):
        run_study(tune_cfg(tmp_path / "b", n_trials=3, max_failed=2), broken, seed=1)


def test_proposals_are_normalised_and_honour_ranges(tmp_path: Path) -> None:
    ranges = {"alpha": (0.2, 0.5), "beta": (0.0, 1.0), "gamma": (0.3, 0.3), "off": (0.0, 0.0)}
    seen: list[tuple[dict, float]] = []

    def record(weights: dict[str, float], lr: float) -> dict:
        seen.append((weights, lr))
        return quadratic(weights, lr)

    cfg = tune_cfg(tmp_path, n_trials=12, weights=ranges, lr=(1e-4, 1e-2))
    study = run_study(cfg, record, seed=3)
    for t, (weights, lr) in zip(study.get_trials(states=(COMPLETE,)), seen, strict=True):
        raw = {d: t.params[f"w_{d}"] for d in ("alpha", "beta", "gamma")}
        assert "w_off" not in t.params and "off" not in weights  # [0, 0] leaves the domain out
        assert 0.2 <= raw["alpha"] <= 0.5 and 0.0 <= raw["beta"] <= 1.0 and raw["gamma"] == 0.3
        assert 1e-4 <= lr <= 1e-2 and lr == t.params["lr"]
        assert sum(weights.values()) == pytest.approx(1.0)
        total = sum(raw.values())
        assert weights == pytest.approx({d: v / total for d, v in raw.items()})
        assert t.user_attrs["weight_alpha"] == pytest.approx(raw["alpha"] / total, abs=1e-6)


def test_study_favours_the_domain_that_matters(tmp_path: Path) -> None:
    # only alpha's share matters: the optimum is all weight on alpha
    def alpha_only(weights: dict[str, float], lr: float) -> dict:
        return {"value": 1.0 - weights.get("alpha", 0.0)}

    study = run_study(tune_cfg(tmp_path, n_trials=25, n_startup_trials=8), alpha_only, seed=0)
    best = study.best_trial.user_attrs
    assert best["weight_alpha"] > 0.6
    assert best["weight_alpha"] > max(best["weight_beta"], best["weight_gamma"]) * 3
    # the model-based phase beats the random start on average
    values = [t.value for t in study.get_trials(states=(COMPLETE,))]
    assert sum(values[8:]) / len(values[8:]) < sum(values[:8]) / 8


def test_baseline_is_the_first_trial_and_outputs(tmp_path: Path) -> None:
    cfg = tune_cfg(tmp_path, n_trials=4)
    base = current_params(cfg, MixtureConfig(weights={"alpha": 3, "beta": 1}))
    assert base == {"w_alpha": 0.75, "w_beta": 0.25, "w_gamma": 0.0}
    assert current_params(cfg, MixtureConfig(weights={"alpha": 1, "delta": 1})) is None  # delta not searched
    narrow = tune_cfg(tmp_path, weights={"alpha": (0.0, 0.5), "beta": (0.0, 1.0)})
    assert current_params(narrow, MixtureConfig(weights={"alpha": 3, "beta": 1})) is None  # 0.75 > 0.5

    study = run_study(cfg, quadratic, seed=2, baseline=base)
    first = study.get_trials()[0]
    assert first.user_attrs.get("baseline") and first.params == base
    assert first.value == pytest.approx((0.75 - 0.6) ** 2 + (0.25 - 0.4) ** 2)

    stats = write_outputs(study, cfg, tmp_path / "out", tmp_path / "plots")
    assert stats["trials"] == {"complete": 4, "pruned": 0, "fail": 0, "running": 0}
    assert stats["baseline_value"] == first.value and stats["best_value"] <= first.value
    assert sum(stats["best_weights"].values()) == pytest.approx(1.0, abs=1e-5)
    text = (tmp_path / "out" / "best_mixture.yaml").read_text()
    assert "dvc exp run -S mixture.weights.alpha=" in text
    import yaml

    applied = yaml.safe_load(text)["mixture"]["weights"]
    MixtureConfig(weights=applied)  # a valid mixture section
    assert applied == pytest.approx(stats["best_weights"], abs=1e-4)
    rows = (tmp_path / "out" / "trials.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("number,state,value")
    for name in ("history.png", "weights.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------------------ objective
@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two very different domains (arithmetic lines vs. lowercase prose) → tokens, tokenizer, held-out docs."""
    rng = random.Random(0)
    words = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "hill", "river", "slowly", "quickly", "green", "old", "small", "house"]
    docs = []
    for i in range(60):
        lines = [f"{rng.randint(1, 99)} + {rng.randint(1, 99)} = {rng.randint(2, 198)}." for _ in range(12)]
        docs.append(Document(f"a{i}", "\n".join(lines), "alpha", "t"))
        docs.append(Document(f"b{i}", " ".join(rng.choice(words) for _ in range(80)) + ".", "beta", "t"))
    root = tmp_path_factory.mktemp("tiny")
    with ShardWriter(root / "docs", "part", docs_per_shard=1000) as w:
        w.write_all(docs)
    write_manifest(root / "docs", w.shards)
    tokenize_corpus(TokenizeConfig(vocab_size=320, val_fraction=0.2), root / "docs", root / "tokens",
                    root / "tokenizer", root / "heldout", LocalExecutor(1))
    return root


def tiny_objective(root: Path, tmp: Path) -> MixtureObjective:
    cfg = TuneConfig(weights={"alpha": (0, 1), "beta": (0, 1)}, targets=["alpha"], steps=30, batch_size=4,
                     seq_len=32, warmup_steps=3, lr=1e-2,
                     heldout={"max_docs_per_domain": 6, "max_tokens_per_domain": 2000})
    model = ModelConfig(d_model=32, n_layers=1, n_heads=2, max_seq_len=64)
    return MixtureObjective(cfg, model, root / "tokens", root / "heldout", root / "tokenizer", seed=5,
                            work_dir=tmp / "scratch")


def test_objective_is_deterministic_and_prefers_the_target_domain(tiny_corpus: Path, tmp_path: Path) -> None:
    objective = tiny_objective(tiny_corpus, tmp_path)
    on_target = objective({"alpha": 1.0, "beta": 0.0}, 1e-2)
    assert objective({"alpha": 1.0, "beta": 0.0}, 1e-2) == on_target  # bit-identical rerun
    off_target = objective({"alpha": 0.0, "beta": 1.0}, 1e-2)
    assert set(on_target["bpb"]) == {"alpha"} and on_target["value"] == on_target["bpb"]["alpha"]
    # training only on alpha scores alpha's held-out text better than training only on beta
    assert on_target["value"] < off_target["value"] - 1.0
    assert list((tmp_path / "scratch").iterdir()) == []  # per-trial models are removed


def test_objective_rejects_unknown_domains(tiny_corpus: Path, tmp_path: Path) -> None:
    cfg = TuneConfig(weights={"alpha": (0, 1), "zeta": (0, 1)})
    with pytest.raises(ValueError, match=r"\['zeta'\] absent"):
        MixtureObjective(cfg, ModelConfig(d_model=32, n_layers=1, n_heads=2), tiny_corpus / "tokens",
                         tiny_corpus / "heldout", tiny_corpus / "tokenizer", seed=0)
