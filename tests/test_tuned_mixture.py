"""The tune stage's winner feeds pretraining: mixture.from_tune swaps in its weights; DVC always sees the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lmpipe.contract import StageIO
from lmpipe.mixing.config import MixtureConfig, TuneConfig
from lmpipe.pretrain import stage_mixture
from lmpipe.tuning import run_study, write_outputs
from stages.registry import ROOT, render

TUNED = "data/tune/best_mixture.yaml"


def test_pretrain_trains_on_the_study_winner(tmp_path: Path) -> None:
    cfg = TuneConfig(
        storage=f"sqlite:///{tmp_path / 'o.db'}",
        n_trials=5,
        n_startup_trials=2,
        heartbeat_s=None,
        weights={"prose": (0.0, 1.0), "code": (0.0, 1.0), "math": (0.0, 0.0)},
        targets=["prose"],
    )

    def objective(weights: dict[str, float], lr: float) -> dict:
        return {"value": (weights["prose"] - 0.7) ** 2}

    study = run_study(cfg, objective, seed=3)
    write_outputs(study, cfg, tmp_path / "tune", tmp_path / "plots")
    raw = {
        k[2:]: v for k, v in study.best_trial.params.items()
    }  # independent of the writer: the trial's params
    expect = {d: round(v / sum(raw.values()), 4) for d, v in raw.items()} | {"math": 0.0}

    hand = MixtureConfig(weights={"prose": 0.1, "code": 0.9}, from_tune=True)
    io = StageIO("pretrain", {"tuned": str(tmp_path / "tune" / "best_mixture.yaml")})
    got = stage_mixture(hand, io)
    assert got.weights == pytest.approx(expect, abs=1e-9) and got.weights != hand.weights
    # the flag off: the hand mixture, even when the file is there
    off = hand.model_copy(update={"from_tune": False})
    assert stage_mixture(off, io) is off


def test_from_tune_fails_clearly_without_its_file(tmp_path: Path) -> None:
    on = MixtureConfig(from_tune=True)
    with pytest.raises(FileNotFoundError, match="dvc repro tune"):
        stage_mixture(on, StageIO("pretrain", {"tuned": str(tmp_path / "nope.yaml")}))
    bad = tmp_path / "bad.yaml"
    bad.write_text("mixture: {weights: {prose: -1}}\n")
    with pytest.raises(ValueError, match="non-negative"):
        stage_mixture(on, StageIO("pretrain", {"tuned": str(bad)}))
    # the flag off: the file is never read, even a broken one
    off = MixtureConfig(from_tune=False)
    assert stage_mixture(off, StageIO("pretrain", {"tuned": str(bad)})) is off


def test_the_graph_does_not_depend_on_the_flags() -> None:
    """pretrain always depends on the tune winner and cpt on the cmr advice; the params choose at run time, so
    dvc.yaml is the same whatever params.yaml says (no re-rendering after flipping a flag)."""
    stages = yaml.safe_load(render())["stages"]
    assert TUNED in stages["pretrain"]["deps"] and f"tuned={TUNED}" in stages["pretrain"]["cmd"]
    assert (
        "data/cmr/replay.yaml" in stages["cpt"]["deps"] and "cpt.replay_from_cmr" in stages["cpt"]["params"]
    )
    assert "data/tune" in [next(iter(o)) if isinstance(o, dict) else o for o in stages["tune"]["outs"]]
    assert "data/cmr" in [next(iter(o)) if isinstance(o, dict) else o for o in stages["cmr"]["outs"]]
    # toggling a flag must not make the study or the grid stale
    assert "mixture" not in stages["tune"]["params"] and "mixture.weights" in stages["tune"]["params"]
    assert "cpt.replay_from_cmr" not in stages["cmr"]["params"] and "cpt" not in stages["cmr"]["params"]
    registry = (ROOT / "stages" / "registry.py").read_text()
    # rendering reads no mixture or cpt flag (only the residual's model paths and the rater switch, by design)
    assert '_param("mixture' not in registry and '_param("cpt' not in registry
