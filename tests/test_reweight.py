"""Online domain reweighting and the RS2 baseline: the sampler's weight schedule, the DoReMi-style update raising a
domain whose loss is planted to stay high, and a bit-identical run after kill -9 + resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lmpipe.mixing.reweight import eg_step
from lmpipe.mixing.rs2 import RS2Sampler
from lmpipe.mixture import MixtureSampler, TokenIndex, WeightSchedule
from tests.test_tuning import tiny_corpus  # noqa: F401 - the shared module fixture

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
VOCAB = 64


def write_tokens(root: Path, streams: dict[str, dict[str, np.ndarray]]) -> Path:
    """A token dir in the tokenize stage's layout: split -> domain -> one uint16 file."""
    splits: dict = {}
    for split, domains in streams.items():
        for d, ids in domains.items():
            rel = f"{split}/{d}/000.bin"
            (root / split / d).mkdir(parents=True)
            ids.astype(np.uint16).tofile(root / rel)
            splits.setdefault(split, {})[d] = {
                "tokens": len(ids),
                "docs": 1,
                "files": [{"path": rel, "tokens": len(ids)}],
            }
    (root / "index.json").write_text(
        json.dumps(
            {"dtype": "uint16", "vocab_size": VOCAB, "eos_id": 0, "tokenizer": "none", "splits": splits}
        )
    )
    return root


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``easy``: a fixed cycle of 8 tokens (learnt in a few steps); ``noise``: uniform random tokens, whose loss
    cannot fall below ln(64) whatever the model does."""
    rng = np.random.default_rng(0)
    cycle = lambda n: np.tile(np.arange(1, 9), n // 8)  # noqa: E731
    return write_tokens(
        tmp_path_factory.mktemp("planted"),
        {
            "train": {"easy": cycle(8000), "noise": rng.integers(1, VOCAB, 8000)},
            "val": {"easy": cycle(800), "noise": rng.integers(1, VOCAB, 800)},
        },
    )


def test_eg_step_by_hand() -> None:
    got = eg_step({"a": 0.25, "b": 0.75}, {"a": 2.0, "b": 0.0}, step_size=0.5, smoothing=0.1)
    ea = 0.25 * math.exp(1.0)
    a = 0.9 * ea / (ea + 0.75) + 0.05
    assert got == pytest.approx({"a": a, "b": 1 - a}, abs=1e-12)


def test_fixed_weights_draw_what_generator_choice_draws(planted: Path) -> None:
    index = TokenIndex.load(planted)
    s = MixtureSampler(index, {"easy": 0.3, "noise": 0.7}, 16, seed=9)
    got = [s._advance()[0] for _ in range(300)]
    want = np.random.default_rng([9, 1, 0]).choice(2, size=4096, p=[0.3, 0.7])[:300]
    assert got == [("easy", "noise")[i] for i in want]


def test_schedule_changes_the_draws_from_its_step_on_only(planted: Path) -> None:
    index = TokenIndex.load(planted)
    plain = MixtureSampler(index, {"easy": 0.5, "noise": 0.5}, 16, seed=3)
    sched = MixtureSampler(index, {"easy": 0.5, "noise": 0.5}, 16, seed=3)
    schedule = WeightSchedule()
    sched.use_schedule(schedule)
    schedule.add(100, {"easy": 0.0, "noise": 1.0})
    a = [plain._advance()[0] for _ in range(200)]
    b = [sched._advance()[0] for _ in range(200)]
    assert b[:100] == a[:100] and set(b[100:]) == {"noise"} and "easy" in a[100:]
    with pytest.raises(RuntimeError, match="after the sampler drew"):
        schedule.add(150, {"easy": 1.0, "noise": 0.0})
    # the schedule travels in the sampler state: a fresh sampler continues identically
    state = sched.state_dict()
    again = MixtureSampler(index, {"easy": 0.5, "noise": 0.5}, 16, seed=3)
    again.load_state_dict(state)
    assert [again._advance() for _ in range(50)] == [sched._advance() for _ in range(50)]


def test_rs2_visits_every_window_once_per_epoch_and_resumes(planted: Path) -> None:
    index = TokenIndex.load(planted)
    s = RS2Sampler(index, {"easy": 1.0, "noise": 2.0}, 16, seed=4)
    total = sum(s.windows.values())
    first = [s._advance() for _ in range(total)]
    assert len(set(first)) == total  # without replacement: the whole pool, no repeats
    assert s.epochs_consumed() == {"easy": 1.0, "noise": 1.0}
    second = [s._advance() for _ in range(total)]
    assert set(second) == set(first) and second != first  # a fresh order each epoch
    half = RS2Sampler(index, {"easy": 1.0, "noise": 2.0}, 16, seed=4)
    for _ in range(total + 7):
        half._advance()
    resumed = RS2Sampler(index, {"easy": 1.0, "noise": 2.0}, 16, seed=4)
    resumed.load_state_dict(half.state_dict())
    assert [resumed._advance() for _ in range(20)] == second[7:27]


RUN = textwrap.dedent("""
    import json, sys, time
    import lightning as L, torch
    torch.set_num_threads(1)
    from lmpipe.mixing.config import MixtureConfig
    from lmpipe.training.config import ModelConfig, TrainConfig
    from lmpipe.mixing import reweight
    from lmpipe.mixture import TokenIndex
    from lmpipe.training.data import mixture_samplers
    from lmpipe.training.trainer import train

    a = json.loads(sys.argv[1])
    class Slow(L.Callback):  # gives the test time to kill the run between two checkpoints
        def on_train_batch_end(self, *args):
            time.sleep(a["sleep"])
    cfg = TrainConfig(seq_len=16, batch_size=4, max_steps=a["steps"], lr=1e-2, ckpt_every=4, val_every=4,
                      val_batches=1, threads=1, peak_tflops=1.0, schedule={"warmup_steps": 2})
    mixture = MixtureConfig(weights={"easy": 0.5, "noise": 0.5}, reweight={"enabled": True, "every": 3})
    index = TokenIndex.load(a["tokens"])
    cb = reweight.build(mixture.reweight, index, {"easy": 0.5, "noise": 0.5}, 16, 4, seed=2)
    stats = train(ModelConfig(d_model=32, n_layers=1, n_heads=2, max_seq_len=32), cfg,
                  mixture_samplers(index, mixture, 16, 2), vocab_size=64, ckpt_dir=a["out"] + "/ckpt",
                  log_dir=a["out"] + "/live", export_dir=None, seed=2, progress=False, callbacks=[cb, Slow()])
    print("STATS " + json.dumps({**stats, "history": cb.history}))
