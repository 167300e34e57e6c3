"""Learning-rate schedules as closed-form multipliers of the peak LR, one function per shape.

Every function maps an optimizer step (0-based: the LR of the first update is ``f(0)``) to a factor in [0, 1];
``lr_lambda`` turns a :class:`~lmpipe.training.config.ScheduleConfig` into the callable ``torch.optim.lr_scheduler.LambdaLR``
wants. Being pure functions of the step, they need no state of their own to resume exactly.

Shapes
- ``cosine``: linear warmup, then half a cosine from 1 down to ``min_ratio`` at ``total``.
- ``wsd`` (warmup-stable-decay): warmup, constant 1, then a decay to ``min_ratio`` over the last
  ``decay_fraction`` of the steps (linear, cosine, or 1-sqrt, the shape Hägele et al. 2024 found best).
- ``constant``: warmup, then 1.
- ``infinite`` (Ibrahim et al. 2024; studied in "Beyond Cosine Decay", Singh et al. 2025): warmup, a cosine
  cooldown to ``const_ratio`` over ``cooldown_steps``, a long constant phase that needs no fixed horizon, and an
  exponential anneal ``const·(min/const)^p`` over the last ``decay_fraction`` of the steps.

Continual pretraining reuses them: ``start_ratio`` > 0 re-warms from the previous run's final LR instead of 0, and
any decaying shape re-decays over the new run; an ``infinite`` run continues at its constant LR with
``warmup_steps = cooldown_steps = 0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from lmpipe.training.config import ScheduleConfig


def warmup(step: int, warmup_steps: int, start_ratio: float = 0.0) -> float:
    """Linear ramp from ``start_ratio`` (step 0) to 1 (step ``warmup_steps``)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return start_ratio + (1.0 - start_ratio) * step / warmup_steps


def _progress(step: int, begin: int, end: int) -> float:
    """Fraction of the phase [begin, end] done at ``step``, clipped to [0, 1]."""
    if end <= begin:
        return 1.0 if step >= end else 0.0
    return min(1.0, max(0.0, (step - begin) / (end - begin)))


def _half_cosine(p: float) -> float:
    """1 → 0 as p goes 0 → 1."""
    return 0.5 * (1.0 + math.cos(math.pi * p))


def cosine(step: int, total: int, warmup_steps: int, min_ratio: float, start_ratio: float = 0.0) -> float:
    if step < warmup_steps:
        return warmup(step, warmup_steps, start_ratio)
    return min_ratio + (1.0 - min_ratio) * _half_cosine(_progress(step, warmup_steps, total))


def constant(step: int, warmup_steps: int, start_ratio: float = 0.0) -> float:
    return warmup(step, warmup_steps, start_ratio)


DECAY_SHAPES: dict[str, Callable[[float], float]] = {
    "linear": lambda p: 1.0 - p,
    "cosine": _half_cosine,
    "1-sqrt": lambda p: 1.0 - math.sqrt(p),
}


def wsd(
    step: int,
    total: int,
    warmup_steps: int,
    decay_steps: int,
    min_ratio: float,
    shape: str = "1-sqrt",
    start_ratio: float = 0.0,
) -> float:
    if step < warmup_steps:
        return warmup(step, warmup_steps, start_ratio)
    decay_start = max(warmup_steps, total - decay_steps)
    if step < decay_start:
        return 1.0
    return min_ratio + (1.0 - min_ratio) * DECAY_SHAPES[shape](_progress(step, decay_start, total))


def infinite(
    step: int,
    total: int,
    warmup_steps: int,
    cooldown_steps: int,
    anneal_steps: int,
    const_ratio: float,
    min_ratio: float,
    start_ratio: float = 0.0,
) -> float:
    if step < warmup_steps:
        return warmup(step, warmup_steps, start_ratio)
    cooldown_end = warmup_steps + cooldown_steps
    if step < cooldown_end:
        return const_ratio + (1.0 - const_ratio) * _half_cosine(_progress(step, warmup_steps, cooldown_end))
    anneal_start = max(cooldown_end, total - anneal_steps)
    if step < anneal_start or anneal_steps <= 0:
        return const_ratio
    if min_ratio <= 0:  # the exponential form needs min > 0; fall back to a linear anneal to zero
        return const_ratio * (1.0 - _progress(step, anneal_start, total))
    return const_ratio * (min_ratio / const_ratio) ** _progress(step, anneal_start, total)


def lr_factor(cfg: ScheduleConfig, step: int, total: int) -> float:
    """The multiplier of the peak LR at optimizer ``step`` of a ``total``-step run."""
    final = round(cfg.decay_fraction * total)
    if cfg.kind == "cosine":
        return cosine(step, total, cfg.warmup_steps, cfg.min_ratio, cfg.start_ratio)
    if cfg.kind == "wsd":
        return wsd(step, total, cfg.warmup_steps, final, cfg.min_ratio, cfg.decay_shape, cfg.start_ratio)
    if cfg.kind == "constant":
        return constant(step, cfg.warmup_steps, cfg.start_ratio)
    if cfg.kind == "infinite":
        return infinite(
            step,
            total,
            cfg.warmup_steps,
            cfg.cooldown_steps,
            final,
            cfg.const_ratio,
            cfg.min_ratio,
            cfg.start_ratio,
        )
    raise ValueError(f"unknown schedule kind {cfg.kind!r}")


def lr_lambda(cfg: ScheduleConfig, total: int) -> Callable[[int], float]:
    """``LambdaLR(optimizer, lr_lambda(cfg, total))``: the factor for each step of this run."""
    if cfg.warmup_steps >= total and cfg.kind != "constant":
        raise ValueError(
            f"schedule.warmup_steps ({cfg.warmup_steps}) must be below the run's steps ({total})"
        )
    return lambda step: lr_factor(cfg, step, total)
