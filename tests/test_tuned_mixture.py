"""The tune stage's winner feeds pretraining: mixture.from_tune swaps in its weights and DVC sees the file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmpipe.config import MixtureConfig, TuneConfig
from lmpipe.contract import StageIO
from lmpipe.pretrain import stage_mixture
from lmpipe.tuning import run_study, write_outputs
from stages.registry import ROOT

TUNED = "data/tune/best_mixture.yaml"


def test_pretrain_trains_on_the_study_winner(tmp_path: Path) -> None:
    cfg = TuneConfig(storage=f"sqlite:///{tmp_path / 'o.db'}", n_trials=5, n_startup_trials=2, heartbeat_s=None,
                     weights={"prose": (0.0, 1.0), "code": (0.0, 1.0), "math": (0.0, 0.0)}, targets=["prose"])

    def objective(weights: dict[str, float], lr: float) -> dict:
        return {"value": (weights["prose"] - 0.7) ** 2}

    study = run_study(cfg, objective, seed=3)
    write_outputs(study, cfg, tmp_path / "tune", tmp_path / "plots")
    raw = {k[2:]: v for k, v in study.best_trial.params.items()}  # independent of the writer: the trial's params
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
    with pytest.raises(SystemExit, match="stages.registry --write"):
        stage_mixture(on, StageIO("pretrain", {}))
    with pytest.raises(FileNotFoundError, match="dvc repro tune"):
        stage_mixture(on, StageIO("pretrain", {"tuned": str(tmp_path / "nope.yaml")}))
    bad = tmp_path / "bad.yaml"
    bad.write_text("mixture: {weights: {prose: -1}}\n")
    with pytest.raises(ValueError, match="non-negative"):
        stage_mixture(on, StageIO("pretrain", {"tuned": str(bad)}))


def render_with(tmp_path: Path, from_tune: bool) -> dict:
    """dvc.yaml as the registry renders it for a params.yaml with mixture.from_tune set as given."""
    for d in ("src", "stages"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["mixture"]["from_tune"] = from_tune
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = subprocess.run([sys.executable, "-c", "from stages.registry import render; print(render())"],
                         cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": f"{tmp_path / 'src'}:{tmp_path}", "PATH": "/usr/bin:/bin"})
    return yaml.safe_load(out.stdout)["stages"]


@pytest.mark.parametrize("from_tune", [True, False])
def test_dvc_sees_the_tuned_file_only_when_it_is_used(tmp_path: Path, from_tune: bool) -> None:
    stages = render_with(tmp_path, from_tune)
    assert (TUNED in stages["pretrain"]["deps"]) is from_tune
    assert (f"tuned={TUNED}" in stages["pretrain"]["cmd"]) is from_tune
    assert "data/tune" in [next(iter(o)) if isinstance(o, dict) else o for o in stages["tune"]["outs"]]
    # toggling the flag must not make the study itself stale
    assert "mixture" not in stages["tune"]["params"] and "mixture.weights" in stages["tune"]["params"]
