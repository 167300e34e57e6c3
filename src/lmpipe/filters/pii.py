"""Personally identifiable information: e-mail addresses, phone numbers, IP addresses; count and scrub.

IP addresses that are not globally routable (127.0.0.1, 10.x, 192.168.x, documentation ranges) identify
nobody and are common in code and docs, so they are left alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# Needs separators or a +country code, so plain long numbers (math, ids) are not phone numbers.
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?![\w-])"
)
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")

KINDS = ("email", "phone", "ip")


def _global_ip(s: str) -> bool:
    try:
        return ipaddress.ip_address(s).is_global
    except ValueError:
        return False


def find(text: str) -> Counter[str]:
    """How many of each kind occur."""
    c: Counter[str] = Counter()
    c["email"] = len(EMAIL.findall(text))
    c["phone"] = len(PHONE.findall(text))
    c["ip"] = sum(1 for m in IPV4.findall(text) if _global_ip(m))
    return c


def scrub(text: str, replacements: dict[str, str]) -> tuple[str, Counter[str]]:
    """Replace each occurrence with ``replacements[kind]``; returns the new text and the counts."""
    counts: Counter[str] = Counter()

    def sub(kind: str, pattern: re.Pattern[str], text: str, keep=lambda s: True) -> str:  # noqa: ANN001
        def repl(m: re.Match[str]) -> str:
            if not keep(m.group()):
                return m.group()
            counts[kind] += 1
            return replacements[kind]

        return pattern.sub(repl, text)

    text = sub("email", EMAIL, text)
    text = sub("ip", IPV4, text, _global_ip)
    text = sub("phone", PHONE, text)
    return text, counts
