"""The replay-ratio law: a fit to data generated from the law recovers its parameters and its critical ratio."""

from __future__ import annotations

import numpy as np
import pytest

from lmpipe.cmr import Law, fit

TRUE = Law(E=2.1, A=40.0, alpha=0.35, B=0.15, beta=0.6)


def grid(noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, d = np.meshgrid([0.02, 0.05, 0.1, 0.2, 0.4, 0.8], [1e4, 3e4, 1e5, 3e5, 1e6])
    r, d = r.ravel(), d.ravel()
    # the law written out by hand (not through Law.loss), times seeded multiplicative noise
    y = 2.1 + 40.0 * d**-0.35 + 0.15 * r**-0.6
    return r, d, y * (1 + noise * np.random.default_rng(seed).standard_normal(len(y)))


def test_fit_recovers_the_parameters_of_data_from_the_law() -> None:
    law, rms = fit(*grid(noise=0.0))
    for name, want in TRUE.as_dict().items():
        assert getattr(law, name) == pytest.approx(want, rel=1e-3), name
    assert rms < 1e-6

    noisy, rms = fit(*grid(noise=0.002, seed=1))  # 0.2 % noise, as between reruns of a short CPT
    for name, want in TRUE.as_dict().items():
        assert getattr(noisy, name) == pytest.approx(want, rel=0.1), name
    assert rms < 0.004


def test_critical_ratio() -> None:
    tokens, max_loss = 3e5, 2.9
    # by hand: room = 2.9 - 2.1 - 40 * 3e5**-0.35; r* = (0.15 / room) ** (1 / 0.6)
    room = 2.9 - 2.1 - 40 * 3e5**-0.35
    expect = (0.15 / room) ** (1 / 0.6)
    assert TRUE.critical_ratio(tokens, max_loss) == pytest.approx(expect)
    assert TRUE.loss(expect, tokens) == pytest.approx(max_loss)
    law, _ = fit(*grid(noise=0.002, seed=1))
    assert law.critical_ratio(tokens, max_loss) == pytest.approx(expect, rel=0.1)
    assert TRUE.critical_ratio(tokens, 2.2) is None  # below what any replay can reach at this budget


def test_fit_rejects_a_grid_that_cannot_determine_the_law() -> None:
    r, d, y = grid(0.0)
    with pytest.raises(ValueError, match="at least 6 points"):
        fit(r[:4], d[:4], y[:4])
    with pytest.raises(ValueError, match="two ratios"):
        fit(np.full(8, 0.1), d[:8], y[:8])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        fit(r * 2, d, y)
