"""A threshold rule, declared once beside the measurement it bounds: (family, rule, score key, operator, knob).

Each family module (:mod:`.gopher`, :mod:`.c4`, :mod:`.fineweb`, :mod:`.language`, :mod:`.toxicity`,
:mod:`.perplexity`, :mod:`.encoding`) holds a ``RULES`` table; :mod:`.select` applies every table to the stored
scores and :mod:`.plots` draws the same bounds on the histograms, so a new bound is one ``Rule`` line plus
its knob on the family's rules class in :mod:`lmpipe.config`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel

Scores = dict[str, Any]


class Failure(BaseModel):
    family: str
    rule: str
    detail: str


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def bound_failure(
    family: str, rule: str, op: Literal["min", "max"], value: float | None, limit: float | None
) -> Failure | None:
    """The failure of ``value`` against a lower (``min``) or upper (``max``) bound; a bound itself passes."""
    if limit is None or value is None:
        return None
    if op == "min" and value < limit:
        return Failure(family=family, rule=rule, detail=f"{rule}={_fmt(value)} < {_fmt(limit)}")
    if op == "max" and value > limit:
        return Failure(family=family, rule=rule, detail=f"{rule}={_fmt(value)} > {_fmt(limit)}")
    return None


class Rule(NamedTuple):
    """One bound: ``scores[score]`` against ``getattr(<family's rules>, knob)``.

    A knob holding ``{n: limit}`` (Gopher's per-n-gram limits) gives one bound per ``n``; ``rule`` and
    ``score`` then contain ``{n}``. ``optional``: the score may be absent (it comes from a model or an option
    that is off, or the dict holds only :meth:`Scorer.heuristics`) and the rule then does not apply; a
    missing required score is a ``KeyError``, never a silent pass. ``when(scores, family_rules)``: the rule
    applies only where the measurement means something (no mean word length for a page without words).
    """

    family: str  # attribute of :class:`lmpipe.filters.config.RuleSet`; ``None`` there switches the family off
    rule: str  # the name in rejection details and ``meta["filter_failed"]``
    score: str  # key in ``meta["scores"]``
    op: Literal["min", "max"]
    knob: str  # attribute of the family's rules class; ``None`` switches this bound off
    optional: bool = False
    when: Callable[[Scores, Any], bool] | None = None

    def bounds(self, family_rules: Any) -> Iterator[tuple[str, str, float]]:
        """(rule, score key, limit) for each configured bound of this rule."""
        limit = getattr(family_rules, self.knob)
        if isinstance(limit, dict):
            for n, lim in sorted(limit.items()):
                yield self.rule.format(n=n), self.score.format(n=n), lim
        elif limit is not None:
            yield self.rule, self.score, limit

    def failures(self, s: Scores, family_rules: Any) -> Iterator[Failure]:
        if self.when is not None and not self.when(s, family_rules):
            return
        for rule, key, limit in self.bounds(family_rules):
            value = s.get(key) if self.optional else s[key]
            if (f := bound_failure(self.family, rule, self.op, value, limit)) is not None:
                yield f

    def bounds_score(self, key: str) -> bool:
        """Whether this rule bounds score ``key`` (for a per-n rule: any ``n``)."""
        return _pattern(self.score).fullmatch(key) is not None

    def limit_for(self, key: str, family_rules: Any) -> float | None:
        """This rule's bound on score ``key`` (one it :meth:`bounds_score`), ``None`` where unset."""
        limit = getattr(family_rules, self.knob)
        if isinstance(limit, dict):
            return limit.get(int(_pattern(self.score).fullmatch(key).group(1)))
        return limit


@lru_cache
def _pattern(score: str) -> re.Pattern[str]:
    head, per_n, tail = score.partition("{n}")
    return re.compile(re.escape(head) + (r"(\d+)" if per_n else "") + re.escape(tail))
