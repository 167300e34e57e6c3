"""Bytes → text with the encoding named: BOM first, then the declared charset, then detection.

``decode_text`` never guesses silently: the result says which encoding was used and how sure it is
(1.0 for a BOM, a declared charset that decodes, or valid UTF-8; ``1 - chaos`` from ``charset-normalizer``
otherwise), and bytes that no encoding explains raise ``UndecodableError`` with the reason, so callers can
quarantine the record.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

# longest first: the UTF-32 LE BOM starts with the UTF-16 LE one
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    encoding: str  # Python codec name, e.g. 'utf-8', 'cp1252'
    confidence: float  # 0..1


class UndecodableError(ValueError):
    """No encoding explains the bytes; ``reason`` says why (for the quarantine's detail)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    try:
        return codecs.lookup(label.strip().strip("\"'")).name
    except LookupError:
        return None


def decode_text(raw: bytes, declared: str | None = None) -> Decoded:
    """Decode ``raw``: a BOM wins, then ``declared`` (HTTP or ``<meta>`` charset) if it decodes strictly,
    then UTF-8, then ``charset-normalizer``'s best guess. Raises ``UndecodableError`` otherwise."""
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            try:
                return Decoded(raw.decode(codec), codec, 1.0)
            except UnicodeDecodeError as e:
                raise UndecodableError(f"{codec} BOM but invalid {codec} at byte {e.start}") from None
    codec = _codec(declared)
    if codec is not None:
        try:
            return Decoded(raw.decode(codec), codec, 1.0)
        except UnicodeDecodeError:
            pass  # a wrong declaration is common on the web: detect instead
    nul = raw.find(b"\x00")
    if nul >= 0:  # no BOM and no UTF-16/32 declaration that decodes: binary, not text
        raise UndecodableError(f"binary: NUL byte at {nul}")
    try:
        return Decoded(raw.decode("utf-8"), "utf-8", 1.0)
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    if best is None:
        got = f"declared {declared!r} does not decode; " if declared else ""
        raise UndecodableError(f"{got}no charset explains the bytes (charset-normalizer found none)")
    return Decoded(str(best), _codec(best.encoding) or best.encoding, round(1.0 - float(best.chaos), 4))
