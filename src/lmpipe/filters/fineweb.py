"""FineWeb's extra heuristics (Penedo et al. 2024): line punctuation, short lines, duplicated lines, lists."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmpipe.filters.gopher import duplicate_stats
from lmpipe.filters.rules import Rule, Scores

if TYPE_CHECKING:
    from lmpipe.filters.config import FineWebRules


def _punct_applies(s: Scores, rules: FineWebRules) -> bool:
    """A page without lines is rejected as ``empty`` instead; ``line_punct_exclude_zero`` (as in datatrove)
    exempts pages where no line ends in punctuation."""
    return bool(s["fw_lines"]) and not (rules.line_punct_exclude_zero and s["fw_line_punct_ratio"] == 0)


# Bounds on these measurements (knobs: config.FineWebRules); select rejects a page without lines explicitly.
RULES = (
    Rule("fineweb", "line_punct_ratio", "fw_line_punct_ratio", "min", "min_line_punct_ratio", when=_punct_applies),
    Rule("fineweb", "short_line_ratio", "fw_short_line_ratio", "max", "max_short_line_ratio"),
    Rule("fineweb", "char_dup_ratio", "fw_char_dup_ratio", "max", "max_char_dup_ratio"),
    Rule("fineweb", "list_ratio", "fw_list_ratio", "max", "max_list_ratio"),
)


def scores(text: str, words: list[str], stop_chars: tuple[str, ...], short_line_length: int) -> dict[str, float]:
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        return {"fw_lines": 0, "fw_line_punct_ratio": 0.0, "fw_short_line_ratio": 1.0,
                "fw_char_dup_ratio": 0.0, "fw_list_ratio": 0.0}
    chars = len(text) - text.count("\n")
    return {
        "fw_lines": len(lines),
        "fw_line_punct_ratio": sum(1 for line in lines if line.endswith(stop_chars)) / len(lines),
        "fw_short_line_ratio": sum(1 for line in lines if len(line) <= short_line_length) / len(lines),
        "fw_char_dup_ratio": duplicate_stats(lines)[1] / chars if chars else 0.0,
        "fw_list_ratio": text.count("\n") / max(len(words), 1),
    }
