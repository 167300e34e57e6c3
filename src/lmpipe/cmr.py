"""Replay-ratio scaling law for continual pretraining (CMR-style): old-domain loss against replay ratio and tokens.

The law fitted here, for the loss on the replayed (general) domains after CPT of ``d`` tokens with a share ``r``
of them replayed:

    L(r, d) = E + A * d**(-alpha) + B * r**(-beta)          (E, A, B, alpha, beta > 0)

The token term falls as training goes on; the ratio term is the forgetting that less replay buys. Given a
budget ``d`` and the old-domain loss one accepts (e.g. the parent's loss plus a tolerance), the **critical
ratio** is the smallest ``r`` meeting it, in closed form: ``r* = (B / (L_max - E - A d**-alpha))**(1/beta)``.
The points come from a grid of short CPT runs over (ratio, tokens); this module only fits and solves.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

NAMES = ("E", "A", "alpha", "B", "beta")


@dataclass(frozen=True)
class Law:
    E: float
    A: float
    alpha: float
    B: float
    beta: float

    def loss(self, r: np.ndarray | float, d: np.ndarray | float) -> np.ndarray | float:
        return self.E + self.A * np.power(d, -self.alpha) + self.B * np.power(r, -self.beta)

    def critical_ratio(self, tokens: float, max_loss: float) -> float | None:
        """Smallest replay ratio whose predicted loss is at most ``max_loss`` at ``tokens``; None if no r <= 1 is."""
        room = max_loss - self.E - self.A * tokens ** (-self.alpha)
        if room <= 0:
            return None
        r = (self.B / room) ** (1.0 / self.beta)
        return r if r <= 1.0 else None

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def fit(ratios: np.ndarray, tokens: np.ndarray, losses: np.ndarray) -> tuple[Law, float]:
    """Least squares on relative residuals (losses span a range; each point counts alike) → (law, RMS rel. error).

    Parameters are optimised in log space (all positive), started from a coarse grid over the exponents with
    E, A, B solved linearly for each: the fit does not depend on a hand-picked starting point.
    """
    from scipy.optimize import least_squares

    r, d, y = (np.asarray(v, dtype=float) for v in (ratios, tokens, losses))
    if not (r.shape == d.shape == y.shape) or r.ndim != 1:
        raise ValueError("ratios, tokens and losses must be 1-D arrays of one length")
    if len(y) < len(NAMES) + 1:
        raise ValueError(f"need at least {len(NAMES) + 1} points to fit {len(NAMES)} parameters, got {len(y)}")
    if np.any((r <= 0) | (r > 1)) or np.any(d <= 0) or not np.all(np.isfinite(y)):
        raise ValueError("ratios must lie in (0, 1], tokens be positive and losses finite")
    if len(set(r)) < 2 or len(set(d)) < 2:
        raise ValueError("the grid needs at least two ratios and two token counts")

    best: tuple[float, np.ndarray] | None = None
    for alpha in (0.1, 0.3, 0.6, 1.0):
        for beta in (0.1, 0.3, 0.6, 1.0):
            cols = np.stack([np.ones_like(y), d**-alpha, r**-beta], axis=1)
            coef, *_ = np.linalg.lstsq(cols / y[:, None], np.ones_like(y), rcond=None)
            if np.all(coef > 0):
                err = float(np.sum((cols @ coef / y - 1) ** 2))
                if best is None or err < best[0]:
                    best = (err, np.array([coef[0], coef[1], alpha, coef[2], beta]))
    start = best[1] if best is not None else np.array([0.5 * y.min(), 1.0, 0.3, 0.1, 0.3])

    def residuals(logp: np.ndarray) -> np.ndarray:
        return Law(*np.exp(logp)).loss(r, d) / y - 1

    sol = least_squares(residuals, np.log(start), method="trf", x_scale="jac", max_nfev=5000)
    law = Law(*map(float, np.exp(sol.x)))
    return law, math.sqrt(float(np.mean(residuals(sol.x) ** 2)))
