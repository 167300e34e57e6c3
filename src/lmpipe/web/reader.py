"""``format: warc | wet | html`` sources → ``Document`` / ``Rejected``, one record at a time.

Per record, in order (the first that applies decides; every record ends kept or quarantined, so
``in = kept + rejected`` holds per file):

================= =================================================================================
reason            when
================= =================================================================================
truncated,        the WARC record itself is unusable (``lmpipe.web.warc``)
malformed_record
url_blocklist     the URL's host is a blocklisted domain or under one (detail: host and entry)
url_banned_word   a banned word is a token of the URL (detail: the word)
http_status       the HTTP status is not 2xx (redirects, errors: their bodies are boilerplate)
not_html          the payload type (Common Crawl's identified type, else HTTP's) is not in
                  ``web.content_types`` (WET records are text already)
oversize          payload over ``web.max_html_bytes``; or text over ``ingest.max_chars``
binary,           the payload is binary, or no charset explains it with confidence
undecodable       (``lmpipe.decoding``: BOM, UTF-8, HTTP charset or ``<meta>`` charset, detection)
extraction_error  the extractor raised
empty_extraction  the extractor found no main text
empty             the main text is shorter than ``ingest.min_chars``
================= =================================================================================

Kept documents carry ``meta``: ``url``, ``date`` (WARC-Date), ``content_type``, ``charset`` (the encoding
used), ``warc_record_id``, ``http_status``, plus ``html`` when ``web.keep_html`` is set.
"""

from __future__ import annotations

import functools
import mimetypes
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lmpipe.decoding import UndecodableError, decode_text
from lmpipe.documents import Document, Rejected
from lmpipe.records import RAW_CAP, check_text
from lmpipe.web.extract import Extract, make_extractor
from lmpipe.web.urls import UrlFilter
from lmpipe.web.warc import RawRecord, iter_records

if TYPE_CHECKING:
    from lmpipe.ingest_config import IngestConfig
    from lmpipe.sources import Unit
    from lmpipe.web.config import UrlFilterConfig

WEB_FORMATS = ("warc", "wet", "html")
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]{1,40})""", re.I)
_SNIFF_BYTES = 4096  # browsers look for <meta charset> in the first 1024 bytes; pages often put it later


def meta_charset(html: bytes) -> str | None:
    """The charset an HTML page declares in a ``<meta>`` tag near its start, if any."""
    m = _META_CHARSET.search(html[:_SNIFF_BYTES])
    return m.group(1).decode("ascii") if m else None


@functools.cache
def _url_filter(cfg_json: str) -> UrlFilter:
    from lmpipe.web.config import UrlFilterConfig

    return UrlFilter.from_config(UrlFilterConfig.model_validate_json(cfg_json))


@functools.cache
def _extractor(cfg_json: str) -> Extract:
    from lmpipe.web.config import WebConfig

    return make_extractor(WebConfig.model_validate_json(cfg_json))


def url_filter_for(cfg: UrlFilterConfig) -> UrlFilter | None:
    return _url_filter(cfg.model_dump_json()) if cfg.enabled else None


def _html_files(unit: Unit) -> Iterator[RawRecord]:
    from lmpipe.streams import read_all

    payload, fault = read_all(unit)  # a cut .html.gz is 'truncated' / 'corrupt' like any other gzip input
    mime = mimetypes.guess_type(unit.path.removesuffix(".gz"))[0]
    yield RawRecord(
        1,
        0,
        content_type=mime,
        payload=payload,
        problem=(fault.reason, fault.detail) if fault is not None else None,
    )


def _decide(
    rec: RawRecord,
    unit: Unit,
    doc: Document,
    cfg: IngestConfig,
    urls: UrlFilter | None,
    extract: Extract | None,
) -> Document | Rejected:
    w, fmt = cfg.web, unit.format

    raw = rec.payload[:RAW_CAP] if w.keep_html else None
    if rec.problem is not None:
        return Rejected(doc, *rec.problem, rec.payload[:RAW_CAP])
    if urls is not None and (hit := urls.check(rec.url)) is not None:
        return Rejected(doc, *hit, raw)
    if rec.http_status is not None and not 200 <= rec.http_status < 300:
        return Rejected(doc, "http_status", f"HTTP {rec.http_status}", raw)
    if fmt != "wet":
        kind = (rec.identified_type or rec.content_type or "").lower()
        if kind not in w.content_types:
            return Rejected(doc, "not_html", f"content type {kind or 'unknown'!r}", raw)
    if len(rec.payload) > w.max_html_bytes:
        return Rejected(
            doc, "oversize", f"{len(rec.payload)} payload bytes > max_html_bytes={w.max_html_bytes}", raw
        )
    declared = rec.charset or (meta_charset(rec.payload) if fmt != "wet" else "utf-8")
    try:
        dec = decode_text(rec.payload, declared, min_confidence=cfg.min_encoding_confidence)
    except UndecodableError as e:  # reason 'binary' or 'undecodable'
        return Rejected(doc, e.reason, e.detail, rec.payload[:RAW_CAP])
    doc.meta["charset"] = dec.encoding
    if extract is None:  # WET: the crawler already extracted the text
        text = dec.text
    else:
        try:
            text = extract(dec.text)
        except Exception as e:  # noqa: BLE001 - any extractor failure quarantines this page only
            return Rejected(doc, "extraction_error", f"{w.extractor}: {type(e).__name__}: {e}"[:500], raw)
        if not text.strip():
            return Rejected(
                doc, "empty_extraction", f"{w.extractor} found no main text in {len(rec.payload)} bytes", raw
            )
        if w.keep_html:
            doc.meta["html"] = dec.text
    return check_text(text, doc.source, unit.source, cfg, doc.meta)


def read_web(unit: Unit, cfg: IngestConfig) -> Iterator[Document | Rejected]:
    """Stream one WARC / WET / HTML file as documents and quarantined records."""
    from lmpipe.sources import doc_id, printable
    from lmpipe.streams import open_raw

    w = cfg.web
    urls = url_filter_for(w.url_filter)
    extract = _extractor(w.model_dump_json()) if unit.format != "wet" else None
    if unit.format == "html":
        records = _html_files(unit)
    else:
        f = open_raw(unit)
        records = _closing(f, iter_records(f, unit.format, w.verify_digests))
    path = printable(unit.path)
    for rec in records:
        locator = path if unit.format == "html" else f"{path}#R{rec.n}"
        meta: dict[str, Any] = {
            k: v
            for k, v in (
                ("url", rec.url),
                ("date", rec.date),
                ("content_type", rec.content_type),
                ("warc_record_id", rec.record_id),
                ("http_status", rec.http_status),
            )
            if v is not None
        }
        meta.update(rec.extra)
        doc = Document(doc_id(locator), "", unit.source.domain, locator, meta)
        yield _decide(rec, unit, doc, cfg, urls, extract)


def _closing(f, it: Iterator[RawRecord]) -> Iterator[RawRecord]:
    with f:
        yield from it
