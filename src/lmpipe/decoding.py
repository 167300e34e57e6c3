"""Bytes → text, once, for every reader: BOM, then UTF-8 (the fast path), then a declared charset, then detection.

``decode_text`` either returns the text with the encoding it used and how sure it is, or raises
``UndecodableError`` with a machine-readable reason (``binary`` or ``undecodable``) and a detail that says why.
Order, and why:

1. A byte-order mark names the encoding outright (it wins over a declared charset, as in the WHATWG
   Encoding Standard); UTF-16/32 text is full of NUL bytes, so this comes before the binary check.
2. NUL bytes, or many C0 control bytes, mean a binary file or field (images, archives, executables).
3. Strict UTF-8: almost all input takes this path. Legacy text is practically never valid UTF-8 once it
   holds any byte ≥ 0x80, so a successful decode is taken as certain.
4. UTF-8 with damage (more valid multi-byte characters than invalid sequences) is refused: read in any
   other encoding it would be mojibake throughout.
5. A declared charset (an HTTP header, a ``<meta>`` tag, or what earlier lines of the same file used),
   if it decodes strictly.
6. ``charset-normalizer``. Its guess is accepted only when it is not messy and a language is recognised in
   the decoded text; too little text (a few bytes) or a mess is quarantined rather than guessed.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from lmpipe.ingest_config import MIN_ENCODING_CONFIDENCE

# BOMs longest first: the UTF-32-LE mark starts with the UTF-16-LE one
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_BOM_FIRST = frozenset(bom[0] for bom, _ in _BOMS)
BINARY_HEAD = 8192  # bytes inspected for the binary verdict
BINARY_CONTROL_FRAC = 0.1  # C0 controls other than \t\n\v\f\r above this share of the head: binary
_CONTROL = bytes(range(0x00, 0x09)) + bytes(range(0x0E, 0x20))
# WHATWG decodes the latin-1 and ascii labels as windows-1252, the most common legacy encoding on the web;
# charset-normalizer barely tells Latin code pages apart (measured: French and Portuguese windows-1252
# text picked as cp1257/cp1250 at chaos 0.00 against 0.06-0.07 for cp1252), so near ties go to cp1252.
CP1252_MARGIN = 0.1


class UndecodableError(ValueError):
    """Bytes that cannot be turned into text with confidence. ``reason`` is ``binary`` or ``undecodable``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    encoding: str  # Python codec name: 'utf-8', 'utf-16-le', 'cp1252', ...
    confidence: float  # 1.0 for BOM, UTF-8 and a declared charset; 1 - chaos for a detected one


def codec_name(encoding: str) -> str:
    """The canonical Python name of an encoding label ('latin_1' → 'iso8859-1'); LookupError if unknown."""
    return codecs.lookup(encoding).name


def looks_binary(raw: bytes) -> bool:
    """NUL bytes, or mostly control bytes, in the first ``BINARY_HEAD`` bytes."""
    if raw.find(b"\x00", 0, BINARY_HEAD) >= 0:
        return True
    if len(raw) <= 32:  # too short for a share to mean anything
        return False
    head = raw[:BINARY_HEAD]
    controls = len(head) - len(head.translate(None, _CONTROL))  # deleting is the fastest count of a byte set
    return controls > BINARY_CONTROL_FRAC * len(head)


def decode_text(
    raw: bytes, declared: str | None = None, *, min_confidence: float = MIN_ENCODING_CONFIDENCE
) -> Decoded:
    """Decode ``raw`` (see the module docstring for the order); raise ``UndecodableError`` if not confident."""
    if raw[:1] and raw[0] in _BOM_FIRST:
        for bom, enc in _BOMS:
            if raw.startswith(bom):
                try:
                    text = raw[len(bom) :].decode(enc)
                except UnicodeDecodeError as e:
                    raise UndecodableError(
                        "undecodable", f"{enc} byte-order mark, but byte {e.start + len(bom)}: {e.reason}"
                    ) from None
                if "\x00" in text[:BINARY_HEAD]:  # a binary file that happens to start like a BOM
                    raise UndecodableError("binary", f"NUL character after a {enc} byte-order mark")
                return Decoded(text, enc, 1.0)
    if looks_binary(raw):
        nul = raw.find(b"\x00", 0, BINARY_HEAD)
        why = f"NUL byte at {nul}" if nul >= 0 else "mostly control bytes"
        raise UndecodableError("binary", why)
    try:
        return Decoded(raw.decode("utf-8"), "utf-8", 1.0)
    except UnicodeDecodeError as e:
        utf8_error = f"not UTF-8 (byte {e.start}: {e.reason})"
    damaged = _damaged_utf8(raw)
    if damaged:  # another code page would turn every good multi-byte character into mojibake
        raise UndecodableError("undecodable", f"{utf8_error}; {damaged}")
    if declared:
        try:
            enc = codec_name(declared)
            return Decoded(raw.decode(enc), enc, 1.0)
        except (LookupError, UnicodeDecodeError):
            pass  # a wrong or unknown declaration is common; detection decides
    return _detect(raw, utf8_error, min_confidence)


def _damaged_utf8(raw: bytes) -> str:
    """Why ``raw`` is UTF-8 with damage ('' if it is not): more valid multi-byte characters than invalid sequences.

    Legacy single- and double-byte text forms valid UTF-8 multi-byte sequences only by rare accident.
    """
    text = raw.decode("utf-8", "replace")
    invalid = text.count("\ufffd") - raw.count("\ufffd".encode())
    multibyte = len(text) - len(text.encode("ascii", "ignore")) - invalid
    if multibyte > invalid:
        return f"damaged UTF-8 ({multibyte} valid multi-byte characters, {invalid} invalid sequences)"
    return ""


def _detect(raw: bytes, utf8_error: str, min_confidence: float) -> Decoded:
    from charset_normalizer import from_bytes

    matches = list(from_bytes(raw))
    if not matches:
        raise UndecodableError("undecodable", f"{utf8_error}; no encoding decodes it without mess")
    best = matches[0]
    cp1252 = next((m for m in matches if m.encoding == "cp1252"), None)
    if cp1252 is not None and cp1252.chaos <= best.chaos + CP1252_MARGIN:
        best = cp1252
    enc = codec_name(best.encoding)
    confidence = round(1.0 - best.chaos, 3)
    if not best.coherence:
        raise UndecodableError(
            "undecodable",
            f"{utf8_error}; best guess {enc} but no language recognised in {len(raw)} bytes "
            f"(confidence too low to trust)",
        )
    if confidence < min_confidence:
        raise UndecodableError(
            "undecodable", f"{utf8_error}; best guess {enc} at confidence {confidence} < {min_confidence}"
        )
    try:
        text = raw.decode(enc)
    except UnicodeDecodeError as e:  # the detector works on chunks; the whole must decode too
        raise UndecodableError(
            "undecodable", f"{utf8_error}; {enc} fails at byte {e.start}: {e.reason}"
        ) from None
    if enc != "cp1252" and "cp1252" in best.could_be_from_charset:
        # of the code pages giving the same text, name windows-1252 (German latin-1 text comes back as
        # cp1250, whose letters coincide there)
        try:
            if raw.decode("cp1252") == text:
                enc = "cp1252"
        except UnicodeDecodeError:
            pass
    return Decoded(text, enc, confidence)
