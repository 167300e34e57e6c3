"""Which documents the pre-filter held-out sample takes: a keyed hash of each id, per domain, decided where the
document is first read (``ingest``), so the decision depends on neither order, shard layout nor executor.

A document is held out when ``id_hash(seed, id) < fraction(domain)``. The salt differs from tokenize's
train/val split (:mod:`lmpipe.docsplit`), so the two samples are independent.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from lmpipe.docsplit import id_hash
from lmpipe.documents import Document, Rejected
from lmpipe.holdout.config import HoldoutConfig
from lmpipe.sharded import Held

SALT = b"lmpipe/holdout"


def is_held(doc_id: str, domain: str, cfg: HoldoutConfig) -> bool:
    fraction = cfg.fraction_for(domain)
    # the seed is part of the hashed text, not of the (16-byte) salt, so no two seeds can collide
    return fraction > 0 and id_hash(f"{cfg.seed}\0{doc_id}", SALT) < fraction


def divert(
    items: Generator[Document | Rejected, None, Any], cfg: HoldoutConfig
) -> Generator[Document | Rejected | Held, None, Any]:
    """``items`` with every held-out document wrapped in :class:`Held`; returns what ``items`` returns."""
    while True:
        try:
            item = next(items)
        except StopIteration as stop:
            return stop.value
        yield Held(item) if isinstance(item, Document) and is_held(item.id, item.domain, cfg) else item
