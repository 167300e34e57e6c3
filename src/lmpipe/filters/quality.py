"""Selection by the learned quality rater's scores (stored by ``score`` as ``q_<dimension>`` and ``quality``).

``min_quality`` is a plain bound on the combined score. ``top_percent`` is not a bound on one document:
the filter stage turns it into a per-domain cutoff from all stored scores (the score of the document at the
``100 - k`` percentile), so "the best 30 % of math" is a threshold each document can be checked against.
"""

from __future__ import annotations

import numpy as np

from lmpipe.filters.rules import Rule

SCORE = "quality"  # the weighted combination of the dimensions
PREFIX = "q_"  # per-dimension scores: q_<dimension>

# knobs: lmpipe.quality.config.QualityRules; the score exists only when filter.score.quality is enabled
RULES = (Rule("quality", "quality", SCORE, "min", "min_quality", optional=True),)


def top_percent_cutoff(values: list[float], percent: float) -> float:
    """The lowest score kept when keeping the best ``percent`` % (ties at the cutoff are all kept)."""
    arr = np.sort(np.asarray(values, dtype=float))[::-1]
    keep = max(1, int(np.ceil(len(arr) * percent / 100)))
    return float(arr[min(keep, len(arr)) - 1])
