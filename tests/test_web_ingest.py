"""Web ingestion: WARC / WET / HTML sources written by a second library (warcio), main-text extraction against
hand-written expected text, every quarantine reason, URL rules, charsets, S3, kill -9 resume."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from lmpipe.documents import iter_batches, iter_documents
from lmpipe.executors import LocalExecutor
from lmpipe.ingest import ingest
from lmpipe.ingest_config import IngestConfig
from tests.killresume import ingest_killed_and_straight

ARTICLE = [
    "The harbour committee met on Tuesday evening to discuss the restoration of the old lighthouse, which has "
    "stood at the end of the northern pier since the town was founded.",
    "Members agreed that the lamp room should be repaired first, because rain has been entering through the "
    "cracked panes for several winters and the iron frame is beginning to rust.",
    "A public meeting will be held next month so that residents can see the plans and suggest how the building "
    "might be used once the work is finished.",
]
BOILERPLATE = {
    "nav": "Weather forecast",
    "cookie banner": "We use cookies to personalise content",
    "ad": "Refinance your mortgage today",
    "sidebar": "Most popular stories this week",
    "newsletter": "Subscribe to our daily newsletter",
    "footer": "All rights reserved",
}


def article_page(
    title: str = "Lighthouse repairs approved", paragraphs: list[str] = ARTICLE, charset_meta: str = "utf-8"
) -> str:
    ps = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    return f"""<!DOCTYPE html><html><head><meta charset="{charset_meta}"><title>{title}</title>
