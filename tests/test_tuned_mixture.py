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


def test_pretrain_always_depends_on_the_tune_winner_and_cpt_on_the_cmr_advice_only_when_it_reads_it(
    tmp_path: Path,
) -> None:
    """pretrain always depends on the tune winner (mixture.from_tune chooses at run time, so flipping it needs no
    re-rendering); cpt depends on the cmr grid's advice exactly when cpt.replay_from_cmr is set, so by default the
    grid runs beside cpt, and with the flag on a change of the advice reruns cpt."""
    import shutil
    import subprocess
    import sys

    stages = yaml.safe_load(render())["stages"]  # the committed params: the flag off
    assert TUNED in stages["pretrain"]["deps"] and f"tuned={TUNED}" in stages["pretrain"]["cmd"]
    assert "data/cmr/replay.yaml" not in stages["cpt"]["deps"] and "replay=" not in stages["cpt"]["cmd"]
    assert "cpt.replay_from_cmr" in stages["cpt"]["params"]
    assert "data/tune" in [next(iter(o)) if isinstance(o, dict) else o for o in stages["tune"]["outs"]]
    assert "data/cmr" in [next(iter(o)) if isinstance(o, dict) else o for o in stages["cmr"]["outs"]]
    # toggling a flag must not make the study or the grid stale
    assert "mixture" not in stages["tune"]["params"] and "mixture.weights" in stages["tune"]["params"]
    assert "cpt.replay_from_cmr" not in stages["cmr"]["params"] and "cpt" not in stages["cmr"]["params"]
    registry = (ROOT / "stages" / "registry.py").read_text()
    assert '_param("mixture' not in registry  # from_tune never changes the graph

    # the flag on, rendered in a copy: the advice is a dep and a path of the cpt command
    for d in ("src", "stages"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["cpt"]["replay_from_cmr"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(
        [sys.executable, "-m", "stages.registry", "--write"], cwd=tmp_path, check=True, capture_output=True
    )
    on = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]["cpt"]
    assert "data/cmr/replay.yaml" in on["deps"] and "replay=data/cmr/replay.yaml" in on["cmd"]


def test_cpt_refuses_the_cmr_flag_when_dvc_yaml_lacks_its_dep() -> None:
    from lmpipe.config import load_params
    from lmpipe.continual import run

    p = load_params(ROOT / "params.yaml")
    p = p.model_copy(update={"cpt": p.cpt.model_copy(update={"replay_from_cmr": True})})
    io = StageIO(
        "cpt", {"tokens": "data/tokens", "new_tokens": "data/tokens-cpt", "tokenizer": "models/tokenizer"}
    )
    with pytest.raises(ValueError, match="stages.registry --write"):
        run(p, io, None)  # type: ignore[arg-type]
