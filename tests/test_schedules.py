"""LR schedules against values computed by hand from their closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from lmpipe.schedules import lr_factor, lr_lambda
from lmpipe.training.config import ScheduleConfig


def f(step: int, total: int = 100, **kw) -> float:
    return lr_factor(ScheduleConfig(**kw), step, total)


def test_cosine_with_warmup() -> None:
    kw = {"kind": "cosine", "warmup_steps": 10, "min_ratio": 0.1}
    assert f(0, 110, **kw) == 0.0
    assert f(5, 110, **kw) == pytest.approx(0.5)
    assert f(10, 110, **kw) == pytest.approx(1.0)
    # quarter of the decay: 0.1 + 0.9 · (1 + cos(π/4)) / 2 = 0.1 + 0.9 · 0.8535534
    assert f(35, 110, **kw) == pytest.approx(0.8681981, abs=1e-7)
    assert f(60, 110, **kw) == pytest.approx(0.55)  # halfway: 0.1 + 0.9 · 0.5
    assert f(110, 110, **kw) == pytest.approx(0.1)
    assert f(500, 110, **kw) == pytest.approx(0.1)  # past the end it stays at the floor


def test_rewarm_starts_from_start_ratio() -> None:
    kw = {"kind": "cosine", "warmup_steps": 10, "start_ratio": 0.2, "min_ratio": 0.0}
    assert f(0, **kw) == pytest.approx(0.2)
    assert f(5, **kw) == pytest.approx(0.6)  # 0.2 + 0.8 · 5/10
    assert f(100, **kw) == pytest.approx(0.0)  # re-decays to the new floor


@pytest.mark.parametrize(
    ("shape", "at90", "at95"),
    [
        ("linear", 0.5, 0.25),
        ("cosine", 0.5, 0.1464466),  # (1 + cos(3π/4)) / 2
        ("1-sqrt", 0.2928932, 0.1339746),  # 1 - sqrt(0.5), 1 - sqrt(0.75)
    ],
)
def test_wsd(shape: str, at90: float, at95: float) -> None:
    kw = {"kind": "wsd", "warmup_steps": 10, "decay_fraction": 0.2, "min_ratio": 0.0, "decay_shape": shape}
    assert f(5, **kw) == pytest.approx(0.5)
    assert f(10, **kw) == f(50, **kw) == f(80, **kw) == 1.0  # stable until the last 20 steps
    assert f(90, **kw) == pytest.approx(at90, abs=1e-7)
    assert f(95, **kw) == pytest.approx(at95, abs=1e-7)
    assert f(100, **kw) == pytest.approx(0.0)


def test_wsd_floor() -> None:
    kw = {"kind": "wsd", "warmup_steps": 0, "decay_fraction": 0.5, "min_ratio": 0.1, "decay_shape": "linear"}
    assert f(75, **kw) == pytest.approx(0.55)  # 0.1 + 0.9 · 0.5


def test_constant() -> None:
    assert f(2, warmup_steps=4, kind="constant") == pytest.approx(0.5)
    assert f(10_000, warmup_steps=4, kind="constant") == 1.0


def test_infinite_phases() -> None:
    kw = {
        "kind": "infinite",
        "warmup_steps": 10,
        "cooldown_steps": 20,
        "const_ratio": 0.5,
        "decay_fraction": 0.2,
        "min_ratio": 0.05,
    }
    assert f(5, **kw) == pytest.approx(0.5)  # warmup
    assert f(10, **kw) == pytest.approx(1.0)  # peak
    assert f(20, **kw) == pytest.approx(0.75)  # cosine cooldown halfway: 0.5 + 0.5 · 0.5
    assert f(30, **kw) == f(50, **kw) == f(80, **kw) == pytest.approx(0.5)  # long constant phase
    assert f(90, **kw) == pytest.approx(0.5 * 0.1**0.5)  # exponential anneal: 0.5 · (0.05/0.5)^(1/2)
    assert f(100, **kw) == pytest.approx(0.05)


def test_infinite_continues_constant_without_rewarm() -> None:
    # continual pretraining of an infinite-schedule model: no warmup, no cooldown, constant then anneal
    kw = {
        "kind": "infinite",
        "warmup_steps": 0,
        "cooldown_steps": 0,
        "const_ratio": 0.3,
        "decay_fraction": 0.1,
        "min_ratio": 0.03,
    }
    assert f(0, **kw) == pytest.approx(0.3)
    assert f(89, **kw) == pytest.approx(0.3)
    assert f(95, **kw) == pytest.approx(0.3 * 0.1**0.5)


def test_lambda_lr_steps_the_optimizer() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(ScheduleConfig(kind="cosine", warmup_steps=4, min_ratio=0.0), 20)
    )
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:5] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    # step 12: halfway through the decay
    assert seen[12] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_invalid_schedules() -> None:
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_lambda(ScheduleConfig(warmup_steps=50), 50)
    with pytest.raises(ValueError, match="const_ratio"):
        ScheduleConfig(kind="infinite", const_ratio=0.1, min_ratio=0.2)
