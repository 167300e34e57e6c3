"""A small crawl as Common Crawl stores it: one gzipped WARC of HTML pages, written with ``fastwarc``.

Each article (a standard-library docstring not used as prose) sits inside realistic page furniture:
navigation, a cookie banner, ads, a "most read" sidebar, a newsletter box and a footer, so the extractor
has boilerplate to remove. Pages come in UTF-8, in windows-1252 declared by HTTP, and in windows-1252
declared only by a ``<meta>`` tag. Planted records that ingestion must quarantine, one kind each:
non-HTML payloads, an HTTP error and a redirect, a page with no main text, binary bytes, a blocklisted
domain, a banned URL word, a corrupted block digest, HTTP headers that do not parse, and a record the
file ends inside. Request and metadata records are interleaved as in a real crawl (not documents).
"""

from __future__ import annotations

import gzip
import html
import io
import random
import uuid
from collections import Counter
from pathlib import Path

SITES = [
    "news.riverbend-gazette.com",
    "www.coastline-weekly.co.uk",
    "blog.tinkerworks.org",
    "www.hilltop-courier.net",
    "journal.meadowlark.io",
]
NAV = [
    "Home",
    "World",
    "Local",
    "Business",
    "Technology",
    "Science",
    "Opinion",
    "Sport",
    "Culture",
    "Weather",
]
ADS = [
    "Refinance your home today - rates from 3.9%",
    "Top 10 gadgets everyone is buying this winter",
    "You won't believe these holiday deals",
    "Learn a language in 3 weeks - try it free",
]
DATE = "2024-05-{day:02d}T{hour:02d}:{minute:02d}:00Z"


def title_of(locator: str) -> str:
    """'json/decoder.py:JSONDecoder' -> 'Decoder Jsondecoder'; module docstrings get the module name."""
    path, _, name = locator.rpartition(":")
    stem = path.rsplit("/", 1)[-1].removesuffix(".py")
    return (stem if name == "<module>" else f"{stem} {name}").replace("_", " ").strip().title()


def web_article_like(doc: str, min_words: int = 80, min_sentences: int = 5, max_symbols: float = 0.1) -> bool:
    """Long, sentence-rich docstrings with little code punctuation: text that web-prose rules (Gopher's
    alphabetic-word ratio counts quotes and brackets as words, C4 wants sentences) can accept."""
    words = len(doc.split())
    symbols = sum(doc.count(c) for c in "'\"()*=[]_:-/")
    return (
        words >= min_words
        and doc.count(". ") + doc.count(".\n") >= min_sentences
        and not any(c in doc for c in "{}`>")
        and symbols <= max_symbols * words
    )


def _paragraphs(doc: str) -> list[str]:
    return [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]


