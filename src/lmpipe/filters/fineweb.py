"""FineWeb's extra heuristics (Penedo et al. 2024): line punctuation, short lines, duplicated lines, lists."""

from __future__ import annotations

from lmpipe.filters.gopher import duplicate_stats


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
