"""C4 measurements (Raffel et al. 2020, section 2.2): per-line cleaning, then page-level signals.

Lines are kept only if they end in terminal punctuation (not an ellipsis), have enough words, no overlong
word, and mention neither javascript nor a cookie/terms policy. Among kept lines, "lorem ipsum" or a curly
brace condemns the whole page, and the page needs a minimum number of sentences.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from lmpipe.filters.rules import Rule
from lmpipe.filters.text import TERMINAL_PUNCTUATION, split_words

CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
LINE_END = (".", "?", "!", '"', "'")
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")

# The bound on these measurements (knob: config.C4Rules). The lorem-ipsum and curly-bracket page flags are
# on/off switches, not bounds: select applies them explicitly.
RULES = (Rule("c4", "sentences", "c4_sentences", "min", "min_sentences"),)


@dataclass(frozen=True)
class C4LineRules:
    min_words_per_line: int = 3
    max_word_length: int = 1000
    remove_citations: bool = True
    javascript: bool = True
    policy: bool = True


def _is_punct(tok: str) -> bool:
    return all(unicodedata.category(c)[0] == "P" for c in tok)


def count_sentences(line: str) -> int:
    """Sentences in one line: a new one starts at the first non-punctuation token after a full stop."""
    toks = split_words(line)
    if not toks:
        return 0
    n, seen_stop = 1, False
    for t in toks:
        stop = t in TERMINAL_PUNCTUATION
        if seen_stop and not stop and not _is_punct(t):
            n += 1
            seen_stop = False
        elif stop:
            seen_stop = True
    return n


def clean_lines(text: str, rules: C4LineRules) -> tuple[list[str], dict[str, int]]:
    """The lines C4 keeps, plus page flags: ``lorem`` / ``curly`` (first offending kept line's kind)."""
    kept: list[str] = []
    flags = {"lorem": 0, "curly": 0}
    for raw in text.splitlines():
        line = raw.strip()
        words = line.split()
        if rules.max_word_length >= 0 and any(len(w) > rules.max_word_length for w in words):
            continue
        if rules.remove_citations:
            line = CITATION.sub("", line)
        if not line.endswith(LINE_END) or line.endswith("..."):
            continue
        if len(words) < rules.min_words_per_line:
            continue
        low = line.lower()
        if "lorem ipsum" in low:
            flags["lorem"] = 1
        if rules.javascript and "javascript" in low:
            continue
        if "{" in line:
            flags["curly"] = 1
        if rules.policy and any(p in low for p in POLICY):
            continue
        kept.append(line)
    return kept, flags


def scores(text: str, rules: C4LineRules) -> dict[str, float]:
    kept, flags = clean_lines(text, rules)
    n_lines = max(len(text.splitlines()), 1)
    return {
        "c4_lorem_ipsum": flags["lorem"],
        "c4_curly_bracket": flags["curly"],
        "c4_sentences": sum(count_sentences(line) for line in kept),
        "c4_kept_line_frac": len(kept) / n_lines,
    }
