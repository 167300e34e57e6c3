"""Typed config of web ingestion (``ingest.web`` in params.yaml): extractor, its options, URL filter."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmpipe.sections import Section


class TrafilaturaOptions(Section):
    """Passed to ``trafilatura.extract`` (FineWeb's extractor; its defaults here are FineWeb's choices)."""

    favor_precision: bool = Field(True, description="less text, less boilerplate (FineWeb: true)")
    favor_recall: bool = False
    include_comments: bool = Field(False, description="reader comments below an article")
    include_tables: bool = True
    deduplicate: bool = Field(
        False,
        description="trafilatura's cross-page cache: off, so output never depends on which pages a "
        "worker saw before (near-dup removal is the dedup stage's job)",
    )


class ResiliparseOptions(Section):
    """Passed to ``resiliparse.extract.html2text.extract_plain_text`` (the fast extractor)."""

    main_content: bool = Field(
        True, description="drop navigation, footers, sidebars (boilerplate heuristics)"
    )
    list_bullets: bool = True
    alt_texts: bool = False
    links: bool = False
    form_fields: bool = False
    noscript: bool = False
    comments: bool = False
    preserve_formatting: bool = True


class UrlFilterConfig(Section):
    """Drop records by URL before extraction (C4 / FineWeb practice). Files: one entry per line, ``#`` comments.

    A blocklisted domain also blocks its subdomains (``bad.com`` blocks ``www.bad.com``); public suffixes
    come from tldextract's bundled Public Suffix List snapshot (never downloaded). Banned words match whole
    tokens of the URL split at non-alphanumerics (``casino`` drops ``/casino-bonus``, not ``/occasion``).
    """

    enabled: bool = True
    blocklist_files: list[str] | None = Field(None, description="domain lists; null = the shipped default")
    banned_words_files: list[str] | None = Field(
        None, description="URL word lists; null = the shipped default"
    )
    private_suffixes: bool = Field(
        False,
        description="treat PSL private suffixes (github.io, blogspot.com) as public: each user site is "
        "then its own registered domain",
    )


class WebConfig(Section):
    """How ``format: warc|wet|html`` sources become documents (see ``lmpipe.web``)."""

    extractor: Literal["trafilatura", "resiliparse"] = "trafilatura"
    trafilatura: TrafilaturaOptions = TrafilaturaOptions()
    resiliparse: ResiliparseOptions = ResiliparseOptions()
    content_types: list[str] = Field(
        default_factory=lambda: ["text/html", "application/xhtml+xml"],
        description="payload types extracted; others are quarantined as 'not_html'",
    )
    max_html_bytes: int = Field(4 << 20, ge=1, description="larger payloads are quarantined as 'oversize'")
    verify_digests: bool = Field(
        True, description="check WARC-Block-Digest where present ('malformed_record')"
    )
    keep_html: bool = Field(
        False, description="keep the raw payload: meta.html on kept docs, raw on rejected"
    )
    url_filter: UrlFilterConfig = UrlFilterConfig()
