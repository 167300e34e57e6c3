"""Stage ``cmr``: a tiny grid of real CPT runs → the replay-ratio law, its plot, and the replay.yaml that ``cpt``
reads when ``cpt.replay_from_cmr`` is set; a rerun trains nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lmpipe.cmr import Law
from lmpipe.config import Params
from lmpipe.contract import StageIO
from lmpipe.mixing.cmrgrid import cpt_mixture, replay_weights, run
from lmpipe.mixing.config import MixtureConfig
from lmpipe.mixture import TokenIndex
from lmpipe.training.config import TrainConfig
from tests.test_continual import SEQ, TINY, corpus  # noqa: F401 - the shared module fixture

torch.set_num_threads(1)


def test_replay_weights_by_hand(tmp_path: Path) -> None:
    w = {"synthetic": 0.5, "prose": 0.3, "code": 0.1, "math": 0.0}
    got = replay_weights(w, ["synthetic"], 0.2)
    assert got == pytest.approx({"prose": 0.2 * 0.75, "code": 0.2 * 0.25, "synthetic": 0.8})
    with pytest.raises(ValueError, match="new domain"):
        replay_weights({"prose": 1.0}, ["synthetic"], 0.5)
    f = tmp_path / "replay.yaml"
    f.write_text("replay_ratio: 0.4\n")
    mixed = cpt_mixture(MixtureConfig(weights=w), ["synthetic"], f)
    assert mixed.weights == pytest.approx({"prose": 0.3, "code": 0.1, "synthetic": 0.6})
    f.write_text("replay_ratio: 1.5\n")
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        cpt_mixture(MixtureConfig(weights=w), ["synthetic"], f)
    with pytest.raises(FileNotFoundError, match="cmr stage"):
        cpt_mixture(MixtureConfig(weights=w), ["synthetic"], tmp_path / "none.yaml")


def test_grid_fits_the_law_and_writes_the_ratio_for_cpt(corpus: dict, tmp_path: Path) -> None:  # noqa: F811
    from lmpipe.training.data import mixture_samplers
    from lmpipe.training.trainer import train

    root = corpus["root"]
    parent = tmp_path / "parent"
    train(
        TINY,
        TrainConfig(
            seq_len=SEQ,
            batch_size=4,
            max_steps=20,
            lr=5e-3,
            val_every=100,
            val_batches=1,
            ckpt_every=100,
            schedule={"warmup_steps": 2},
        ),
        mixture_samplers(root / "tokens", MixtureConfig(weights={"prose": 0.7, "code": 0.3}), SEQ, 1),
        vocab_size=TokenIndex.load(root / "tokens").vocab_size,
        ckpt_dir=tmp_path / "pc",
        log_dir=None,
        export_dir=parent,
        tokenizer_dir=root / "tokenizer",
        seed=1,
        progress=False,
    )
    p = Params.model_validate(
        {
            "ingest": {"sources": [{"uri": "x", "domain": "x"}]},
            "model": TINY.model_dump(),
            "cpt": {
                "train": {
                    "init_from": str(parent),
                    "seq_len": SEQ,
                    "batch_size": 4,
                    "max_steps": 12,
                    "lr": 3e-3,
                    "schedule": {"warmup_steps": 3},
                },
                "mixture": {"weights": {"synthetic": 0.5, "prose": 0.3, "code": 0.2}},
            },
            "cmr": {"ratios": [0.1, 0.4, 0.8], "steps": [2, 5], "eval_batches": 2, "tolerance": 0.05},
        }
    )
    io = StageIO(
        "cmr",
        {
            "tokens": str(root / "tokens"),
            "new_tokens": str(root / "tokens-cpt"),
            "tokenizer": str(root / "tokenizer"),
            "out": str(tmp_path / "cmr"),
            "plots": str(tmp_path / "plots"),
        },
    )
    stats = run(p, io, None)
    assert stats["runs_trained"] == 6 and stats["points"] == 6
    rows = [json.loads(x) for x in (tmp_path / "cmr" / "points.jsonl").read_text().splitlines()]
    assert [(r["ratio"], r["steps"]) for r in rows] == [(0.0, 0)] + [
        (r, s) for r in (0.1, 0.4, 0.8) for s in (2, 5)
    ]
    assert all(
        r["tokens"] == r["steps"] * 4 * SEQ for r in rows
    )  # each point is a CPT run of that many steps
    assert stats["budget_tokens"] == 12 * 4 * SEQ and stats["old_domains"] == ["code", "prose"]
    law = Law(**stats["law"])
    # the law is a fit of the points (relative error small) and the advice follows from it by the closed form
    for r in rows[1:]:
        assert law.loss(r["ratio"], r["tokens"]) == pytest.approx(r["loss"], rel=0.05)
    assert stats["max_loss"] == pytest.approx(rows[0]["loss"] * 1.05)
    if stats["critical_ratio"] is not None:
        assert law.loss(stats["critical_ratio"], stats["budget_tokens"]) == pytest.approx(stats["max_loss"])
    replay = yaml.safe_load((tmp_path / "cmr" / "replay.yaml").read_text())
    assert 0.1 <= replay["replay_ratio"] <= 0.8 and replay["replay_ratio"] == pytest.approx(
        stats["replay_ratio"], abs=1e-6
    )
    assert Path(stats["plot"]).stat().st_size > 1000
    # what the cpt stage would train on with cpt.replay_from_cmr
    mixed = cpt_mixture(p.cpt.mixture, ["synthetic"], tmp_path / "cmr" / "replay.yaml")
    assert mixed.weights["synthetic"] == pytest.approx(1 - replay["replay_ratio"])
    # a rerun (or a resumed kill) trains nothing and reaches the same advice
    again = run(p, io, None)
    assert again["runs_trained"] == 0 and again["replay_ratio"] == stats["replay_ratio"]
    assert not (tmp_path / "cmr" / ".runs").exists()
