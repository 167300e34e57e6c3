"""URL rules run before extraction: a domain blocklist (subdomains included) and banned URL words.

Hosts are split into subdomain / registered domain / public suffix by ``tldextract`` using the Public Suffix
List snapshot bundled in its wheel (``suffix_list_urls=()``, no cache dir): it never touches the network.
A blocklist entry blocks that host and every host under it, but matching stops at the registered domain,
so an entry that is itself a public suffix (``co.uk``) cannot block a whole country by mistake.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from lmpipe.web.config import UrlFilterConfig

DEFAULT_BLOCKLIST = "domain_blocklist.txt"
DEFAULT_BANNED_WORDS = "url_banned_words.txt"
_TOKEN = re.compile(r"[^a-z0-9]+")


@functools.cache
def _extractor(private_suffixes: bool):
    import tldextract

    return tldextract.TLDExtract(
        cache_dir=None,
        suffix_list_urls=(),
        fallback_to_snapshot=True,
        include_psl_private_domains=private_suffixes,
    )


def read_list(path: str | Path | None, default: str) -> list[str]:
    """Entries of a list file (blank lines and ``#`` comments skipped); ``None`` reads the shipped default."""
    text = (
        (resources.files("lmpipe.web") / "data" / default).read_text()
        if path is None
        else Path(path).read_text()
    )
    return [s for line in text.splitlines() if (s := line.split("#", 1)[0].strip())]


def _host_of(entry: str) -> str:
    """A list entry as a bare lowercase host: URLs, ``*.`` wildcards, ports and trailing dots tolerated."""
    entry = entry.strip().lower()
    if "//" in entry:
        entry = urlsplit(entry).hostname or ""
    return entry.removeprefix("*.").lstrip(".").split("/", 1)[0].split(":", 1)[0].rstrip(".")


def tokens(text: str) -> list[str]:
    return [t for t in _TOKEN.split(text.lower()) if t]


class UrlFilter:
    """``check(url)`` → ``None`` (keep) or ``(reason, detail)`` with the matched domain or word."""

    def __init__(self, domains: Iterable[str], words: Iterable[str], private_suffixes: bool = False) -> None:
        self.domains = frozenset(h for d in domains if (h := _host_of(d)))
        self.phrases: dict[int, frozenset[tuple[str, ...]]] = {}
        by_len: dict[int, set[tuple[str, ...]]] = {}
        for w in words:
            if toks := tuple(tokens(w)):
                by_len.setdefault(len(toks), set()).add(toks)
        self.phrases = {n: frozenset(s) for n, s in sorted(by_len.items())}
        self.private_suffixes = private_suffixes

    @classmethod
    def from_config(cls, cfg: UrlFilterConfig) -> UrlFilter:
        domains = [d for f in cfg.blocklist_files or [None] for d in read_list(f, DEFAULT_BLOCKLIST)]
        words = [w for f in cfg.banned_words_files or [None] for w in read_list(f, DEFAULT_BANNED_WORDS)]
        return cls(domains, words, cfg.private_suffixes)

    def blocked_domain(self, host: str) -> str | None:
        """The blocklist entry covering ``host`` (itself or a parent down to its registered domain), if any."""
        host = host.lower().rstrip(".")
        if not self.domains or not host:
            return None
        registered = _extractor(self.private_suffixes)(host).top_domain_under_public_suffix or host
        labels = host.split(".")
        stop = len(registered.split("."))
        for i in range(0, max(len(labels) - stop, 0) + 1):
            candidate = ".".join(labels[i:])
            if candidate in self.domains:
                return candidate
        return None

    def banned_word(self, url: str) -> str | None:
        toks = tokens(url)
        for n, phrases in self.phrases.items():
            for i in range(len(toks) - n + 1):
                if (window := tuple(toks[i : i + n])) in phrases:
                    return " ".join(window)
        return None

    def check(self, url: str | None) -> tuple[str, str] | None:
        if not url:
            return None
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:  # e.g. an invalid IPv6 literal: no host to judge, the words still apply
            host = ""
        if (hit := self.blocked_domain(host)) is not None:
            return "url_blocklist", f"host {host} is under blocklisted domain {hit}"
        if (word := self.banned_word(url)) is not None:
            return "url_banned_word", f"banned word {word!r} in URL"
        return None


def url_lists_key(cfg: UrlFilterConfig) -> str:
    """A digest of the URL lists in force, so a changed list file reruns the units it applies to."""
    import hashlib

    if not cfg.enabled:
        return "urls:off"
    h = hashlib.sha256()
    for files, default in (
        (cfg.blocklist_files, DEFAULT_BLOCKLIST),
        (cfg.banned_words_files, DEFAULT_BANNED_WORDS),
    ):
        for f in files or [None]:
            h.update("\n".join(read_list(f, default)).encode() + b"\0")
    return "urls:" + h.hexdigest()[:16]
