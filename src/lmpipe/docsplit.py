"""Which documents are held out: a keyed hash of each id, independent of order, shard layout and executor.

The tokenize stage packs the train split and writes the held-out (``val``) split both as tokens and as an
ordinary document dataset for per-domain evaluation; the tokenizer is trained on the train split only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmpipe.documents import iter_batches

SPLITS = ("train", "val")
_SPLIT_SALT = b"lmpipe/split"


def id_hash(doc_id: str, salt: bytes) -> float:
    """A uniform number in [0, 1) from a document id; ``salt`` keeps independent uses uncorrelated."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8, person=salt.ljust(16, b"\0")[:16]).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass
class SplitPlan:
    """Which documents are held out: ``hash(id) < val_fraction``, adjusted so that every domain with at
    least two documents has at least one in each split (the lowest-hash doc is moved to val, or the
    highest-hash doc back to train)."""

    val_fraction: float
    force_val: set[str] = field(default_factory=set)
    force_train: set[str] = field(default_factory=set)
    docs: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> domain -> docs

    def split_of(self, doc_id: str) -> str:
        if doc_id in self.force_val:
            return "val"
        if doc_id in self.force_train:
            return "train"
        return "val" if id_hash(doc_id, _SPLIT_SALT) < self.val_fraction else "train"

    def key(self) -> str:
        return json.dumps([self.val_fraction, sorted(self.force_val), sorted(self.force_train)])


def split_plan(docs_dir: str | Path, val_fraction: float) -> SplitPlan:
    """One streaming pass over ids and domains (memory: a few numbers per domain)."""
    stats: dict[str, dict[str, Any]] = {}
    for batch in iter_batches(docs_dir, ["id", "domain"], batch_size=10_000):
        for doc_id, domain in zip(batch.column("id").to_pylist(), batch.column("domain").to_pylist(), strict=True):
            h = id_hash(doc_id, _SPLIT_SALT)
            s = stats.setdefault(domain, {"n": 0, "val": 0, "lo": (2.0, ""), "hi": (-1.0, "")})
            s["n"] += 1
            s["val"] += h < val_fraction
            s["lo"] = min(s["lo"], (h, doc_id))
            s["hi"] = max(s["hi"], (h, doc_id))
    plan = SplitPlan(val_fraction)
    for domain, s in sorted(stats.items()):
        n_val = s["val"]
        if val_fraction > 0 and s["n"] >= 2 and n_val == 0:
            plan.force_val.add(s["lo"][1])
            n_val = 1
        elif s["n"] >= 2 and n_val == s["n"]:
            plan.force_train.add(s["hi"][1])
            n_val -= 1
        plan.docs.setdefault("train", {})[domain] = s["n"] - n_val
        plan.docs.setdefault("val", {})[domain] = n_val
    return plan

