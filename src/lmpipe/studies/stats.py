"""Statistics of a study: per-arm means with 95 % intervals over seeds, paired differences, claim verdicts.

Intervals are two-sided 95 % Student-t intervals, mean ± t(0.975, n−1) · s/√n with s the sample standard
deviation (n−1 denominator); paired differences take the seeds both arms finished, so seed-to-seed noise shared
by the arms (data order, init) cancels. A percentile bootstrap of the mean is the alternative (``interval:
bootstrap``); with the 2–5 seeds a study affords it is narrower than t and over-confident, hence not the default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

LEVEL = 0.95
BOOTSTRAP_SAMPLES = 10_000
Method = Literal["t", "bootstrap"]
Verdict = Literal["holds", "contradicted", "inconclusive"]


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float | None  # None when fewer than two values: no interval, any claim on it is inconclusive
    hi: float | None
    n: int
    sd: float | None
    method: str

    def as_dict(self) -> dict:
        return asdict(self)


def t_quantile(df: int, level: float = LEVEL) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def interval(values: list[float], method: Method = "t", level: float = LEVEL, seed: int = 0) -> Interval:
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("no values")
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, None, None, n, None, method)
    sd = float(x.std(ddof=1))
    if method == "t":
        half = t_quantile(n - 1, level) * sd / math.sqrt(n)
        return Interval(mean, mean - half, mean + half, n, sd, f"student-t {level:.0%}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(BOOTSTRAP_SAMPLES, n))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(
        mean, float(lo), float(hi), n, sd, f"percentile bootstrap {level:.0%} ({BOOTSTRAP_SAMPLES})"
    )


def paired_differences(a: dict[int, float], b: dict[int, float]) -> dict[int, float]:
    """a − b for every seed both have."""
    return {s: a[s] - b[s] for s in sorted(a.keys() & b.keys())}


def verdict(diff: Interval, op: str) -> Verdict:
    """For ``a < b`` (diff = a − b) the claim holds when the whole interval is below zero, is contradicted
    when it is above zero, and is inconclusive when it spans zero (or there is no interval)."""
    if diff.lo is None or diff.hi is None:
        return "inconclusive"
    below, above = diff.hi < 0, diff.lo > 0
    if op == "<":
        return "holds" if below else "contradicted" if above else "inconclusive"
    if op == ">":
        return "holds" if above else "contradicted" if below else "inconclusive"
    raise ValueError(f"unknown ordering {op!r}")


def standardized(diff: Interval) -> float | None:
    """Cohen's d_z of paired differences: mean / sd (None without spread)."""
    return diff.mean / diff.sd if diff.sd else None
