"""Mojibake: UTF-8 bytes that were decoded as Latin-1 or Windows-1252 ("â€™" for "’", "Ã©" for "é").

A UTF-8 lead byte (0xC2-0xF4) read as Latin-1 is one of "Â".."ô", and the continuation bytes (0x80-0xBF)
become C1 control characters (Latin-1) or the punctuation that Windows-1252 puts there. Correct text in any
language almost never has such a pair, so counting them is a precise, cheap signal.
"""

from __future__ import annotations

import re

from lmpipe.filters.rules import Rule

# Stored as ``mojibake`` by the score stage (knob: config.EncodingRules).
RULES = (Rule("encoding", "mojibake", "mojibake", "max", "max_mojibake", optional=True),)

_CP1252_HIGH = "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
MOJIBAKE = re.compile(f"[\u00c2-\u00f4][\u0080-\u00bf{_CP1252_HIGH}]+")


def mojibake_count(text: str) -> int:
    """Number of mis-decoded multi-byte sequences."""
    return sum(1 for m in MOJIBAKE.finditer(text) if _is_mojibake(m.group()))


def _is_mojibake(seq: str) -> bool:
    try:
        raw = seq.encode("cp1252")
    except UnicodeEncodeError:
        try:
            raw = seq.encode("latin-1")
        except UnicodeEncodeError:
            return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        # latin-1 maps C1 controls that cp1252 leaves undefined; try it for the whole sequence
        try:
            seq.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return False
    return True