<script>var tracking = true;</script></head><body>
<div id="cookie-consent" class="cookie-banner">{BOILERPLATE["cookie banner"]} and ads. <button>Accept</button></div>
<header><nav><ul><li><a href="/">Home</a></li><li><a href="/news">News</a></li><li><a href="/sport">Sport</a></li>
<li><a href="/weather">{BOILERPLATE["nav"]}</a></li></ul></nav></header>
<div class="advert banner-ad">Advertisement. {BOILERPLATE["ad"]}!</div>
<main><article><h1>{title}</h1>
{ps}
</article>
<aside class="sidebar"><h3>{BOILERPLATE["sidebar"]}</h3><ul><li><a href="/a">Storm closes road</a></li>
<li><a href="/b">School wins prize</a></li></ul></aside></main>
<div class="newsletter">{BOILERPLATE["newsletter"]}. <input type="email"><button>Sign up</button></div>
<footer><a href="/about">About</a> | <a href="/privacy">Privacy</a> | &copy; 2024 Harbour Times. {BOILERPLATE["footer"]}.</footer>
</body></html>"""


def write_warc(path: Path, records: list[dict], gz: bool = True) -> Path:
    """Each record: url, body (bytes), and optionally content_type, status, rec_type ('response'|'conversion')."""
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=gz)
        for i, r in enumerate(records):
            wh = {
                "WARC-Date": f"2024-03-{1 + i % 28:02d}T12:00:00Z",
                "WARC-Record-ID": f"<urn:uuid:00000000-0000-0000-0000-{i:012d}>",
            }
            if r.get("rec_type") == "conversion":
                rec = w.create_warc_record(
                    r["url"],
                    "conversion",
                    payload=io.BytesIO(r["body"]),
                    warc_content_type="text/plain",
                    warc_headers_dict=wh,
                )
            else:
                http = StatusAndHeaders(
                    r.get("status", "200 OK"),
                    [("Content-Type", r.get("content_type", "text/html; charset=utf-8"))],
                    protocol="HTTP/1.1",
                )
                rec = w.create_warc_record(
                    r["url"],
                    "response",
                    payload=io.BytesIO(r["body"]),
                    http_headers=http,
                    warc_headers_dict=wh,
                )
            w.write_record(rec)
    return path


def run_ingest(
    tmp: Path, uri: str, fmt: str = "auto", web: dict | None = None, **kw
) -> tuple[dict, dict, list]:
    cfg = IngestConfig(sources=[{"uri": uri, "domain": "web", "format": fmt}], web=web or {}, **kw)
    stats = ingest(cfg, tmp / "docs", tmp / "rej", LocalExecutor(1))
    docs = {d.meta.get("url", d.source): d for d in iter_documents(tmp / "docs")}
    rej = [r for b in iter_batches(tmp / "rej", ["reason", "detail", "meta", "raw"]) for r in b.to_pylist()]
    assert stats["in"] == stats["kept"] + stats["rejected"] == len(docs) + len(rej)
    return stats, docs, rej


# ------------------------------------------------------------------------------------------ extraction
@pytest.mark.parametrize(
    "extractor, removed",
    [
        ("trafilatura", list(BOILERPLATE)),
        (
            "resiliparse",
            ["nav", "cookie banner", "sidebar", "footer"],
        ),  # measured: it keeps ad and newsletter boxes
    ],
)
def test_main_text_extracted_and_boilerplate_removed(tmp_path, extractor, removed):
    write_warc(
        tmp_path / "a.warc.gz",
        [{"url": "https://harbour-times.co.uk/2024/lighthouse", "body": article_page().encode()}],
    )
    stats, docs, _ = run_ingest(tmp_path, str(tmp_path / "a.warc.gz"), web={"extractor": extractor})
    text = docs["https://harbour-times.co.uk/2024/lighthouse"].text
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for p in ARTICLE:  # every paragraph whole, on its own line
        assert p in lines, (p, text)
    for part in removed:
        assert BOILERPLATE[part] not in text, (part, text)
    assert stats["kept"] == 1


def test_metadata_charsets_and_wet(tmp_path):
    german = [
        "Der Hafenausschuss hat am Dienstag über die Sanierung des alten Leuchtturms beraten, der seit der "
        "Gründung der Stadt am Ende der nördlichen Mole steht.",
        "Die Mitglieder waren sich einig, dass zuerst der Laternenraum repariert werden muss, weil seit "
        "mehreren Wintern Regen durch die gesprungenen Scheiben dringt.",
    ]
    page = article_page("Leuchtturm: Käse und Grüße", german, charset_meta="windows-1252")
    write_warc(
        tmp_path / "c.warc",
        gz=False,
        records=[
            {
                "url": "https://a.de/http",
                "body": page.encode("cp1252"),
                "content_type": "text/html; charset=windows-1252",
            },
            {"url": "https://a.de/meta", "body": page.encode("cp1252"), "content_type": "text/html"},
            {
                "url": "https://a.de/utf8",
                "body": page.replace("windows-1252", "utf-8").encode(),
                "content_type": "text/html",
            },
        ],
    )
    _, docs, rej = run_ingest(tmp_path, str(tmp_path / "c.warc"))
    assert not rej
    for url, charset in (
        ("https://a.de/http", "cp1252"),
        ("https://a.de/meta", "cp1252"),
        ("https://a.de/utf8", "utf-8"),
    ):
        d = docs[url]
        assert german[0] in d.text and "Grüße" in d.text, d.text
        assert (
            d.meta["charset"] == charset
            and d.meta["http_status"] == 200
            and d.meta["content_type"] == "text/html"
        )
        assert d.meta["date"].startswith("2024-03-") and d.meta["warc_record_id"].startswith("<urn:uuid:")
    # WET: conversion records are text already; the URL filter still applies
    text = "Plain extracted text of a page.\nSecond line of it."
    write_warc(
        tmp_path / "w.warc.wet.gz",
        [
            {"url": "https://b.org/1", "body": text.encode(), "rec_type": "conversion"},
            {"url": "https://casino.b.org/2", "body": b"x y", "rec_type": "conversion"},
        ],
    )
    stats, docs, rej = run_ingest(tmp_path / "wet", str(tmp_path / "w.warc.wet.gz"))
    assert docs["https://b.org/1"].text == text and stats["by_reason"] == {"url_banned_word": 1}


# ------------------------------------------------------------------------------------------ quarantine
def test_every_bad_record_kind_is_quarantined_with_its_reason(tmp_path):
    good = article_page().encode()
    shell = b"<html><head><script src='/app.js'></script></head><body><nav><a href='/'>Home</a></nav><div id='app'></div></body></html>"
    records = [
        {"url": "https://ok.com/1", "body": good},
        {
            "url": "https://ok.com/logo.png",
            "body": b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
            "content_type": "image/png",
        },
        {
            "url": "https://ok.com/gone",
            "body": b"<html><body>Not here</body></html>",
            "status": "404 Not Found",
        },
        {"url": "https://ok.com/bin", "body": b"\x00\x01\x02 binary" * 20, "content_type": "text/html"},
        {"url": "https://ok.com/app", "body": shell},
        {"url": "https://ok.com/huge", "body": good + b"<!--" + b"x" * 20_000 + b"-->"},
        {"url": "https://ok.com/short", "body": article_page("Hi", ["Hi there."]).encode()},
        {"url": "https://www.spam.net/x", "body": good},
        {"url": "https://ok.com/casino-night", "body": good},
        {"url": "https://ok.com/2", "body": good},
    ]
    path = write_warc(tmp_path / "bad.warc", records, gz=False)
    data = path.read_bytes()
    # corrupt one byte of record 10's payload (its block digest no longer matches), then add garbage and a cut record
    i = data.rindex(b"Members agreed")
    data = data[:i] + b"m" + data[i + 1 :]
    write_warc(
        tmp_path / "tail.warc",
        [{"url": "https://ok.com/3", "body": good}, {"url": "https://ok.com/4", "body": good}],
        gz=False,
    )
    tail = (tmp_path / "tail.warc").read_bytes()
    cut = tail.index(b"WARC/1.", 10)
    (tmp_path / "bad.warc").write_bytes(
        data + b"NOT A WARC RECORD\r\n\r\n" + tail[:cut] + tail[cut : cut + 700]
    )
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "domains.txt").write_text("spam.net\n")
    (lists / "words.txt").write_text("casino\n")
    web = {
        "max_html_bytes": 15_000,
        "url_filter": {
            "blocklist_files": [str(lists / "domains.txt")],
            "banned_words_files": [str(lists / "words.txt")],
        },
    }
    stats, docs, rej = run_ingest(tmp_path, str(tmp_path / "bad.warc"), web=web, min_chars=100)
    assert sorted(docs) == ["https://ok.com/1", "https://ok.com/3"]
    by_url = {json.loads(r["meta"]).get("url", "?"): (r["reason"], r["detail"]) for r in rej}
    assert {u: r for u, (r, _) in by_url.items()} == {
        "https://ok.com/logo.png": "not_html",
        "https://ok.com/gone": "http_status",
        "https://ok.com/bin": "binary",
        "https://ok.com/app": "empty_extraction",
        "https://ok.com/huge": "oversize",
        "https://ok.com/short": "empty",
        "https://www.spam.net/x": "url_blocklist",
        "https://ok.com/casino-night": "url_banned_word",
        "https://ok.com/2": "malformed_record",  # digest mismatch
        "?": "malformed_record",  # the garbage between records: reading resumed at the next record
        "https://ok.com/4": "truncated",
    }
    assert stats["in"] == 13 and stats["kept"] == 2 and stats["rejected"] == 11
    assert (
        "spam.net" in by_url["https://www.spam.net/x"][1]
        and "'casino'" in by_url["https://ok.com/casino-night"][1]
    )
    assert "Block-Digest" in by_url["https://ok.com/2"][1] and by_url["https://ok.com/gone"][1] == "HTTP 404"
    raw = {json.loads(r["meta"]).get("url"): r["raw"] for r in rej}
    assert raw["https://ok.com/bin"].startswith(b"\x00\x01\x02")  # undecodable bytes are kept for inspection
    assert raw["https://www.spam.net/x"] is None  # keep_html off: no page bytes for policy drops


def test_gzip_member_corruption_costs_one_record(tmp_path):
    recs = [{"url": f"https://ok.com/{i}", "body": article_page(f"Story {i}").encode()} for i in range(6)]
    path = write_warc(tmp_path / "g.warc.gz", recs)
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\x1f\x8b\x08"]
    assert len(starts) == 6
    mid = (starts[2] + starts[3]) // 2
    data[mid : mid + 40] = b"\xff" * 40  # deflate data of the third record's member is now invalid
    path.write_bytes(bytes(data))
    stats, docs, rej = run_ingest(tmp_path, str(path))
    assert sorted(docs) == [f"https://ok.com/{i}" for i in (0, 1, 3, 4, 5)]
    assert stats["by_reason"] == {"malformed_record": 1}


def test_html_files(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(article_page())
    (site / "latin.htm").write_bytes(
        article_page(
            "Café", ["Un café crème, s'il vous plaît, près du marché."], charset_meta="iso-8859-1"
        ).encode("latin-1")
    )
    (site / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    stats, docs, rej = run_ingest(tmp_path, str(site), fmt="html")
    assert ARTICLE[1] in docs[str(site / "index.html")].text
    assert "Un café crème" in docs[str(site / "latin.htm")].text
    assert [r["reason"] for r in rej] == ["not_html"] and stats["kept"] == 2


# ------------------------------------------------------------------------------------------ URL rules
def test_url_rules_drop_exactly_the_listed_domains_and_words(tmp_path):
    from lmpipe.web.urls import UrlFilter

    f = UrlFilter(
        ["bad.com", "Sub.Good.org", "https://evil.co.uk/path", "co.uk", "*.wild.net"],
        ["casino", "payday loans"],
    )
    blocked = {
        "http://bad.com/": "bad.com",
        "https://www.bad.com/a": "bad.com",
        "http://a.b.c.bad.com:8080/": "bad.com",
        "http://BAD.COM./x": "bad.com",
        "https://sub.good.org/": "sub.good.org",
        "https://x.sub.good.org/": "sub.good.org",
        "https://evil.co.uk/": "evil.co.uk",
        "http://m.evil.co.uk/": "evil.co.uk",
        "http://wild.net/": "wild.net",
    }
    for url, entry in blocked.items():
        reason, detail = f.check(url)
        assert reason == "url_blocklist" and detail.endswith(f"domain {entry}"), url
    kept = [
        "http://notbad.com/",
        "http://bad.com.evil.org/",
        "https://good.org/",
        "https://other.good.org/",
        "https://bbc.co.uk/",
        "https://news.bbc.co.uk/",
        "http://192.168.0.1/",
        "http://occasionally.org/payday",
        "http://x.org/payday/and/loans",
        "http://x.org/",
        None,
        "",
    ]
    for url in kept:
        assert f.check(url) is None, url
    for url, word in {
        "http://x.org/casino-night": "casino",
        "http://casino.x.org/": "casino",
        "http://x.org/get-PAYDAY_loans?now": "payday loans",
    }.items():
        assert f.check(url) == ("url_banned_word", f"banned word {word!r} in URL"), url
    # PSL private suffixes: by default blogspot.com is the registered domain, so listing it blocks every blog
    assert UrlFilter(["blogspot.com"], []).check("https://me.blogspot.com/") is not None
    assert UrlFilter(["blogspot.com"], [], private_suffixes=True).check("https://me.blogspot.com/") is None
    assert (
        UrlFilter(["me.blogspot.com"], [], private_suffixes=True).check("https://a.me.blogspot.com/")
        is not None
    )


def test_public_suffix_list_is_read_offline(monkeypatch):
    import socket

    from lmpipe.web import urls

    def no_network(*a, **k):
        raise AssertionError("tldextract tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    urls._extractor.cache_clear()
    assert urls._extractor(False).suffix_list_urls == ()
    # a suffix that is only in the PSL (not a naive last-label split) proves the bundled list was loaded
    assert urls.UrlFilter(["example.net.au"], []).check("https://shop.example.net.au/") is not None
    assert urls.UrlFilter(["net.au"], []).check("https://shop.example.net.au/") is None


def test_default_lists_ship_with_the_package():
    from lmpipe.web.config import UrlFilterConfig
    from lmpipe.web.urls import UrlFilter

    f = UrlFilter.from_config(UrlFilterConfig())
    assert f.domains and f.phrases
    assert (
        f.check("https://www.pornhub.com/") is not None
        and f.check("https://en.wikipedia.org/wiki/Lighthouse") is None
    )


# ------------------------------------------------------------------------------------------ S3 and resume
@pytest.mark.e2e
def test_warc_from_s3_matches_local(tmp_path, s3_server):
    import boto3

    recs = [{"url": f"https://ok.com/{i}", "body": article_page(f"Story {i}").encode()} for i in range(4)]
    recs.append({"url": "https://ok.com/p.png", "body": b"\x89PNG", "content_type": "image/png"})
    path = write_warc(tmp_path / "s.warc.gz", recs)
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="crawl")
    s3.upload_file(str(path), "crawl", "cc/s.warc.gz")
    cfg = IngestConfig(
        sources=[{"uri": "s3://crawl/cc/*.warc.gz", "domain": "web", "endpoint_url": s3_server}]
    )
    stats = ingest(cfg, tmp_path / "s3" / "docs", tmp_path / "s3" / "rej", LocalExecutor(1))
    _, local, _ = run_ingest(tmp_path / "local", str(path))
    remote = {d.meta["url"]: d for d in iter_documents(tmp_path / "s3" / "docs")}
    assert stats["kept"] == 4 and stats["by_reason"] == {"not_html": 1}
    assert {u: d.text for u, d in remote.items()} == {u: d.text for u, d in local.items()}


@pytest.mark.e2e
def test_kill_9_then_resume_gives_identical_output(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(12):  # 12 one-file units of 30 pages each (a few hundred ms of extraction per unit)
        recs = [
            {
                "url": f"https://site{k}.com/{i}",
                "body": article_page(
                    f"Story {k} {i}", [f"{p} This copy is number {i} of file {k}." for p in ARTICLE]
                ).encode()
                + b"<!--"
                + b"." * 15000
                + b"-->",
            }
            for i in range(30)
        ]
        write_warc(raw / f"f{k:02d}.warc", recs, gz=False)
    params = {
        "run": {"executor": {"kind": "local", "workers": 1}},
        "ingest": {"sources": [{"uri": str(raw / "*.warc"), "domain": "web"}], "group_mib": 1},
    }
    done_before, manifest = ingest_killed_and_straight(tmp_path, params, timeout=180)
    assert 3 <= done_before < 12, "the kill must land mid-run"
    assert manifest["docs"] == 12 * 30


def test_gzip_helper_is_not_needed_for_plain_files(tmp_path):
    """fastwarc tells gzip from plain by the bytes, not the name: a gzipped WARC named .warc reads the same."""
    recs = [{"url": "https://ok.com/1", "body": article_page().encode()}]
    write_warc(tmp_path / "x.warc", recs, gz=False)
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "x.warc").write_bytes(gzip.compress((tmp_path / "x.warc").read_bytes()))
    _, plain, _ = run_ingest(tmp_path / "p", str(tmp_path / "x.warc"))
    _, zipped, _ = run_ingest(tmp_path / "z", str(tmp_path / "y" / "x.warc"))
    assert plain["https://ok.com/1"].text == zipped["https://ok.com/1"].text
