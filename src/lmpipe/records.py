"""The checks every reader applies to decoded text before it becomes a document (files and web alike)."""

from __future__ import annotations

from lmpipe.documents import Document, Rejected
from lmpipe.ingest_config import IngestConfig, SourceConfig
from lmpipe.sources import doc_id

RAW_CAP = 16 << 20  # quarantined raw bytes kept per record; beyond this the detail says it was cut


def check_text(
    text: str, locator: str, src: SourceConfig, cfg: IngestConfig, meta: dict
) -> Document | Rejected:
    """The document, or why it is quarantined: binary (a NUL), empty, or over ``max_chars``."""
    doc = Document(doc_id(locator), text, src.domain, locator, meta)
    stripped = len(text.strip())
    if "\x00" in text:
        return Rejected(doc, "binary", "NUL character in text")
    if stripped < cfg.min_chars:
        return Rejected(doc, "empty", f"{stripped} non-space chars < min_chars={cfg.min_chars}")
    if len(text) > cfg.max_chars:
        return Rejected(doc, "oversize", f"{len(text)} chars > max_chars={cfg.max_chars}")
    return doc