""")


def run_cmd(tokens: Path, out: Path, steps: int, sleep: float = 0.0) -> list[str]:
    return [
        sys.executable,
        "-c",
        RUN,
        json.dumps({"tokens": str(tokens), "out": str(out), "steps": steps, "sleep": sleep}),
    ]


ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def stats_of(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.split("STATS ", 1)[1])


def tsv(run: Path, name: str) -> list[str]:
    return (run / "live" / "plots" / "metrics" / name).read_text().splitlines()


STEPS = 16  # updates at 3, 6, 9, 12, 15; checkpoints at 4, 8, 12


@pytest.fixture(scope="module")
def full_run(planted: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One uninterrupted reweighted run (a subprocess, as the killed one): its dir and stats."""
    out = tmp_path_factory.mktemp("full")
    done = subprocess.run(
        run_cmd(planted, out, STEPS), env=ENV, capture_output=True, text=True, timeout=120, check=True
    )
    return out, stats_of(done)


def test_reweighting_raises_the_domain_whose_loss_stays_high(full_run: tuple[Path, dict]) -> None:
    out, stats = full_run
    hist = stats["history"]
    assert [h["step"] for h in hist] == [0, 3, 6, 9, 12, 15]
    first = hist[1]
    # the update by hand from the losses it logged: reference 0, eta 1, c 1e-3
    en, ee = 0.5 * math.exp(first["loss"]["noise"]), 0.5 * math.exp(first["loss"]["easy"])
    assert first["weights"]["noise"] == pytest.approx(0.999 * en / (en + ee) + 0.0005, rel=1e-9)
    assert all(h["loss"]["noise"] > math.log(VOCAB) - 0.3 for h in hist[1:])  # planted: stays high
    assert hist[-1]["loss"]["easy"] < hist[-1]["loss"]["noise"] - 1.0
    noise = [h["weights"]["noise"] for h in hist]
    assert noise == sorted(noise) and noise[-1] > 0.9
    # the sampler followed: far more noise windows than the static 50 % mixture would draw
    epochs = stats["epochs_consumed"]
    windows = {"easy": (8000 - 1) // 16, "noise": (8000 - 1) // 16}
    drawn = {d: epochs[d] * windows[d] for d in windows}
    assert drawn["noise"] / sum(drawn.values()) > 0.65
    assert len(tsv(out, "mixture/weight/noise.tsv")) == 1 + 5  # logged per update (DVCLive)


@pytest.mark.e2e  # two more training subprocesses, one killed
def test_kill_9_and_resume_is_bit_identical(
    planted: Path, full_run: tuple[Path, dict], tmp_path: Path
) -> None:
    full_dir, full = full_run
    crash = tmp_path / "crash"
    proc = subprocess.Popen(
        run_cmd(planted, crash, STEPS, sleep=0.4),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = crash / "ckpt" / "latest.ckpt"
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        if ckpt.exists() and torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] >= 8:
            break  # past a checkpoint with two updates behind it and more ahead
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < killed_at < STEPS
    resumed = stats_of(
        subprocess.run(
            run_cmd(planted, crash, STEPS), env=ENV, capture_output=True, text=True, timeout=120, check=True
        )
    )
    assert resumed["resumed_from_step"] == killed_at
    assert resumed["history"] == full["history"]  # weights and losses, bit for bit
    assert resumed["epochs_consumed"] == full["epochs_consumed"]  # the same windows drawn
    for name in ("train/loss.tsv", "val/loss.tsv", "mixture/weight/noise.tsv"):
        assert tsv(crash, name) == tsv(full_dir, name), name


def test_pretrain_path_reweights_logs_and_plots(tiny_corpus: Path, tmp_path: Path) -> None:  # noqa: F811
    """``train_on_tokens`` (the pretrain and cpt stages) builds the callback from ``mixture.reweight``; RS2 trains."""
    from lmpipe.mixing.config import MixtureConfig
    from lmpipe.pretrain import train_on_tokens
    from lmpipe.training.config import ModelConfig, TrainConfig
    from lmpipe.training.data import mixture_samplers

    model = ModelConfig(d_model=32, n_layers=1, n_heads=2, max_seq_len=32)
    cfg = TrainConfig(
        seq_len=16,
        batch_size=4,
        max_steps=6,
        lr=1e-2,
        val_every=100,
        ckpt_every=100,
        val_batches=1,
        peak_tflops=1.0,
        schedule={"warmup_steps": 1},
    )
    mixture = MixtureConfig(weights={"alpha": 0.5, "beta": 0.5}, reweight={"enabled": True, "every": 2})
    stats = train_on_tokens(
        model,
        cfg,
        mixture,
        [tiny_corpus / "tokens"],
        tiny_corpus / "tokenizer",
        seed=1,
        ckpt_dir=tmp_path / "ckpt",
        log_dir=tmp_path / "live",
        export_dir=None,
        progress=False,
    )
    assert stats["reweight"]["updates"] == 2  # steps 2 and 4
    assert sum(stats["reweight"]["final_weights"].values()) == pytest.approx(1.0)
    assert Path(stats["reweight"]["plot"]).stat().st_size > 1000
    assert (tmp_path / "live" / "plots" / "metrics" / "mixture" / "weight" / "alpha.tsv").exists()
    rs2 = MixtureConfig(weights={"alpha": 1.0, "beta": 1.0}, sampler="rs2")
    assert type(mixture_samplers(tiny_corpus / "tokens", rs2, 16, 1)("train")) is RS2Sampler
    with pytest.raises(ValueError, match="sampler: weighted"):
        MixtureConfig(sampler="rs2", reweight={"enabled": True})