def page(title: str, paragraphs: list[str], rng: random.Random, meta_charset: str = "utf-8") -> str:
    """One article page; only the ``<h1>`` and the ``<p>`` inside ``<article>`` are main text."""
    nav = "".join(f'<li><a href="/{n.lower()}">{n}</a></li>' for n in NAV)
    most_read = "".join(
        f'<li><a href="/story/{rng.randrange(10**6)}">{html.escape(a)}</a></li>' for a in rng.sample(ADS, 3)
    )
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    ad = html.escape(rng.choice(ADS))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="{meta_charset}"><title>{html.escape(title)} | Gazette</title>
<script>window.dataLayer=[];function gtag(){{dataLayer.push(arguments)}}</script>
<style>.cookie{{position:fixed}}</style></head>
<body>
<div class="cookie-banner" id="cookie-consent">We use cookies to improve your experience. By continuing to browse
you agree to our use of cookies. <button>Accept all cookies</button> <a href="/privacy">Manage preferences</a></div>
<header><a class="logo" href="/">The Gazette</a><nav class="main-nav"><ul>{nav}</ul></nav>
<form class="search"><input name="q" placeholder="Search"></form></header>
<div class="ad ad-top">Advertisement: {ad}</div>
<main><article>
<h1>{html.escape(title)}</h1>
<div class="byline">By Staff Writer | Share on Facebook | Share on X</div>
{body}
</article>
<aside class="sidebar"><h3>Most read</h3><ul>{most_read}</ul>
<div class="ad">Sponsored: {html.escape(rng.choice(ADS))}</div></aside></main>
<div class="newsletter">Sign up for our newsletter to get the latest stories in your inbox. <input type="email">
<button>Subscribe</button></div>
<footer><ul><li><a href="/about">About us</a></li><li><a href="/contact">Contact</a></li>
<li><a href="/terms">Terms of use</a></li><li><a href="/privacy">Privacy policy</a></li></ul>
<p>&copy; 2024 The Gazette Media Group. All rights reserved.</p></footer>
</body></html>
"""


def http_response(body: bytes, content_type: str, status: str = "200 OK", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode("latin-1") + body


def warc_record(
    kind: str,
    url: str | None,
    date: str,
    block: bytes,
    rng: random.Random,
    content_type: str = "application/http; msgtype=response",
    headers: dict[str, str] | None = None,
    digest: bool = True,
) -> bytes:
    """One WARC record (block digest included) as bytes, written by fastwarc."""
    from fastwarc.warc import WarcRecord, WarcRecordType

    rec = WarcRecord()
    rec.init_headers(
        getattr(WarcRecordType, kind), record_urn=f"uuid:{uuid.UUID(int=rng.getrandbits(128))}".encode()
    )
    rec.headers["WARC-Date"] = date
    if url is not None:
        rec.headers["WARC-Target-URI"] = url
    rec.headers["Content-Type"] = content_type
    for k, v in (headers or {}).items():
        rec.headers[k] = v
    rec.set_bytes_content(block)
    out = io.BytesIO()
    rec.write(out, checksum_data=digest)
    return out.getvalue()


def _member(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # one gzip member per record, as Common Crawl writes them


def write_crawl(path: str | Path, articles: list[tuple[str, str]], seed: int) -> dict:
    """Write ``path`` (.warc.gz); ``articles`` are ``(title, text)``. Returns what was planted."""
    rng = random.Random(f"{seed}-web")
    planted: Counter[str] = Counter()
    out: list[bytes] = []
    minute = iter(range(10**6))

    def date() -> str:
        m = next(minute)
        return DATE.format(day=1 + m // 600 % 28, hour=m // 60 % 10, minute=m % 60)

    def response(url: str, block: bytes, **kw) -> None:
        d = date()
        req = f"GET /{url.split('/', 3)[-1]} HTTP/1.1\r\nHost: {url.split('/')[2]}\r\n\r\n".encode()
        out.append(_member(warc_record("request", url, d, req, rng, "application/http; msgtype=request")))
        out.append(_member(warc_record("response", url, d, block, rng, **kw)))

    out.append(
        _member(
            warc_record(
                "warcinfo", None, date(), b"software: lmpipe demo\r\n", rng, "application/warc-fields"
            )
        )
    )
    for i, (title, text) in enumerate(articles):
        site = SITES[i % len(SITES)]
        slug = "-".join(title.lower().replace(".", " ").replace(":", " ").split())[:60]
        url = f"https://{site}/2024/05/{slug}-{i}.html"
        paras = _paragraphs(text)
        style = i % 5
        if style == 3:  # windows-1252 declared by HTTP (and a wrong <meta>): HTTP wins
            body = page(title, paras, rng, "utf-8").encode("cp1252", "replace")
            response(url, http_response(body, "text/html; charset=windows-1252"))
        elif style == 4:  # windows-1252 declared only in <meta>
            body = page(title, paras, rng, "windows-1252").encode("cp1252", "replace")
            response(url, http_response(body, "text/html"))
        else:
            response(url, http_response(page(title, paras, rng).encode(), "text/html; charset=utf-8"))
        planted["article"] += 1
        if i % 7 == 0:  # a crawler's metadata record, as Common Crawl writes after responses
            out.append(
                _member(
                    warc_record(
                        "metadata", url, date(), b"fetchTimeMs: 120\r\n", rng, "application/warc-fields"
                    )
                )
            )

    site = SITES[0]
    response(
        f"https://{site}/logo.png", http_response(b"\x89PNG\r\n\x1a\n" + rng.randbytes(600), "image/png")
    )
    response(
        f"https://{site}/annual-report.pdf",
        http_response(b"%PDF-1.4\n" + rng.randbytes(900), "application/pdf"),
    )
    planted["not_html"] += 2
    response(
        f"https://{site}/missing",
        http_response(b"<html><body><h1>404 Not Found</h1></body></html>", "text/html", "404 Not Found"),
    )
    response(
        f"https://{site}/old",
        http_response(b"", "text/html", "301 Moved Permanently", f"Location: https://{site}/new\r\n"),
    )
    planted["http_status"] += 2
    nav = "".join(f'<li><a href="/{n.lower()}">{n}</a></li>' for n in NAV)
    app_shell = (
        f"<!DOCTYPE html><html><head><title>Tags</title><script src='/app.js'></script></head><body>"
        f"<header><nav class='main-nav'><ul>{nav}</ul></nav></header><main><div id='app'></div></main>"
        "<footer><a href='/about'>About us</a> &copy; 2024 The Gazette</footer></body></html>"
    )
    response(f"https://{site}/tags/", http_response(app_shell.encode(), "text/html; charset=utf-8"))
    planted["empty_extraction"] += 1
    response(f"https://{site}/blob.html", http_response(b"\x00\x01BIN" + rng.randbytes(400), "text/html"))
    planted["binary"] += 1  # lmpipe.decoding's reason for NUL bytes
    spam = page("Deals", ["BUY CHEAP WATCHES NOW!!! best price click here"] * 5, rng)
    response("https://videos.xhamster.com/watch/1", http_response(spam.encode(), "text/html; charset=utf-8"))
    planted["url_blocklist"] += 1
    response("https://win-big.example.com/casino-bonus/today", http_response(spam.encode(), "text/html"))
    planted["url_banned_word"] += 1

    good = http_response(
        page("Digest", ["A page whose bytes changed after archiving."] * 3, rng).encode(), "text/html"
    )
    rec = warc_record("response", f"https://{site}/corrupted", date(), good, rng)
    out.append(
        _member(rec.replace(b"after archiving", b"after archivinG"))
    )  # block no longer matches its digest
    bad_http = b"HTTP/1.1 OK-ish\r\nthis is not a header line\r\n\r\n<html><p>x</p></html>"
    out.append(_member(warc_record("response", f"https://{site}/bad-http", date(), bad_http, rng)))
    planted["malformed_record"] += 2
    last = warc_record("response", f"https://{site}/cut", date(), good, rng)
    out.append(_member(last)[: len(_member(last)) // 2])  # the crawl file ends inside this record
    planted["truncated"] += 1

    Path(path).write_bytes(b"".join(out))
    return {"records": sum(planted.values()), "planted": dict(sorted(planted.items()))}
