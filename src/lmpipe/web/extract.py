"""HTML → main text: ``trafilatura`` (default, FineWeb's extractor) or ``resiliparse`` (fast).

Both are deterministic functions of the page alone: trafilatura's cross-page dedup cache is off by default
and its signal-based timeout is disabled, so output never depends on worker scheduling or machine load
(a pathological page is bounded by ``max_html_bytes`` instead).
"""

from __future__ import annotations

from collections.abc import Callable

from lmpipe.web.config import WebConfig

Extract = Callable[[str], str]


def _trafilatura(cfg: WebConfig) -> Extract:
    import trafilatura
    from trafilatura.settings import use_config

    conf = use_config()
    conf.set("DEFAULT", "EXTRACTION_TIMEOUT", "0")
    o = cfg.trafilatura

    def extract(html: str) -> str:
        return (
            trafilatura.extract(
                html,
                output_format="txt",
                favor_precision=o.favor_precision,
                favor_recall=o.favor_recall,
                include_comments=o.include_comments,
                include_tables=o.include_tables,
                deduplicate=o.deduplicate,
                include_images=False,
                include_links=False,
                include_formatting=False,
                with_metadata=False,
                config=conf,
            )
            or ""
        )

    return extract


def _resiliparse(cfg: WebConfig) -> Extract:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    o = cfg.resiliparse.model_dump()

    def extract(html: str) -> str:
        return extract_plain_text(HTMLTree.parse(html), **o).strip()

    return extract


def make_extractor(cfg: WebConfig) -> Extract:
    """``extract(html) -> text`` ('' when the page has no main text) for ``cfg.extractor``."""
    return {"trafilatura": _trafilatura, "resiliparse": _resiliparse}[cfg.extractor](cfg)
