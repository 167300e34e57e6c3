"""Realistic noise for the filters, each kind labelled in ``meta['noise']`` so filter decisions can be scored.

Kinds: exact and near duplicates, boilerplate/navigation pages, spam, toxic lines (terms drawn from the
filter's default word list, the shipped LDNOOBW English list), mojibake (UTF-8 read as Latin-1), very short and
very long documents; plus undecodable records (a line too short to tell its encoding, binary blobs, malformed
JSON) that ingestion must quarantine. Separately, a labelled set for training the toxicity classifier
(``toxicity_training_set``).
"""

from __future__ import annotations

import json
import random

# The vocabulary of the demo's labelled classifier training set, and nothing else: mild insults, none of them
# on the filter's word list, so the classifier learns something the word list does not already measure.
INSULTS = ["idiot", "moron", "stupid", "loser", "dumb", "pathetic", "worthless", "scum", "jerk", "imbecile"]

NAV = ["Home", "About us", "Contact", "Privacy Policy", "Terms of Use", "Login", "Sign up", "Cart", "FAQ", "Sitemap"]


def near_duplicate(text: str, rng: random.Random) -> str:
    """A mirrored copy as crawls see them: the same body with its last word changed and a footer added."""
    words = text.rstrip().split(" ")
    words[-1] = rng.choice(["(mirror)", "[cached]", "(archived)"])
    footer = rng.choice(["Last updated on March 3.", "Retrieved from the archive.", "Page 1 of 1."])
    return " ".join(words) + "\n" + footer


def boilerplate(rng: random.Random) -> str:
    lines = [" | ".join(rng.sample(NAV, 5)) for _ in range(rng.randint(6, 12))]
    lines += ["Click here to subscribe to our newsletter!", "© 2024 All rights reserved.", "Accept cookies"] * 2
    return "\n".join(lines)


def spam(rng: random.Random) -> str:
    offer = rng.choice(["cheap watches", "free crypto", "miracle pills", "casino bonus"])
    line = f"BUY {offer.upper()} NOW!!! best price {offer} click here {offer}"
    return "\n".join([line] * rng.randint(8, 20))


def listed_terms() -> list[str]:
    """The single-word terms of the toxicity filter's default list (shipped LDNOOBW English), sorted."""
    from lmpipe.filters.toxicity import WordList

    return sorted(p[0] for p in WordList.load().phrases if len(p) == 1)


def toxic(rng: random.Random, base: str, terms: list[str]) -> str:
    """A passage followed by a line of listed ``terms`` (see ``listed_terms``)."""
    line = " ".join(rng.choice(terms) for _ in range(rng.randint(4, 9)))
    return f"{base}\n\nYou are a {line}, you {rng.choice(terms)}!"


def insult(rng: random.Random) -> str:
    w = lambda: rng.choice(INSULTS)  # noqa: E731
    return rng.choice([
        f"You are a {w()}, a complete {w()}.",
        f"Shut up, you {w()}!",
        f"Only a {w()} would write this, you {w()}.",
        f"What a {w()} {w()} you are.",
    ])


KIND_WORDS = ["friend", "colleague", "reader", "helper", "expert", "neighbour", "guest", "student"]


def kind_remark(rng: random.Random) -> str:
    """Second-person but harmless, so the classifier learns the insults rather than the word 'you'."""
    w = lambda: rng.choice(KIND_WORDS)  # noqa: E731
    return rng.choice([
        f"You are a {w()}, a true {w()}.",
        f"Thank you, you {w()}!",
        f"Only a {w()} would write this so clearly, you {w()}.",
        f"What a good {w()} you are.",
    ])


def toxicity_training_set(rng: random.Random, clean: list[str], n: int) -> list[dict]:
    """Labelled rows for the filter's toxicity classifier. Negatives: clean passages, alone or followed by a
    harmless second-person remark; positives: passages followed by an insult in the same frames, or the
    insult alone. Only the insult words separate the classes, so topic and 'you' carry no signal."""
    rows = []
    for _ in range(n // 3):
        a, b, c, d = (rng.choice(clean)[: rng.randint(80, 400)] for _ in range(4))
        rows += [
            {"text": a, "label": 0},
            {"text": f"{b}\n{kind_remark(rng)}", "label": 0},
            {"text": kind_remark(rng), "label": 0},
            {"text": f"{c}\n{insult(rng)}", "label": 1},
            {"text": f"{d}\n{insult(rng)}", "label": 1},
            {"text": insult(rng), "label": 1},
        ]
    return rows


def mojibake(text: str) -> str:
    return text.replace("'", "\u2019").replace(" - ", " \u2014 ").encode("utf-8").decode("latin-1")


def short(rng: random.Random) -> str:
    return rng.choice(["ok", "Read more", "thanks!", "404 Not Found", "Loading..."])


def very_long(rng: random.Random, base: str, target: int) -> str:
    out = []
    while sum(map(len, out)) < target:
        out.append(base)
    return "\n\n".join(out)


def broken_jsonl_lines(rng: random.Random) -> list[bytes]:
    """Lines that must be quarantined with a reason: malformed JSON, undecodable bytes, missing text field."""
    return [
        b'{"text": "an unterminated string}',
        b'["a", "list", "not", "an", "object"]',
        json.dumps({"body": "the text lives under the wrong key"}).encode(),
        json.dumps({"text": 42}).encode(),
        b'{"text": "caf\xe9 au lait, written in Latin-1"}',
        json.dumps({"text": "   "}).encode(),
    ]


def binary_blob(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(4096)) + b"\x00" * 64
